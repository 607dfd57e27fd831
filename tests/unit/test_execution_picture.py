"""ExecutionPicture: the merge of events and safety reads of one execution, without AWS.

Step entries come from EventBridge envelopes through the one event reader (``parse_event``), as a wait
receives them.
"""

from __future__ import annotations

from typing import Any

import pytest
from sagemaker_pipelines_provider.utils.execution_picture import ExecutionPicture
from sagemaker_pipelines_provider.utils.pipeline_events import STEP_EVENT, parse_event

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/e1"
TYPES = {"Prep": "Processing", "Train": "Training"}


def step(name: str, status: str, attempt: int = 1, **detail: Any) -> dict[str, Any]:
    envelope = {
        "version": "0",
        "id": f"{name}-{status}-{attempt}",
        "detail-type": STEP_EVENT,
        "source": "aws.sagemaker",
        "time": "2026-01-01T00:00:10Z",
        "detail": {
            "stepName": name,
            "stepType": TYPES.get(name, "Processing"),
            "currentStepStatus": status,
            "attemptCount": attempt,
            "stepStartTime": "2026-01-01T00:00:01Z",
            "pipelineExecutionArn": ARN,
            **detail,
        },
    }
    return parse_event(envelope).as_step_entry()


def test_the_status_only_moves_forward() -> None:
    picture = ExecutionPicture(ARN)
    assert picture.apply_status("Executing", display_name="nightly")
    assert not picture.apply_status("Executing")  # a duplicate
    assert picture.apply_status("Succeeded")
    assert not picture.apply_status("Executing")  # late, out of order
    assert not picture.apply_status("Stopping")
    assert not picture.apply_status("Failed")  # terminal is terminal
    assert picture.as_describe() == {
        "PipelineExecutionArn": ARN,
        "PipelineExecutionStatus": "Succeeded",
        "FailureReason": None,
        "PipelineExecutionDisplayName": "nightly",
    }


def test_a_reason_read_later_for_the_same_status_is_kept() -> None:
    picture = ExecutionPicture(ARN)
    picture.apply_status("Failed")  # the event: no reason
    assert not picture.apply_status("Failed", failure_reason="Step Train failed")  # the poller's read
    assert picture.failure_reason == "Step Train failed"


def test_sagemakers_answer_corrects_a_stale_terminal_status() -> None:
    picture = ExecutionPicture(ARN)
    picture.apply_status("Failed")  # a late event of the attempt before RetryPipelineExecution
    picture.correct({"PipelineExecutionStatus": "Executing", "PipelineExecutionDisplayName": "d"})
    assert picture.status == "Executing" and picture.display_name == "d"
    assert picture.apply_status("Succeeded")


def test_an_undocumented_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="Unknown pipeline execution status 'Paused'"):
        ExecutionPicture(ARN).apply_status("Paused")


def test_steps_never_move_backwards_and_log_each_change_once() -> None:
    picture = ExecutionPicture(ARN, TYPES)
    assert picture.apply_step(step("Prep", "Starting")) == ["Step Prep (Processing): Starting"]
    done = step("Prep", "Succeeded", stepEndTime="2026-01-01T00:00:04Z")
    assert picture.apply_step(done) == ["Step Prep (Processing): Succeeded after 3.0s"]
    assert picture.apply_step(step("Prep", "Executing")) == []  # out of order
    assert picture.apply_step(done) == []  # duplicate
    assert picture.steps["Prep"]["StepStatus"] == "Succeeded"


def test_a_new_attempt_replaces_the_failed_one() -> None:
    picture = ExecutionPicture(ARN, TYPES)
    picture.apply_step(step("Train", "Failed", failureReason="OOM"))
    assert picture.apply_step(step("Train", "Starting", attempt=2)) == [
        "Step Train (Training): Starting (attempt 2)"
    ]
    assert picture.apply_step(step("Train", "Failed", failureReason="late copy")) == []  # the old attempt
    assert picture.steps["Train"]["AttemptCount"] == 2


def test_fields_of_the_same_attempt_are_kept_when_a_later_event_lacks_them() -> None:
    picture = ExecutionPicture(ARN, TYPES)
    picture.apply_step(step("Prep", "Executing", metadata={"processingJob": {"arn": "arn:job"}}))
    picture.apply_step(step("Prep", "Succeeded", stepStartTime=None))
    assert picture.steps["Prep"]["StartTime"] is not None
    assert picture.steps["Prep"]["Metadata"] == {"ProcessingJob": {"Arn": "arn:job"}}
    assert picture.steps["Prep"]["StepStatus"] == "Succeeded"


def test_result_steps_only_when_provably_complete() -> None:
    picture = ExecutionPicture(ARN, TYPES)
    picture.apply_status("Executing")
    picture.apply_step(step("Prep", "Succeeded"))
    picture.apply_status("Succeeded")
    assert picture.result_steps() is None  # Train never seen (events lost, or before the subscription)
    picture.apply_step(step("Train", "Executing"))
    assert picture.result_steps() is None  # its end was not seen
    picture.apply_step(step("Train", "Succeeded"))
    assert [s["StepName"] for s in picture.result_steps() or []] == ["Prep", "Train"]


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_failed_or_stopped_execution_always_lists_its_steps(status: str) -> None:
    picture = ExecutionPicture(ARN, TYPES)
    picture.apply_step(step("Prep", "Succeeded"))
    picture.apply_step(step("Train", "Failed" if status == "Failed" else "Stopped"))
    picture.apply_status(status)
    assert picture.result_steps() is None


def test_without_step_types_the_steps_are_always_listed() -> None:
    picture = ExecutionPicture(ARN)
    picture.apply_step(step("Prep", "Succeeded"))
    picture.apply_status("Succeeded")
    assert picture.result_steps() is None
