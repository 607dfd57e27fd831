"""The result XCom and the step tasks read one latest attempt per step; the verdict of one look."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout
from sagemaker_pipelines_provider.hooks.pipeline import build_execution_result, step_transitions
from sagemaker_pipelines_provider.results import execution_verdict, failure_message
from sagemaker_pipelines_provider.triggers.pipeline_step import step_payload
from sagemaker_pipelines_provider.utils.events import execution_event_result, trigger_event
from sagemaker_pipelines_provider.utils.status import Outcome
from sagemaker_pipelines_provider.utils.step_status import step_verdict

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/my-pipe/execution/abc123"
T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)


def attempt(count: int, status: str, start: dt.datetime | None, **extra: Any) -> dict[str, Any]:
    entry = {"StepName": "Train", "StepStatus": status, "AttemptCount": count, **extra}
    if start is not None:
        entry["StartTime"] = start
    return entry


# ListPipelineExecutionSteps lists newest first; each case is two attempts of one step whose StartTime
# does not order them: the rule must read AttemptCount first.
CASES = {
    "same second": [
        attempt(2, "Succeeded", T0, EndTime=T0 + dt.timedelta(seconds=1)),
        attempt(1, "Failed", T0, EndTime=T0, FailureReason="old attempt"),
    ],
    "retry not started yet": [
        attempt(2, "Starting", None),
        attempt(1, "Failed", T0, EndTime=T0, FailureReason="old attempt"),
    ],
    "clock stepped back": [
        attempt(2, "Succeeded", T0 - dt.timedelta(seconds=5)),
        attempt(1, "Failed", T0, FailureReason="old attempt"),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=list(CASES))
def test_result_xcom_and_step_task_read_the_same_attempt(steps: list[dict[str, Any]]) -> None:
    result = build_execution_result(
        {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Executing"}, steps, {}
    )
    verdict = step_verdict("Train", execution_status="Executing", steps=steps)
    assert verdict.entry is steps[0]
    assert result["steps"]["Train"]["attempts"] == verdict.attempts == 2
    assert result["steps"]["Train"]["status"] == steps[0]["StepStatus"]
    payload = step_payload(verdict, step_name="Train", step_type="Training")
    assert payload is not None
    assert {k: v for k, v in payload.items() if k not in ("name", "outputs")} == {
        **result["steps"]["Train"],
        "type": "Training",
    }
    _, lines = step_transitions({}, steps)
    assert len(lines) == 1
    assert lines[0].startswith(f"Step Train (unknown type): {steps[0]['StepStatus']}")
    assert "(attempt 2)" in lines[0]


@pytest.mark.parametrize(
    ("status", "allow_stopped", "outcome"),
    [
        ("Succeeded", False, Outcome.SUCCESS),
        ("Failed", False, Outcome.FAILURE),
        ("Stopped", False, Outcome.FAILURE),
        ("Stopped", True, Outcome.SUCCESS),
        ("Executing", False, Outcome.RUNNING),
    ],
)
def test_the_verdict_applies_the_status_policy(status: str, allow_stopped: bool, outcome: Outcome) -> None:
    steps = [attempt(1, "Failed", T0, FailureReason="OOM")] if status == "Failed" else []
    verdict = execution_verdict(
        {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": status},
        steps,
        [{"Name": "Rows", "Value": "3"}],
        allow_stopped=allow_stopped,
        step_types={"Train": "Training"},
    )
    assert verdict.outcome is outcome
    assert verdict.result["status"] == status
    assert verdict.result["parameters"] == {"Rows": "3"}
    if outcome is Outcome.FAILURE:
        assert verdict.message == failure_message(verdict.result)
        assert f"{ARN} ended {status}" in verdict.message
    else:
        assert verdict.message is None
    if status == "Failed":
        assert "Train (Training): OOM" in str(verdict.message)


def test_an_undocumented_status_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="Unknown pipeline execution status 'Paused'"):
        execution_verdict({"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Paused"}, [], {})


def test_execution_events_resume_the_task_or_say_why_not() -> None:
    result = {"pipeline_execution_arn": ARN, "status": "Succeeded"}
    assert execution_event_result({"status": "success", "result": result}) == result
    with pytest.raises(AirflowException, match="fired without an event payload"):
        execution_event_result(None)
    with pytest.raises(AirflowException, match="could not read"):
        execution_event_result({"status": "error", "message": "could not read"})
    with pytest.raises(AirflowException, match="ended Failed"):
        execution_event_result({"status": "failure", "message": "ended Failed", "result": result})
    with pytest.raises(AirflowTaskTimeout, match="Deadline"):
        execution_event_result({"status": "timeout", "message": "Deadline passed", "result": result})
    with pytest.raises(AirflowException, match="PipelineStepTrigger fired without"):
        trigger_event({}, "PipelineStepTrigger")
