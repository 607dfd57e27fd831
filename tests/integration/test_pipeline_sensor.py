"""SageMakerPipelineExecutionSensor in Airflow DAG tests against the local endpoint.

The execution is started "elsewhere" (plain boto3 in an upstream task); the sensor gets its ARN through
a template, in poke, reschedule and deferrable modes, and applies the same status policy and result as
the operator.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.pipelines import (
    POLL,
    Failures,
    calls,
    create_pipeline,
    dag,
    executions,
    fast_endpoint,
    processing_step,
    xcom,
)

pytestmark = pytest.mark.integration

MODES: dict[str, dict[str, Any]] = {
    "poke": {"mode": "poke"},
    "reschedule": {"mode": "reschedule"},
    "deferrable": {"deferrable": True},
}


def build(pipeline: str, failures: Failures | None = None, **sensor_kwargs: Any) -> Any:
    from airflow.sdk import task
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    with dag() as d:

        @task
        def start_elsewhere() -> str:
            import boto3

            sagemaker = boto3.client("sagemaker", region_name="us-east-1")
            return str(sagemaker.start_pipeline_execution(PipelineName=pipeline)["PipelineExecutionArn"])  # type: ignore[call-arg]

        start_elsewhere() >> SageMakerPipelineExecutionSensor(
            task_id="watch",
            pipeline_execution_arn="{{ ti.xcom_pull(task_ids='start_elsewhere') }}",
            poke_interval=POLL if sensor_kwargs.get("mode") != "reschedule" else 1,
            timeout=60,
            on_failure_callback=failures,
            **sensor_kwargs,
        )
    return d


@pytest.mark.parametrize("mode", list(MODES))
def test_waits_for_an_execution_started_elsewhere_and_returns_its_result(
    local_aws: Any, dag_runner: Any, mode: str
) -> None:
    fast_endpoint(local_aws, step_seconds=0.6)
    pipeline = create_pipeline(
        local_aws, parameters=[], steps=[processing_step("Prep"), processing_step("Fit", ["Prep"])]
    )
    run = dag_runner.run_dag(build(pipeline, **MODES[mode]))  # type: ignore[arg-type]
    assert dag_runner.task_states(run) == {"start_elsewhere": "success", "watch": "success"}
    (execution,) = executions(local_aws, pipeline)
    result = xcom(run, "watch")
    assert result["pipeline_execution_arn"] == execution["PipelineExecutionArn"]
    assert result["status"] == "Succeeded"
    assert {name: step["status"] for name, step in result["steps"].items()} == {
        "Prep": "Succeeded",
        "Fit": "Succeeded",
    }
    assert result["steps"]["Fit"]["type"] == "Processing"
    assert xcom(run, "watch", key="pipeline_execution_arn") == execution["PipelineExecutionArn"]
    assert calls(local_aws, "StopPipelineExecution") == []


@pytest.mark.parametrize("mode", list(MODES))
def test_a_failed_execution_fails_the_sensor_naming_the_step(
    local_aws: Any, dag_runner: Any, mode: str
) -> None:
    fast_endpoint(local_aws)
    pipeline = create_pipeline(
        local_aws, parameters=[], steps=[processing_step("Prep"), processing_step("Fit", ["Prep"])]
    )
    local_aws.controls.set_step_behaviour(pipeline, "Fit", fail="bad data")
    failures = Failures()
    run = dag_runner.run_dag(build(pipeline, failures, **MODES[mode]))  # type: ignore[arg-type]
    assert dag_runner.task_states(run) == {"start_elsewhere": "success", "watch": "failed"}
    (message,) = failures.messages
    assert "ended Failed" in message
    assert "Fit (Processing): bad data" in message


@pytest.mark.parametrize("allow_stopped", [False, True])
def test_stopped_fails_unless_allowed(local_aws: Any, dag_runner: Any, allow_stopped: bool) -> None:
    fast_endpoint(local_aws, step_seconds=0.3)
    pipeline = create_pipeline(
        local_aws, parameters=[], steps=[processing_step("Prep"), processing_step("Fit", ["Prep"])]
    )
    sagemaker = local_aws.client("sagemaker")
    arn = sagemaker.start_pipeline_execution(PipelineName=pipeline)["PipelineExecutionArn"]
    sagemaker.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="x" * 40)
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    with dag() as d:
        SageMakerPipelineExecutionSensor(
            task_id="watch", pipeline_execution_arn=arn, poke_interval=POLL, allow_stopped=allow_stopped
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"watch": "success" if allow_stopped else "failed"}
