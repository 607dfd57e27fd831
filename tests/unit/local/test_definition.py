"""Parsing and validating pipeline definitions (``sagemaker_pipelines_provider.definition``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sagemaker_pipelines_provider.definition import (
    Branch,
    DefinitionError,
    Edge,
    ParameterError,
    coerce_parameters,
    execution_parameters,
    format_value,
    parse_definition,
    resolve_parameters,
    split_reference,
    thaw,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "sdk_pipeline_definition.json"


def sdk_definition() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def simple(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"Version": "2020-12-01", "Parameters": parameters or [], "Steps": steps}


def step(name: str, type_: str = "Processing", **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Type": type_, "Arguments": extra.pop("Arguments", {}), **extra}


# -- the SDK-shaped fixture ------------------------------------------------------------------------


def test_sdk_fixture_parses_into_graph() -> None:
    definition = parse_definition(FIXTURE.read_text())
    assert [p.name for p in definition.parameters][:3] == [
        "ProcessingInstanceType",
        "ProcessingInstanceCount",
        "TrainingInstanceType",
    ]
    threshold = definition.parameter("MseThreshold")
    assert threshold is not None and threshold.type == "Float" and threshold.default == 6.0
    assert definition.order == (
        "AbaloneProcess",
        "AbaloneTrain",
        "AbaloneEval",
        "AbaloneMSECond",
        "AbaloneRegisterModel-RegisterModel",
        "AbaloneApproval",
        "AbaloneMSEFail",
    )
    assert definition.top_level == ("AbaloneProcess", "AbaloneTrain", "AbaloneEval", "AbaloneMSECond")
    assert definition.branch_of("AbaloneMSEFail") == Branch("AbaloneMSECond", False)
    assert definition.branch_of("AbaloneApproval") == Branch("AbaloneMSECond", True)
    condition = definition.steps["AbaloneMSECond"]
    assert condition.if_steps == ("AbaloneRegisterModel-RegisterModel", "AbaloneApproval")
    assert condition.else_steps == ("AbaloneMSEFail",)
    # the condition's own references do not include the references of its nested branch steps
    assert condition.references == ("AbaloneEval",)
    evaluation = definition.steps["AbaloneEval"]
    assert evaluation.property_files[0].name == "EvaluationReport"
    assert evaluation.property_files[0].output_name == "evaluation"
    callback = definition.steps["AbaloneApproval"]
    assert callback.sqs_queue_url and callback.sqs_queue_url.endswith("/sdk-pipeline-callbacks")
    assert [(o.name, o.type) for o in callback.output_parameters] == [
        ("approved", "Boolean"),
        ("reviewer", "String"),
    ]
    assert callback.display_name == "Manual approval"
    assert definition.experiment_config is not None


def test_edges_cover_depends_on_get_and_branch_membership() -> None:
    definition = parse_definition(sdk_definition())
    edges = set(definition.edges)
    assert Edge("AbaloneProcess", "AbaloneTrain", "Get") in edges
    assert Edge("AbaloneTrain", "AbaloneEval", "Get") in edges
    assert Edge("AbaloneProcess", "AbaloneEval", "Get") in edges
    assert Edge("AbaloneEval", "AbaloneMSECond", "Get") in edges  # inside Std:JsonGet in a condition
    assert Edge("AbaloneMSECond", "AbaloneMSEFail", "Branch") in edges
    assert Edge("AbaloneRegisterModel-RegisterModel", "AbaloneApproval", "DependsOn") in edges
    assert Edge("AbaloneRegisterModel-RegisterModel", "AbaloneApproval", "Get") in edges
    assert Edge("AbaloneTrain", "AbaloneRegisterModel-RegisterModel", "Get") in edges
    assert definition.steps["AbaloneApproval"].upstream == {
        "AbaloneMSECond",
        "AbaloneRegisterModel-RegisterModel",
        "AbaloneEval",
    }
    assert definition.downstream("AbaloneProcess") == {"AbaloneTrain", "AbaloneEval"}


def test_references_inside_join_are_edges() -> None:
    definition = parse_definition(
        simple(
            [
                step("A"),
                step("B"),
                step(
                    "C",
                    Arguments={
                        "X": {"Std:Join": {"On": "/", "Values": [{"Get": "Steps.B.ProcessingJobName"}, "x"]}}
                    },
                    DependsOn=["A"],
                ),
            ]
        )
    )
    assert definition.steps["C"].upstream == {"A", "B"}
    assert {(e.upstream, e.kind) for e in definition.edges if e.downstream == "C"} == {
        ("A", "DependsOn"),
        ("B", "Get"),
    }


def test_nested_conditions_record_their_branch_chain() -> None:
    inner = step(
        "Inner",
        "Condition",
        Arguments={
            "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 1}],
            "IfSteps": [step("Deep")],
            "ElseSteps": [],
        },
    )
    outer = step(
        "Outer",
        "Condition",
        Arguments={
            "Conditions": [
                {"Type": "Not", "Expression": {"Type": "Equals", "LeftValue": 1, "RightValue": 2}}
            ],
            "IfSteps": [inner],
            "ElseSteps": [step("Other")],
        },
    )
    definition = parse_definition(simple([outer]))
    assert definition.branch_chain("Deep") == (Branch("Inner", True), Branch("Outer", True))
    assert definition.order == ("Outer", "Inner", "Deep", "Other")


def test_graph_is_read_only_and_thaws_to_plain_json() -> None:
    definition = parse_definition(sdk_definition())
    arguments = definition.steps["AbaloneTrain"].arguments
    with pytest.raises(TypeError):
        arguments["RoleArn"] = "changed"  # type: ignore[index]
    plain = thaw(arguments)
    plain["RoleArn"] = "changed"
    assert definition.steps["AbaloneTrain"].arguments["RoleArn"].endswith("SageMakerPipelineRole")
    assert json.loads(definition.to_json()) == sdk_definition()


def test_split_reference() -> None:
    assert split_reference("Steps.Train.ModelArtifacts.S3ModelArtifacts") == (
        "Steps",
        "Train",
        ".ModelArtifacts.S3ModelArtifacts",
    )
    assert split_reference("Steps.Cb.OutputParameters['x']") == ("Steps", "Cb", ".OutputParameters['x']")
    assert split_reference("Parameters.Threshold") == ("Parameters", "Threshold", "")
    with pytest.raises(ValueError, match="root one of"):
        split_reference("Nope.X")


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (simple([step("A"), step("A")]), "step name 'A' is used more than once"),
        (
            simple(
                [
                    step("A"),
                    step(
                        "C",
                        "Condition",
                        Arguments={"Conditions": [], "IfSteps": [step("A")], "ElseSteps": []},
                    ),
                ]
            ),
            "step name 'A' is used more than once",
        ),
        (simple([step("A", DependsOn=["Missing"])]), "DependsOn unknown step 'Missing'; steps: A"),
        (
            simple([step("A", Arguments={"X": {"Get": "Steps.Ghost.ProcessingJobName"}})]),
            "references unknown step 'Ghost'",
        ),
        (
            simple([step("A", DependsOn=["B"]), step("B", DependsOn=["C"]), step("C", DependsOn=["A"])]),
            "dependency cycle: A -> C -> B -> A",
        ),
        (simple([step("A", DependsOn=["A"])]), "step 'A' depends on itself"),
        (simple([step("A", "Sprocket")]), "Type 'Sprocket'; valid types: Processing, Training"),
        (simple([step("A")], [{"Name": "bad name", "Type": "String"}]), "Name 'bad name' is invalid"),
        (simple([step("A")], [{"Name": "P", "Type": "Text"}]), "Type 'Text'; valid types: String, Integer"),
        (
            simple([step("A")], [{"Name": "P", "Type": "Integer", "DefaultValue": "3"}]),
            "parameter 'P' is Integer but its DefaultValue '3' is not a JSON integer",
        ),
        (
            simple([step("A")], [{"Name": "P", "Type": "Boolean", "DefaultValue": 1}]),
            "is Boolean but its DefaultValue 1 is not true or false",
        ),
        (
            simple([step("A")], [{"Name": "P", "Type": "String"}, {"Name": "P", "Type": "String"}]),
            "parameter 'P' is declared more than once",
        ),
        (
            simple(
                [step("A", Arguments={"X": {"Get": "Parameters.Nope"}})], [{"Name": "P", "Type": "String"}]
            ),
            "references unknown parameter 'Nope'; parameters: P",
        ),
        (
            simple([step("A", Arguments={"X": {"Get": "Execution.Whatever"}})]),
            "unknown execution variable 'Whatever'",
        ),
        (
            simple(
                [
                    step("A"),
                    step(
                        "B",
                        Arguments={
                            "X": {
                                "Std:JsonGet": {
                                    "PropertyFile": {"Get": "Steps.A.PropertyFiles.R"},
                                    "Path": "a",
                                }
                            }
                        },
                    ),
                ]
            ),
            "property file 'R' of step 'A', which declares PropertyFiles: (none)",
        ),
        (
            simple([step("C", "Condition", Arguments={"Conditions": [{"Type": "Maybe"}]})]),
            "condition Type 'Maybe'; valid types: Equals",
        ),
        (simple([step("C", "Callback")]), "Callback step 'C' needs an SqsQueueUrl"),
        ("{not json", "not valid JSON"),
        ({"Version": "2020-12-01"}, "Steps must be a list"),
    ],
)
def test_invalid_definitions_name_the_problem(document: Any, expected: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        parse_definition(document if isinstance(document, str) else json.dumps(document))
    assert expected in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_reference_to_step_in_a_branch_from_outside_is_allowed() -> None:
    document = sdk_definition()
    document["Steps"].append(step("After", DependsOn=["AbaloneMSEFail"]))
    definition = parse_definition(document)
    assert definition.order[-1] == "After"


def test_experiment_config_references_are_checked() -> None:
    document = sdk_definition()
    document["PipelineExperimentConfig"]["TrialName"] = {"Get": "Execution.Nope"}
    with pytest.raises(
        DefinitionError, match="PipelineExperimentConfig references unknown execution variable"
    ):
        parse_definition(document)


# -- parameters ------------------------------------------------------------------------------------


def test_coerce_parameters_formats_overrides_only() -> None:
    definition = parse_definition(sdk_definition())
    result = coerce_parameters(
        definition, {"MseThreshold": 4, "UseSpot": True, "MaxDepth": "7", "ProcessingInstanceCount": 2}
    )
    assert result == [
        {"Name": "ProcessingInstanceCount", "Value": "2"},
        {"Name": "MaxDepth", "Value": "7"},
        {"Name": "MseThreshold", "Value": "4.0"},
        {"Name": "UseSpot", "Value": "true"},
    ]
    # also accepts the raw JSON definition
    assert coerce_parameters(sdk_definition(), {}) == []


def test_coerce_parameters_reports_every_problem_with_valid_choices() -> None:
    document = sdk_definition()
    document["Parameters"].append({"Name": "Region", "Type": "String"})
    with pytest.raises(ParameterError) as raised:
        coerce_parameters(
            document,
            {
                "Nope": "1",
                "MaxDepth": "deep",
                "MseThreshold": "high",
                "UseSpot": "maybe",
                "ProcessingInstanceCount": True,
            },
        )
    error = raised.value
    assert "unknown parameter 'Nope'" in error.problems
    assert any("'MaxDepth' is Integer: expected an integer, got 'deep'" in p for p in error.problems)
    assert any("'MseThreshold' is Float" in p for p in error.problems)
    assert any("'UseSpot' is Boolean" in p for p in error.problems)
    assert any("'ProcessingInstanceCount' is Integer" in p for p in error.problems)
    assert "parameter 'Region' (String) has no default and no value" in error.problems
    message = str(error)
    assert "Valid parameters:" in message and "MaxDepth (Integer, default 5)" in message
    assert "Region (String, required)" in message
    assert isinstance(error, ValueError)


def test_resolve_parameters_merges_defaults_and_types_values() -> None:
    definition = parse_definition(sdk_definition())
    values = resolve_parameters(
        definition, [{"Name": "MseThreshold", "Value": "2.5"}, {"Name": "UseSpot", "Value": "True"}]
    )
    assert values["MseThreshold"] == 2.5
    assert values["UseSpot"] is True
    assert values["MaxDepth"] == 5
    assert values["ProcessingInstanceType"] == "ml.m5.xlarge"
    with pytest.raises(ParameterError, match="given more than once"):
        resolve_parameters(
            definition, [{"Name": "MaxDepth", "Value": "1"}, {"Name": "MaxDepth", "Value": "2"}]
        )


def test_execution_parameters_merge_defaults_with_what_was_sent_in_definition_order() -> None:
    document = simple(
        [step("A")],
        [
            {"Name": "Name", "Type": "String", "DefaultValue": "x"},
            {"Name": "Count", "Type": "Integer", "DefaultValue": 3},
            {"Name": "Ratio", "Type": "Float", "DefaultValue": 0.5},
            {"Name": "Whole", "Type": "Float", "DefaultValue": 2},
            {"Name": "Flag", "Type": "Boolean", "DefaultValue": True},
            {"Name": "Given", "Type": "Integer"},
        ],
    )
    sent = coerce_parameters(document, {"Given": 7, "Ratio": "1.50", "Flag": False})
    assert execution_parameters(document, sent) == [
        {"Name": "Name", "Value": "x"},
        {"Name": "Count", "Value": "3"},
        {"Name": "Ratio", "Value": "1.50"},  # a string is sent, and reported, as given
        {"Name": "Whole", "Value": "2.0"},  # a Float default is a float
        {"Name": "Flag", "Value": "false"},
        {"Name": "Given", "Value": "7"},
    ]
    assert execution_parameters(parse_definition(document), [])[0] == {"Name": "Name", "Value": "x"}


def test_enum_values_are_enforced() -> None:
    document = simple(
        [step("A")], [{"Name": "Mode", "Type": "String", "DefaultValue": "a", "EnumValues": ["a", "b"]}]
    )
    assert coerce_parameters(document, {"Mode": "b"}) == [{"Name": "Mode", "Value": "b"}]
    with pytest.raises(ParameterError, match=r"is not one of \['a', 'b'\]"):
        coerce_parameters(document, {"Mode": "c"})
    bad = copy.deepcopy(document)
    bad["Parameters"][0]["DefaultValue"] = "z"
    with pytest.raises(DefinitionError, match="not one of its EnumValues"):
        parse_definition(bad)


def test_format_value() -> None:
    assert format_value(True) == "true"
    assert format_value(1.5) == "1.5"
    assert format_value(3) == "3"
    assert format_value(None) == ""
    assert format_value({"a": [1]}) == '{"a":[1]}'
