"""The anchor — the Amazon provider's own SageMaker pipeline operator and sensor — against the local
endpoint, unchanged (issue 3 acceptance).

``SageMakerStartPipelineOperator`` (synchronous wait, deferrable, and fire-and-forget) and
``SageMakerPipelineSensor`` run in in-process DAG runs (``dag_runner``) with no patching: the
``local_aws`` fixture points ``AWS_ENDPOINT_URL`` and ``aws_default`` at the endpoint, the pipelines are
created with plain boto3 and every simulated step takes 0.05 s.

The last test records how the anchor judges a Stopped execution (success when waiting
synchronously or with the sensor, failure when deferred) — a disagreement of the anchor with itself
that this provider's operator exists to settle; if the anchor changes, that test says so.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerPipelineExecutionRole"
START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
FAST = 0.1  # seconds between status checks (the anchor types them int; any number works)
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def create_pipeline(local_aws: Any) -> str:
    """Prepare -> Train, with a String parameter; returns the pipeline name."""
    name = unique("anchor")
    definition = {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "InputData", "Type": "String", "DefaultValue": "s3://bucket/default"}],
        "Steps": [
            {
                "Name": "Prepare",
                "Type": "Processing",
                "Arguments": {"Input": {"Get": "Parameters.InputData"}},
            },
            {"Name": "Train", "Type": "Training", "Arguments": {}, "DependsOn": ["Prepare"]},
        ],
    }
    local_aws.client("sagemaker").create_pipeline(
        PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN
    )
    return name


def anchor_dag(pipeline: str) -> Any:
    """start_sync (waits in the task), start_deferred (waits in a trigger), start >> sensor."""
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerStartPipelineOperator
    from airflow.providers.amazon.aws.sensors.sagemaker import SageMakerPipelineSensor
    from airflow.sdk import DAG

    with DAG(unique("anchor"), schedule=None, start_date=START_DATE, catchup=False) as dag:
        SageMakerStartPipelineOperator(
            task_id="start_sync",
            pipeline_name=pipeline,
            pipeline_params={"InputData": "s3://bucket/sync"},
            wait_for_completion=True,
            check_interval=FAST,  # type: ignore[arg-type]
        )
        SageMakerStartPipelineOperator(
            task_id="start_deferred",
            pipeline_name=pipeline,
            display_name="deferred",
            deferrable=True,
            check_interval=FAST,  # type: ignore[arg-type]
            waiter_max_attempts=300,
        )
        start = SageMakerStartPipelineOperator(task_id="start", pipeline_name=pipeline)
        sensor = SageMakerPipelineSensor(
            task_id="sensor",
            pipeline_exec_arn="{{ ti.xcom_pull(task_ids='start') }}",
            poke_interval=FAST,
            timeout=60,
        )
        start >> sensor
    return dag


STARTERS = ("start_sync", "start_deferred", "start")


def arns(run: Any) -> dict[str, str]:
    """The execution ARN each starting task pushed (its return value)."""
    return {task_id: str(run.get_task_instance(task_id).xcom_pull(task_ids=task_id)) for task_id in STARTERS}


def describe(local_aws: Any, arn: str) -> dict[str, Any]:
    return dict(local_aws.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=arn))


def pipeline_executions(local_aws: Any, pipeline: str) -> list[str]:
    summaries = local_aws.client("sagemaker").list_pipeline_executions(PipelineName=pipeline)
    return [s["PipelineExecutionArn"] for s in summaries["PipelineExecutionSummaries"]]


@pytest.fixture
def fast(local_aws: Any) -> Any:
    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(0.05)
    return local_aws


def test_anchor_operator_and_sensor_succeed_against_the_endpoint(fast: Any, dag_runner: Any) -> None:
    pipeline = create_pipeline(fast)
    run = dag_runner.run_dag(anchor_dag(pipeline))

    states = dag_runner.task_states(run)
    assert states == dict.fromkeys([*STARTERS, "sensor"], "success"), states
    assert str(run.state) == "success"
    executions = arns(run)
    assert len(set(executions.values())) == 3
    for task_id, arn in executions.items():
        assert arn.startswith(f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline}/execution/"), arn
        assert describe(fast, arn)["PipelineExecutionStatus"] == "Succeeded", task_id
    parameters = fast.client("sagemaker").list_pipeline_parameters_for_execution(
        PipelineExecutionArn=executions["start_sync"]
    )["PipelineParameters"]
    assert parameters == [{"Name": "InputData", "Value": "s3://bucket/sync"}]
    assert describe(fast, executions["start_deferred"])["PipelineExecutionDisplayName"] == "deferred"
    # Every SageMaker call the anchor made was served by the engine, none failed.
    calls = fast.controls.calls(service="sagemaker")
    assert {c["action"] for c in calls} >= {"StartPipelineExecution", "DescribePipelineExecution"}
    assert all(c["routed_to"] == "engine" and c["status"] == 200 for c in calls), calls


def test_anchor_tasks_fail_when_a_step_fails(fast: Any, dag_runner: Any) -> None:
    pipeline = create_pipeline(fast)
    fast.controls.set_step_behaviour(pipeline, "Train", fail="loss diverged")
    run = dag_runner.run_dag(anchor_dag(pipeline))

    states = dag_runner.task_states(run)
    assert states == {
        "start_sync": "failed",
        "start_deferred": "failed",
        "start": "success",
        "sensor": "failed",
    }
    assert str(run.state) == "failed"
    executions = pipeline_executions(fast, pipeline)  # a failed task pushes no ARN: ask the endpoint
    assert len(executions) == 3
    for arn in executions:
        final = describe(fast, arn)
        assert final["PipelineExecutionStatus"] == "Failed"
        assert "loss diverged" in final["FailureReason"]


@pytest.fixture
def stopper(fast: Any) -> Iterator[set[str]]:
    """Stops every Executing execution of the test's pipelines as soon as it appears; yields the ARNs
    stopped (the pipeline names to watch go into the same set, prefixed ``pipeline:``)."""
    sagemaker = fast.client("sagemaker")
    watched: set[str] = set()
    done = threading.Event()

    def loop() -> None:
        while not done.wait(0.05):
            for name in [w.removeprefix("pipeline:") for w in list(watched) if w.startswith("pipeline:")]:
                summaries = sagemaker.list_pipeline_executions(PipelineName=name)[
                    "PipelineExecutionSummaries"
                ]
                for summary in summaries:
                    arn = summary["PipelineExecutionArn"]
                    if summary["PipelineExecutionStatus"] == "Executing" and arn not in watched:
                        sagemaker.stop_pipeline_execution(PipelineExecutionArn=arn)
                        watched.add(arn)

    thread = threading.Thread(target=loop, name="stopper", daemon=True)
    thread.start()
    try:
        yield watched
    finally:
        done.set()
        thread.join(timeout=5)


def test_anchor_disagrees_with_itself_about_stopped(fast: Any, dag_runner: Any, stopper: set[str]) -> None:
    pipeline = create_pipeline(fast)
    fast.controls.set_step_behaviour(pipeline, "Prepare", duration=30)  # long enough to be stopped
    stopper.add(f"pipeline:{pipeline}")
    run = dag_runner.run_dag(anchor_dag(pipeline))

    executions = pipeline_executions(fast, pipeline)
    assert len(executions) == 3
    assert {describe(fast, arn)["PipelineExecutionStatus"] for arn in executions} == {"Stopped"}
    assert set(executions) <= stopper
    # The anchor's verdicts on the same outcome: a stopped execution is a success when the operator
    # waits synchronously (check_status fails only on "Failed") and for the sensor (failed_states =
    # {"Failed"}), but a failure when deferred (the PipelineExecutionComplete waiter treats "Stopped"
    # as a failure).
    assert dag_runner.task_states(run) == {
        "start_sync": "success",
        "start_deferred": "failed",
        "start": "success",
        "sensor": "success",
    }
