"""SageMakerPipelineTaskGroup against the local endpoint: per-step task states equal the endpoint's steps.

Each test runs a DAG in-process with ``dag.test()`` (deferrable waits run their trigger in line, retries
run in line) and compares every step task's final state with the step's status on the endpoint:
Succeeded -> success, Failed -> failed, not listed (did not run) -> skipped or upstream_failed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.support.pipelines import (
    FAST_BACKOFF,
    POLL,
    START_DATE,
    Failures,
    calls,
    create_pipeline,
    executions,
    fast_endpoint,
    processing_step,
    training_step,
    unique,
    xcom,
)

pytestmark = pytest.mark.integration

TASK_STATE_OF_STEP = {"Succeeded": "success", "Failed": "failed", "Stopped": "failed"}
NOT_RUN = {"skipped", "upstream_failed"}


def dag(dag_id: str | None = None, **kwargs: Any) -> Any:
    from airflow.sdk import DAG

    kwargs.setdefault("schedule", None)
    kwargs.setdefault("start_date", START_DATE)
    kwargs.setdefault("catchup", False)
    return DAG(dag_id or unique("mirror"), **kwargs)


def mirror(pipeline: str, definition: Any, **kwargs: Any) -> Any:
    from sagemaker_pipelines_provider.task_groups.mirror import SageMakerPipelineTaskGroup

    kwargs.setdefault("poll_interval", POLL)
    kwargs.setdefault("start_kwargs", {"backoff_policy": FAST_BACKOFF})
    return SageMakerPipelineTaskGroup(pipeline, definition=definition, group_id="mirror", **kwargs)


def endpoint_steps(local_aws: Any, arn: str) -> dict[str, dict[str, Any]]:
    listed = local_aws.client("sagemaker").list_pipeline_execution_steps(PipelineExecutionArn=arn)
    return {s["StepName"]: s for s in listed["PipelineExecutionSteps"]}


def assert_mirrors(group: Any, states: dict[str, str | None], steps: dict[str, dict[str, Any]]) -> None:
    """Every step task's state is its step's status on the endpoint."""
    for name, task in group.step_tasks.items():
        state = states[task.task_id]
        if name in steps:
            assert state == TASK_STATE_OF_STEP.get(steps[name]["StepStatus"]), (name, state, steps[name])
        else:
            assert state in NOT_RUN, (name, state)


def three_step_pipeline(local_aws: Any) -> tuple[str, dict[str, Any]]:
    """Prep -> Train -> Report (Report reads Train's model through a Get reference)."""
    steps = [
        processing_step("Prep"),
        training_step("Train", ["Prep"]),
        processing_step("Report", Model={"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}),
    ]
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": steps}
    return create_pipeline(local_aws, steps=steps, parameters=[]), definition


def test_a_fail_step_in_the_branch_taken_fails_its_task_and_the_other_branch_is_skipped(
    local_aws: Any, dag_runner: Any
) -> None:
    from sagemaker_pipelines_provider.local.seed import load_definition

    fast_endpoint(local_aws)
    local_aws.seed()
    failures = Failures()
    with dag() as d:
        group = mirror(
            "evaluation",
            load_definition("evaluation"),
            parameters={"AccuracyThreshold": 0.95},  # the report says 0.91: ElseSteps
            step_kwargs={"on_failure_callback": failures},
        )
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states["mirror.AccuracyTooLow"] == "failed"
    assert states["mirror.RegisterEvaluatedModel"] == "skipped"
    assert states["mirror.result"] == "upstream_failed"
    (execution,) = executions(local_aws, "evaluation")
    assert_mirrors(group, states, endpoint_steps(local_aws, execution["PipelineExecutionArn"]))
    (message,) = failures.messages
    assert "Step AccuracyTooLow (Fail)" in message
    assert "Accuracy below threshold 0.95" in message


def test_a_failed_step_fails_its_task_with_the_reason_and_downstream_does_not_run(
    local_aws: Any, dag_runner: Any
) -> None:
    fast_endpoint(local_aws)
    pipeline, definition = three_step_pipeline(local_aws)
    local_aws.controls.set_step_behaviour(pipeline, "Train", fail="CUDA out of memory on ml.p3.2xlarge")
    failures = Failures()
    with dag() as d:
        group = mirror(pipeline, definition, step_kwargs={"on_failure_callback": failures})
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states == {
        "mirror.start": "success",
        "mirror.Prep": "success",
        "mirror.Train": "failed",
        "mirror.Report": "upstream_failed",
        "mirror.result": "upstream_failed",
    }
    (execution,) = executions(local_aws, pipeline)
    steps = endpoint_steps(local_aws, execution["PipelineExecutionArn"])
    assert set(steps) == {"Prep", "Train"}
    assert_mirrors(group, states, steps)
    (message,) = failures.messages
    assert "Step Train (Training)" in message
    assert "CUDA out of memory on ml.p3.2xlarge" in message
    assert "Clear this task to resume" in message
    assert calls(local_aws, "RetryPipelineExecution") == []


def test_a_new_try_of_a_failed_step_task_resumes_the_execution(local_aws: Any, dag_runner: Any) -> None:
    fast_endpoint(local_aws)
    pipeline, definition = three_step_pipeline(local_aws)
    local_aws.controls.set_step_behaviour(pipeline, "Train", fail="spot capacity reclaimed", fail_attempts=1)
    retried = Failures()
    with dag() as d:
        group = mirror(
            pipeline,
            definition,
            step_kwargs={
                "retries": 1,
                "retry_delay": dt.timedelta(seconds=0),
                "on_retry_callback": retried,
            },
        )
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states == {
        "mirror.start": "success",
        "mirror.Prep": "success",
        "mirror.Train": "success",
        "mirror.Report": "success",
        "mirror.result": "success",
    }
    (message,) = retried.messages  # the first try failed with the step's reason...
    assert "spot capacity reclaimed" in message
    (execution,) = executions(local_aws, pipeline)  # ...the second resumed the same execution
    arn = execution["PipelineExecutionArn"]
    assert len(calls(local_aws, "StartPipelineExecution", pipeline)) == 1
    (retry,) = calls(local_aws, "RetryPipelineExecution", pipeline)
    assert retry["args"]["PipelineExecutionArn"] == arn
    steps = endpoint_steps(local_aws, arn)
    assert steps["Train"]["AttemptCount"] == 2
    assert steps["Prep"].get("AttemptCount", 1) == 1  # succeeded steps are kept
    assert_mirrors(group, states, steps)
    assert xcom(run, "mirror.Train")["attempts"] == 2
    assert xcom(run, "mirror.result")["status"] == "Succeeded"


@pytest.mark.parametrize(
    "run_conf",
    [
        None,
        {"accuracy_threshold": 0.85, "model_data_url": "s3://sagemaker-local-demo/models/v2/model.tar.gz"},
    ],
    ids=["defaults", "parametrized"],
)
def test_example_dag_runs_green(local_aws: Any, dag_runner: Any, run_conf: dict[str, Any] | None) -> None:
    from tests.support.example_dags import load_dag

    fast_endpoint(local_aws)
    local_aws.seed()
    d = load_dag("mirror_pipeline")
    for task in d.tasks:  # the example polls every 5 s; the test every 0.1 s
        if hasattr(task, "poke_interval"):
            task.poke_interval = POLL
        if hasattr(task, "poll_interval"):
            task.poll_interval = POLL
    run = dag_runner.run_dag(d, run_conf=run_conf)
    states = dag_runner.task_states(run)
    assert states == {
        "evaluation.start": "success",
        "evaluation.Evaluate": "success",
        "evaluation.CheckAccuracy": "success",
        "evaluation.RegisterEvaluatedModel": "success",
        "evaluation.AccuracyTooLow": "skipped",  # the branch the Condition did not take
        "evaluation.result": "success",
    }
    (execution,) = executions(local_aws, "evaluation")
    arn = execution["PipelineExecutionArn"]
    assert_mirrors(d.task_group_dict["evaluation"], states, endpoint_steps(local_aws, arn))
    result = xcom(run, "evaluation.result")
    assert (result["status"], result["pipeline_execution_arn"]) == ("Succeeded", arn)
    assert xcom(run, "evaluation.CheckAccuracy")["outputs"]["Outcome"] == "True"
    params = local_aws.client("sagemaker").list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
    given = {p["Name"]: p["Value"] for p in params["PipelineParameters"]}
    expected = run_conf or {"accuracy_threshold": 0.8, "model_data_url": given.get("ModelDataUrl")}
    assert float(given["AccuracyThreshold"]) == expected["accuracy_threshold"]
    assert given["ModelDataUrl"] == expected["model_data_url"]
