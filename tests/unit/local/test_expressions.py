"""Evaluating definition values (``sagemaker_pipelines_provider.local.engine.expressions``)."""

from __future__ import annotations

from typing import Any

import pytest
from sagemaker_pipelines_provider.local.engine.expressions import (
    ExpressionError,
    Scope,
    evaluate,
    evaluate_conditions,
    parse_path,
)

STEP_PROPERTIES: dict[str, dict[str, Any]] = {
    "Prep": {
        "ProcessingJobName": "pipelines-abc-Prep",
        "ProcessingOutputConfig": {
            "Outputs": [
                {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/train"}},
                {"OutputName": "test", "S3Output": {"S3Uri": "s3://b/test"}},
            ]
        },
    },
    "Train": {
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/model.tar.gz"},
        "FinalMetricDataList": [
            {"MetricName": "val:acc", "Value": 0.91},
            {"MetricName": "train:loss", "Value": 0.2},
        ],
    },
    "Register": {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"},
    "Cb": {"OutputParameters": {"approved": True, "score": 7}},
}

PROPERTY_FILES = {
    ("Eval", "Report"): {"regression_metrics": {"mse": {"value": 4.5}}, "list": [{"a": 1}, {"a": 2}]}
}


def property_file(step: str, name: str) -> Any:
    try:
        return PROPERTY_FILES[(step, name)]
    except KeyError:
        raise ExpressionError(f"property file {name!r} of step {step!r} was not found") from None


SCOPE = Scope(
    parameters={"Threshold": 5.0, "Name": "abc", "Count": 3, "Flag": True},
    execution={"PipelineExecutionId": "exec123", "PipelineName": "demo"},
    step_properties=STEP_PROPERTIES.get,
    property_file=property_file,
    read_json=lambda uri: {"from": uri},
    now=lambda: "2024-01-01T00:00:00Z",
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("literal", "literal"),
        (3, 3),
        ({"Get": "Parameters.Threshold"}, 5.0),
        ({"Get": "Execution.PipelineExecutionId"}, "exec123"),
        ({"Get": "Execution.CurrentDateTime"}, "2024-01-01T00:00:00Z"),
        ({"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}, "s3://b/train"),
        ({"Get": 'Steps.Prep.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri'}, "s3://b/test"),
        ({"Get": "Steps.Prep.ProcessingOutputConfig.Outputs[1].S3Output.S3Uri"}, "s3://b/test"),
        ({"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}, "s3://b/model.tar.gz"),
        ({"Get": "Steps.Train.FinalMetricDataList['val:acc'].Value"}, 0.91),
        (
            {"Get": "Steps.Register.ModelPackageArn"},
            "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
        ),
        ({"Get": "Steps.Cb.OutputParameters['approved']"}, True),
        (
            {"Std:Join": {"On": "/", "Values": ["s3://b", {"Get": "Execution.PipelineExecutionId"}, "out"]}},
            "s3://b/exec123/out",
        ),
        ({"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Count"}]}}, "3"),
        ({"Std:Join": {"On": ",", "Values": [True, 1.5, None]}}, "true,1.5,"),
        (
            {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"},
                    "Path": "regression_metrics.mse.value",
                }
            },
            4.5,
        ),
        (
            {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"},
                    "Path": "list[1].a",
                }
            },
            2,
        ),
        ({"Std:JsonGet": {"S3Uri": "s3://b/x.json", "Path": "from"}}, "s3://b/x.json"),
        (
            {"Outer": [{"Get": "Parameters.Name"}, {"Nested": {"Get": "Parameters.Count"}}]},
            {"Outer": ["abc", {"Nested": 3}]},
        ),
    ],
)
def test_evaluate(value: Any, expected: Any) -> None:
    assert evaluate(value, SCOPE) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['validation'].S3Output.S3Uri"},
            "step 'Prep' has no",
        ),
        ({"Get": "Steps.Missing.Whatever"}, "step 'Missing' has no properties"),
        ({"Get": "Parameters.Unknown"}, "parameter 'Unknown' has no value"),
        (
            {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"},
                    "Path": "regression_metrics.rmse",
                }
            },
            "has no regression_metrics.rmse",
        ),
        (
            {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Other"}, "Path": "a"}},
            "property file 'Other' of step 'Eval' was not found",
        ),
        ({"Std:JsonGet": {"PropertyFile": "Report", "Path": "a"}}, "PropertyFile must be"),
    ],
)
def test_evaluation_errors_are_clear(value: Any, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("[", r"\[").replace("(", r"\(")):
        evaluate(value, SCOPE)


def test_evaluate_returns_copies() -> None:
    value = evaluate({"Get": "Steps.Prep.ProcessingOutputConfig"}, SCOPE)
    value["Outputs"].clear()
    assert STEP_PROPERTIES["Prep"]["ProcessingOutputConfig"]["Outputs"]


def test_parse_path() -> None:
    assert parse_path(".Outputs['train'].S3Output[0]") == [
        ("attr", "Outputs"),
        ("key", "train"),
        ("attr", "S3Output"),
        ("index", 0),
    ]
    with pytest.raises(ExpressionError, match="cannot parse path"):
        parse_path("a[")


def cond(type_: str, left: Any, right: Any) -> dict[str, Any]:
    return {"Type": type_, "LeftValue": left, "RightValue": right}


MSE = {
    "Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"},
        "Path": "regression_metrics.mse.value",
    }
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (cond("LessThanOrEqualTo", MSE, {"Get": "Parameters.Threshold"}), True),
        (cond("GreaterThan", MSE, {"Get": "Parameters.Threshold"}), False),
        (cond("GreaterThanOrEqualTo", 5, 5.0), True),
        (cond("LessThan", "4", 5), True),  # numeric string against a number compares as numbers
        (cond("Equals", {"Get": "Steps.Cb.OutputParameters['approved']"}, True), True),
        (cond("Equals", "true", True), True),
        (cond("Equals", "abc", {"Get": "Parameters.Name"}), True),
        (cond("Equals", 7, {"Get": "Steps.Cb.OutputParameters['score']"}), True),
        ({"Type": "In", "QueryValue": {"Get": "Parameters.Name"}, "Values": ["x", "abc"]}, True),
        ({"Type": "In", "QueryValue": 3, "Values": ["1", "2"]}, False),
        ({"Type": "Not", "Expression": cond("Equals", 1, 2)}, True),
        ({"Type": "Or", "Conditions": [cond("Equals", 1, 2), cond("Equals", 2, 2)]}, True),
        ({"Type": "Or", "Conditions": [cond("Equals", 1, 2), cond("Equals", 2, 3)]}, False),
    ],
)
def test_conditions(condition: dict[str, Any], expected: bool) -> None:
    assert evaluate_conditions([condition], SCOPE) is expected


def test_conditions_are_anded_and_empty_holds() -> None:
    assert evaluate_conditions([], SCOPE) is True
    assert evaluate_conditions([cond("Equals", 1, 1), cond("Equals", 1, 2)], SCOPE) is False


def test_ordering_incomparable_values_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="GreaterThan cannot compare"):
        evaluate_conditions([cond("GreaterThan", "abc", 3)], SCOPE)
