"""callback_handler with the Amazon provider's operators as the work: GlueJobOperator, EcsRunTaskOperator.

Acceptance: the pipeline (started by SageMakerPipelineOperator) waits in a Callback step; the handler
runs a Glue job (or an ECS task) and answers with outputs that the pipeline's Condition step uses; when
the job fails (the task exits non-zero) the token is answered with a failure naming the task, and the
execution fails with that reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.callbacks import (
    FAST_SENSOR,
    VISIBILITY,
    accepted_answers,
    callback_pipeline,
    create_ecs_task,
    create_glue_job,
    create_queue,
    dag,
    ecs_containers_stop,
    fast_endpoint,
    job_outcome_control,
    queue_counts,
    wait_status,
)

pytestmark = pytest.mark.integration

ARN_FROM_START = "{{ ti.xcom_pull(task_ids='start', key='pipeline_execution_arn') }}"


@pytest.fixture(autouse=True)
def _stop_leases() -> Any:
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def start_operator(pipeline: str) -> Any:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    return SageMakerPipelineOperator(
        task_id="start", pipeline_name=pipeline, wait_for_completion=False, poll_interval=0.1
    )


def glue_work(job_name: str) -> Any:
    from airflow.providers.amazon.aws.operators.glue import GlueJobOperator

    def build(args: Any) -> Any:
        return GlueJobOperator(
            task_id="glue",
            job_name=job_name,
            script_args={"--dataset": args.template("dataset")},
            wait_for_completion=True,
            job_poll_interval=0.1,
            verbose=False,
        )

    return build


def ecs_work(cluster: str, family: str) -> Any:
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

    def build(args: Any) -> Any:
        return EcsRunTaskOperator(
            task_id="ecs",
            cluster=cluster,
            task_definition=family,
            launch_type="FARGATE",
            overrides={
                "containerOverrides": [
                    {"name": "validate", "command": ["validate", args.template("dataset")]}
                ]
            },
            wait_for_completion=True,
            waiter_delay=1,
            waiter_max_attempts=30,
            awslogs_group=None,
        )

    return build


def handler_dag(local_aws: Any, pipeline: str, queue: str, work: Any, outputs: Any) -> Any:
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    with dag() as d:
        begin = start_operator(pipeline)
        group = callback_handler(
            "validate",
            queue,
            pipeline_execution_arn=ARN_FROM_START,
            work=work,
            outputs=outputs,
            visibility_timeout=VISIBILITY,
            sensor_kwargs={**FAST_SENSOR, "deferrable": True},
        )
        begin >> group
    return d


def execution_arn(run: Any) -> str:
    return str(run.get_task_instance("start").xcom_pull(task_ids="start", key="pipeline_execution_arn"))


@pytest.mark.parametrize("service", ["glue", "ecs"])
def test_work_succeeds_outputs_reach_the_condition(local_aws: Any, dag_runner: Any, service: str) -> None:
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    if service == "glue":
        work, work_id = glue_work(create_glue_job(local_aws)), "validate.glue"
        outputs = {"passed": True, "rows": 42, "run_id": "{{ ti.xcom_pull(task_ids='validate.glue') }}"}
    else:
        if not ecs_containers_stop(local_aws):
            pytest.skip(
                "moto's ECS containers stay lastStatus PENDING after their task stops, so "
                "EcsRunTaskOperator reports 'task is still pending': needs the local endpoint to stop them"
            )
        work, work_id = ecs_work(*create_ecs_task(local_aws)), "validate.ecs"
        outputs = {"passed": True, "rows": 7}
    run = dag_runner.run_dag(handler_dag(local_aws, pipeline, queue, work, outputs))
    states = dag_runner.task_states(run)
    assert states[work_id] == "success", states
    assert states["validate.answer"] == "success", states
    final = wait_status(local_aws, execution_arn(run), "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Succeeded", final
    steps = local_aws.client("sagemaker").list_pipeline_execution_steps(
        PipelineExecutionArn=execution_arn(run)
    )
    by_name = {s["StepName"]: s for s in steps["PipelineExecutionSteps"]}
    assert by_name["Check"]["Metadata"]["Condition"]["Outcome"] == "True"
    assert "Register" in by_name and "Rejected" not in by_name
    outputs_sent = {
        p["Name"]: p["Value"] for p in by_name["Validate"]["Metadata"]["Callback"]["OutputParameters"]
    }
    assert outputs_sent["passed"] == "true" and outputs_sent["rows"] in ("42", "7")
    assert [a["action"] for a in accepted_answers(local_aws)] == ["SendPipelineExecutionStepSuccess"]
    assert queue_counts(local_aws, queue) == (0, 0)


@pytest.mark.parametrize("service", ["glue", "ecs"])
def test_work_fails_token_answered_with_failure_naming_the_task(
    local_aws: Any, dag_runner: Any, service: str
) -> None:
    control = job_outcome_control(local_aws)
    if control is None:
        pytest.skip(
            "the local endpoint has no controls.set_job_outcome(service, name, fail=, exit_code=): "
            "moto's Glue job runs always succeed and its ECS tasks always exit 0"
        )
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    if service == "glue":
        job = create_glue_job(local_aws)
        control("glue", job, fail="Glue job failed: bad input")
        work, work_id = glue_work(job), "validate.glue"
    else:
        cluster, family = create_ecs_task(local_aws)
        control("ecs", family, exit_code=3)
        work, work_id = ecs_work(cluster, family), "validate.ecs"
    run = dag_runner.run_dag(handler_dag(local_aws, pipeline, queue, work, {"passed": True, "rows": 1}))
    states = dag_runner.task_states(run)
    assert states[work_id] == "failed", states
    assert states["validate.answer"] == "upstream_failed", states
    assert states["validate.answer_failure"] == "failed", states  # answered, then shows the failure
    assert run.state == "failed"
    final = wait_status(local_aws, execution_arn(run), "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Failed", final
    assert work_id in final.get("FailureReason", ""), final
    answers = accepted_answers(local_aws)
    assert [a["action"] for a in answers] == ["SendPipelineExecutionStepFailure"]
    assert work_id in answers[0]["args"]["FailureReason"]
    assert queue_counts(local_aws, queue) == (0, 0)
