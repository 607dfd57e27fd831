"""System test (d): ``mirror_pipeline`` on the stack with a step that fails once, resumed by a clear.

The mirror renders one task per step of the ``evaluation`` pipeline (``evaluation.start`` ->
``Evaluate`` -> ``CheckAccuracy`` -> ``RegisterEvaluatedModel`` | ``AccuracyTooLow`` -> ``result``).
The endpoint fails the first attempt of ``Evaluate``: its task fails with the step's reason (task
instance state and its log, through the REST API), the run fails; clearing the task through the REST API
as the UI's Clear dialog does (downstream included) makes its new try resume the same execution with
RetryPipelineExecution, and the run ends success. Asserted from the outside only: REST and the endpoint's
execution list and call record.
"""

from __future__ import annotations

import json
from typing import Any

from stack import AirflowApi

DAG_ID = "mirror_pipeline"
PIPELINE = "evaluation"
GROUP = "evaluation"
FAILING_STEP = "Evaluate"
FAILING_TASK = f"{GROUP}.{FAILING_STEP}"
REASON = "AlgorithmError: evaluation container ran out of memory (system test d)"
#: What the Clear dialog of a failed task resets (its downstream option is on by default).
CLEARED = {
    FAILING_TASK,
    f"{GROUP}.CheckAccuracy",
    f"{GROUP}.RegisterEvaluatedModel",
    f"{GROUP}.AccuracyTooLow",
    f"{GROUP}.result",
}


def _states(api: AirflowApi, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in api.task_instances(DAG_ID, run_id)}


def _log_text(api: AirflowApi, run_id: str, task_id: str, try_number: int) -> str:
    return "\n".join(json.dumps(line) for line in api.task_log(DAG_ID, run_id, task_id, try_number))


def _calls(aws: Any, action: str, **args: str) -> list[dict[str, Any]]:
    """The endpoint's calls to ``action`` whose recorded arguments include ``args``: this run's only (a
    scheduled ``retraining_chain`` run of another test may run the ``evaluation`` pipeline meanwhile)."""
    return [c for c in aws.controls.calls(action=action) if args.items() <= c["args"].items()]


def _executions_named(aws: Any, display_name: str) -> list[dict[str, Any]]:
    return [e for e in aws.executions(PIPELINE) if e.get("PipelineExecutionDisplayName") == display_name]


def test_a_failed_step_fails_its_task_and_clearing_it_resumes_the_execution(
    airflow_api: AirflowApi, stack_aws: Any
) -> None:
    stack_aws.controls.set_step_behaviour(PIPELINE, FAILING_STEP, fail=REASON, fail_attempts=1)
    run = airflow_api.trigger(DAG_ID)  # no logical date, as the UI's Trigger button
    run_id = run["dag_run_id"]

    # 1. The step fails: its task fails with the step's reason, nothing downstream runs, the run fails.
    run = airflow_api.wait_for_run(DAG_ID, run_id)
    states = _states(airflow_api, run_id)
    assert run["state"] == "failed", states
    assert states == {
        f"{GROUP}.start": "success",
        FAILING_TASK: "failed",
        f"{GROUP}.CheckAccuracy": "upstream_failed",
        f"{GROUP}.RegisterEvaluatedModel": "upstream_failed",
        f"{GROUP}.AccuracyTooLow": "upstream_failed",
        f"{GROUP}.result": "upstream_failed",
    }
    failed = airflow_api.task_instance(DAG_ID, run_id, FAILING_TASK)
    assert failed["try_number"] == 1
    log = _log_text(airflow_api, run_id, FAILING_TASK, 1)
    assert f"Step {FAILING_STEP} (Processing)" in log and REASON in log, log[-4000:]

    # One execution for the run (found by the ARN the start task pushed, and by its display name), Failed
    # at the step; started once, not resumed by the first try.
    arn = airflow_api.xcom(DAG_ID, run_id, f"{GROUP}.start", key="pipeline_execution_arn")
    described = stack_aws.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=arn)
    display_name = described["PipelineExecutionDisplayName"]
    (execution,) = _executions_named(stack_aws, display_name)
    assert (execution["PipelineExecutionArn"], execution["PipelineExecutionStatus"]) == (arn, "Failed")
    step = {s["StepName"]: s for s in stack_aws.steps(arn)}[FAILING_STEP]
    assert (step["StepStatus"], step["FailureReason"]) == ("Failed", REASON), step
    start_args = {"PipelineName": PIPELINE, "PipelineExecutionDisplayName": display_name}
    assert len(_calls(stack_aws, "StartPipelineExecution", **start_args)) == 1
    assert _calls(stack_aws, "RetryPipelineExecution", PipelineExecutionArn=arn) == []

    # 2. Clear the failed task as the UI does: a dry run lists what the dialog shows, then the clear.
    options = {"include_downstream": True, "only_failed": False}
    preview = airflow_api.clear_task_instances(DAG_ID, run_id, [FAILING_TASK], dry_run=True, **options)
    assert {ti["task_id"] for ti in preview["task_instances"]} == CLEARED, preview
    airflow_api.clear_task_instances(DAG_ID, run_id, [FAILING_TASK], **options)

    # 3. The new try resumes the same execution (RetryPipelineExecution, no new start); the run succeeds.
    run = airflow_api.wait_for_run(DAG_ID, run_id)
    states = _states(airflow_api, run_id)
    assert run["state"] == "success", states
    assert states == {
        f"{GROUP}.start": "success",
        FAILING_TASK: "success",
        f"{GROUP}.CheckAccuracy": "success",
        f"{GROUP}.RegisterEvaluatedModel": "success",
        f"{GROUP}.AccuracyTooLow": "skipped",
        f"{GROUP}.result": "success",
    }
    assert airflow_api.task_instance(DAG_ID, run_id, FAILING_TASK)["try_number"] == 2
    assert airflow_api.task_instance(DAG_ID, run_id, f"{GROUP}.start")["try_number"] == 1
    resumed_log = _log_text(airflow_api, run_id, FAILING_TASK, 2)
    assert "resuming execution" in resumed_log, resumed_log[-4000:]
    assert "RetryPipelineExecution" in resumed_log, resumed_log[-4000:]

    assert len(_calls(stack_aws, "StartPipelineExecution", **start_args)) == 1
    (retry,) = _calls(stack_aws, "RetryPipelineExecution", PipelineExecutionArn=arn)
    assert retry["status"] == 200, retry
    (execution,) = _executions_named(stack_aws, display_name)
    assert (execution["PipelineExecutionArn"], execution["PipelineExecutionStatus"]) == (arn, "Succeeded")
    steps = {s["StepName"]: s for s in stack_aws.steps(arn)}
    assert steps[FAILING_STEP]["StepStatus"] == "Succeeded"
    assert steps[FAILING_STEP]["AttemptCount"] == 2, steps[FAILING_STEP]
    assert steps["RegisterEvaluatedModel"]["StepStatus"] == "Succeeded"
    assert "AccuracyTooLow" not in steps
    result = airflow_api.xcom(DAG_ID, run_id, f"{GROUP}.result")
    assert (result["pipeline_execution_arn"], result["status"]) == (arn, "Succeeded"), result
