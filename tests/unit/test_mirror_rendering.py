"""SageMakerPipelineTaskGroup rendering: task ids, edges, branches, definition sources, no AWS at parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sagemaker_pipelines_provider import definition_source
from sagemaker_pipelines_provider.definition import DefinitionError, parse_definition
from sagemaker_pipelines_provider.definition_source import resolve_definition
from sagemaker_pipelines_provider.task_groups.mirror import (
    SageMakerPipelineTaskGroup,
    plan_mirror,
    step_task_id,
)
from sagemaker_pipelines_provider.utils.step_status import BranchRef

ROLE = "arn:aws:iam::123456789012:role/R"


def step(name: str, type_: str = "Processing", depends_on: list[str] | None = None, **args: Any) -> dict:
    body: dict[str, Any] = {"Name": name, "Type": type_, "Arguments": dict(args)}
    if depends_on:
        body["DependsOn"] = depends_on
    return body


#: Prep -> Train (Get) -> Check (Condition: If [Register, inner Condition: If [Deploy] Else [Notify]],
#: Else [Stop]); Audit depends on Prep only (a second root-level chain); one step named "start".
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}],
    "Steps": [
        step("Prep"),
        {
            "Name": "Train",
            "Type": "Training",
            "Arguments": {
                "Input": {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
            },
            "DependsOn": ["Prep"],
        },
        step("Audit", depends_on=["Prep"]),
        step("start"),
        {
            "Name": "Check",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [
                    {"Type": "GreaterThan", "LeftValue": 1, "RightValue": {"Get": "Parameters.Threshold"}}
                ],
                "IfSteps": [
                    step(
                        "Register",
                        "RegisterModel",
                        Model={"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
                    ),
                    {
                        "Name": "Inner",
                        "Type": "Condition",
                        "Arguments": {
                            "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 1}],
                            "IfSteps": [step("Deploy")],
                            "ElseSteps": [step("Notify.Me")],
                        },
                    },
                ],
                "ElseSteps": [{"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "too low"}}],
            },
            "DependsOn": ["Train"],
        },
    ],
}


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) any SageMaker call made while a DAG is parsed."""
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook

    made: list[str] = []

    def refuse(self: Any, action: str, **_: Any) -> Any:
        made.append(action)
        raise AssertionError(f"AWS call {action} at parse time")

    monkeypatch.setattr(SageMakerPipelineHook, "_call", refuse)
    return made


def build(**kwargs: Any) -> tuple[Any, SageMakerPipelineTaskGroup]:
    from airflow.sdk import DAG

    with DAG("mirror_unit", schedule=None) as dag:
        group = SageMakerPipelineTaskGroup("my-pipe", **kwargs)
    return dag, group


def test_one_task_per_step_between_start_and_result_with_the_definition_edges(no_aws: list[str]) -> None:
    dag, group = build(definition=DEFINITION)
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    p = "my-pipe."
    assert downstream == {
        f"{p}start": [f"{p}Prep", f"{p}start_step"],
        f"{p}Prep": [f"{p}Audit", f"{p}Train"],
        f"{p}Train": [f"{p}Check", f"{p}Register"],
        f"{p}Audit": [f"{p}result"],
        f"{p}start_step": [f"{p}result"],
        f"{p}Check": [f"{p}Inner", f"{p}Register", f"{p}Stop"],
        f"{p}Register": [f"{p}result"],
        f"{p}Inner": [f"{p}Deploy", f"{p}Notify_Me"],
        f"{p}Deploy": [f"{p}result"],
        f"{p}Notify_Me": [f"{p}result"],
        f"{p}Stop": [f"{p}result"],
        f"{p}result": [],
    }
    assert no_aws == []
    assert group.step_tasks["Notify.Me"].step_name == "Notify.Me"  # the real name reaches the sensor
    assert group.step_tasks["Notify.Me"].task_display_name == "Notify.Me"
    assert group.step_tasks["start"].task_id == "my-pipe.start_step"


def test_step_tasks_carry_their_branch_chain_type_and_trigger_rule(no_aws: list[str]) -> None:
    _, group = build(definition=DEFINITION, step_kwargs={"retries": 2})
    deploy = group.step_tasks["Deploy"]
    assert deploy.branch_chain == [["Inner", True], ["Check", True]]
    assert group.step_tasks["Stop"].branch_chain == [["Check", False]]
    assert group.step_tasks["Prep"].branch_chain == []
    assert deploy.step_type == "Processing"
    assert group.step_tasks["Check"].step_type == "Condition"
    for task in [*group.step_tasks.values(), group.result_task]:
        assert task.trigger_rule == "none_failed"
        assert task.deferrable is True
    assert deploy.retries == 2
    assert group.start_task.wait_for_completion is False
    assert "pipeline_execution_arn" in deploy.pipeline_execution_arn
    assert "'my-pipe.start'" in deploy.pipeline_execution_arn


def test_plan_is_pure_and_deduplicates_edges() -> None:
    plan = plan_mirror(parse_definition(DEFINITION))
    assert plan.order[:2] == ("Prep", "Train")
    assert plan.edges.count(("Prep", "Train")) == 1  # DependsOn and Get: one edge
    assert set(plan.roots) == {"Prep", "start"}
    assert set(plan.leaves) == {"Audit", "start", "Register", "Deploy", "Notify.Me", "Stop"}
    assert plan.branch_chains["Deploy"] == (BranchRef("Inner", True), BranchRef("Check", True))
    assert plan.task_ids["start"] == "start_step"


def test_step_task_ids_are_safe_and_unique() -> None:
    assert step_task_id("Train") == "Train"
    assert step_task_id("a b/c") == "a_b_c"
    assert step_task_id("result") == "result_step"
    assert step_task_id("a.b", {"a_b"}) == "a_b_2"


def test_definition_from_json_string_and_file(tmp_path: Path, no_aws: list[str]) -> None:
    text = json.dumps(DEFINITION)
    assert (
        resolve_definition(text, pipeline_name="p").order == plan_mirror(parse_definition(DEFINITION)).order
    )
    path = tmp_path / "pipe.json"
    path.write_text(text)
    assert "Deploy" in resolve_definition(str(path), pipeline_name="p").steps
    assert "Deploy" in resolve_definition(Path("pipe.json"), pipeline_name="p", base_dir=tmp_path).steps
    _, group = build(definition=path)
    assert len(group.step_tasks) == 10


def test_missing_or_invalid_definitions_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"pass definition=.*fetch_definition=True"):
        resolve_definition(None, pipeline_name="p")
    with pytest.raises(DefinitionError, match="not found"):
        resolve_definition("nowhere.json", pipeline_name="p", base_dir=tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Version": "2020-12-01", "Steps": [step("A", depends_on=["Ghost"])]}))
    with pytest.raises(DefinitionError, match=r"bad\.json"):
        resolve_definition(bad, pipeline_name="p")


def test_fetch_definition_calls_describe_pipeline_once_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook

    made: list[str] = []

    def fake_call(self: Any, action: str, **request: Any) -> Any:
        made.append(action)
        return {"PipelineName": request["PipelineName"], "PipelineDefinition": json.dumps(DEFINITION)}

    monkeypatch.setattr(SageMakerPipelineHook, "_call", fake_call)
    definition_source.clear_definition_cache()
    _, group = build(fetch_definition=True, definition_cache_dir=tmp_path)
    assert "Deploy" in group.step_tasks
    build(fetch_definition=True, definition_cache_dir=tmp_path)  # in-process copy
    definition_source.clear_definition_cache()
    build(fetch_definition=True, definition_cache_dir=tmp_path)  # disk copy (another parse process)
    assert made == ["DescribePipeline"]

    # expired + AWS failing: the stale copy keeps the DAG parseable
    def failing(self: Any, action: str, **request: Any) -> Any:
        raise RuntimeError("throttled")

    monkeypatch.setattr(SageMakerPipelineHook, "_call", failing)
    definition_source.clear_definition_cache()
    _, group = build(fetch_definition=True, definition_cache_dir=tmp_path, definition_cache_ttl=0)
    assert "Deploy" in group.step_tasks
    definition_source.clear_definition_cache()
