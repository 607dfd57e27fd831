"""callback_handler end to end: a pipeline with a Callback step, answered by an Airflow DAG.

Every test runs the handler DAG in-process with ``dag.test()`` against the local endpoint: the pipeline
is started by ``SageMakerPipelineOperator`` (or boto3), the handler's sensor claims the callback message,
the work runs, the answer reaches the engine, and the execution's later steps use the outputs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.callbacks import (
    FAST_SENSOR,
    VISIBILITY,
    accepted_answers,
    answer_calls,
    callback_pipeline,
    create_queue,
    dag,
    fast_endpoint,
    queue_counts,
    wait_status,
)

pytestmark = pytest.mark.integration

ARN_FROM_START = "{{ ti.xcom_pull(task_ids='start', key='pipeline_execution_arn') }}"


def start_operator(pipeline: str, **kwargs: Any) -> Any:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    return SageMakerPipelineOperator(
        task_id="start", pipeline_name=pipeline, wait_for_completion=False, poll_interval=0.1, **kwargs
    )


@pytest.mark.parametrize("mode", ["deferrable", "poke", "reschedule"])
def test_taskflow_work_answers_with_outputs_the_condition_uses(
    local_aws: Any, dag_runner: Any, mode: str
) -> None:
    from airflow.sdk import task
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    seen: list[dict[str, Any]] = []

    @task
    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        seen.append(arguments)
        return {"passed": True, "rows": 42}

    sensor: dict[str, Any] = dict(FAST_SENSOR)
    if mode == "deferrable":
        sensor["deferrable"] = True
    else:
        sensor.update(deferrable=False, mode=mode)
    with dag() as d:
        begin = start_operator(pipeline)
        handler = callback_handler(
            "validate",
            queue,
            pipeline_execution_arn=ARN_FROM_START,
            work=validate,
            visibility_timeout=VISIBILITY,
            sensor_kwargs=sensor,
        )
        begin >> handler
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states == {
        "start": "success",
        "validate.wait": "success",
        "validate.validate": "success",
        "validate.answer": "success",
        "validate.answer_failure": "skipped",
    }, states
    arn = run.get_task_instance("start").xcom_pull(task_ids="start", key="pipeline_execution_arn")
    final = wait_status(local_aws, arn, "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Succeeded", final
    assert seen and seen[0]["dataset"] == "s3://bucket/data"
    answers = accepted_answers(local_aws)
    assert [a["action"] for a in answers] == ["SendPipelineExecutionStepSuccess"]
    assert queue_counts(local_aws, queue) == (0, 0)
    assert len(answer_calls(local_aws)) == 1


@pytest.fixture(autouse=True)
def _stop_leases() -> Any:
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def handler(work: Any = None, **kwargs: Any) -> Any:
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    kwargs.setdefault("visibility_timeout", VISIBILITY)
    kwargs.setdefault("sensor_kwargs", {**FAST_SENSOR, "deferrable": True})
    return callback_handler("validate", work=work, **kwargs)


def execution_arn(run: Any) -> str:
    return str(run.get_task_instance("start").xcom_pull(task_ids="start", key="pipeline_execution_arn"))


@pytest.mark.parametrize("failure", ["raises", "times_out"])
def test_failed_or_timed_out_work_answers_failure_naming_the_task(
    local_aws: Any, dag_runner: Any, failure: str
) -> None:
    import datetime as dt
    import time

    from airflow.sdk import task

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)

    @task(execution_timeout=dt.timedelta(seconds=1))
    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        if failure == "raises":
            raise ValueError("the model is broken")
        time.sleep(5)
        return {"passed": True}

    with dag() as d:
        start_operator(pipeline) >> handler(validate, queue_url=queue, pipeline_execution_arn=ARN_FROM_START)
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states["validate.validate"] == "failed", states
    assert states["validate.answer"] == "upstream_failed", states
    assert states["validate.answer_failure"] == "failed", states
    assert run.state == "failed"
    final = wait_status(local_aws, execution_arn(run), "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Failed"
    assert "validate.validate" in final["FailureReason"], final["FailureReason"]
    answers = accepted_answers(local_aws)
    assert [a["action"] for a in answers] == ["SendPipelineExecutionStepFailure"]
    assert len(answers[0]["args"]["FailureReason"]) <= 256
    assert queue_counts(local_aws, queue) == (0, 0)


def test_sensor_timeout_without_message_fails_the_run_and_answers_nothing(
    local_aws: Any, dag_runner: Any
) -> None:
    from airflow.sdk import task

    queue = create_queue(local_aws)

    @task
    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("must not run")

    with dag() as d:
        handler(
            validate,
            queue_url=queue,
            pipeline_name="nothing-sends-here",
            sensor_kwargs={**FAST_SENSOR, "deferrable": True, "timeout": 2},
        )
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states["validate.wait"] == "failed", states
    assert states["validate.answer_failure"] == "failed", states
    assert run.state == "failed"
    assert answer_calls(local_aws) == []


def test_template_payloads_in_arguments_are_data_never_rendered(
    local_aws: Any, dag_runner: Any, caplog: Any
) -> None:
    """Arguments are untrusted: ``{{ ... }}`` reaches the work verbatim, large values never fill the logs."""
    from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
    from airflow.sdk import task

    from tests.support.callbacks import create_glue_job

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    big = "x" * 20_000
    payloads = {
        "jinja": "{{ 7 * 7 }}",
        "secret": "{{ conn.aws_default.password }}",
        "code": "{% for i in range(3) %}{{ i }}{% endfor %}",
        "big": big,
    }
    pipeline = callback_pipeline(local_aws, queue, arguments=payloads)
    job = create_glue_job(local_aws)
    seen: dict[str, Any] = {}

    @task
    def inspect(arguments: dict[str, Any]) -> dict[str, Any]:
        seen.update(arguments)
        return {"passed": True, "rows": len(arguments["big"])}

    def work(args: Any) -> Any:
        glue = GlueJobOperator(
            task_id="glue",
            job_name=job,
            script_args={"--jinja": args.template("jinja"), "--code": args.template("code")},
            wait_for_completion=True,
            job_poll_interval=0.1,
        )
        return glue >> inspect(args.xcom)

    with dag() as d:
        start_operator(pipeline) >> handler(work, queue_url=queue, pipeline_execution_arn=ARN_FROM_START)
    caplog.set_level("INFO")
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states["validate.answer"] == "success", states
    assert seen["jinja"] == "{{ 7 * 7 }}"
    assert seen["secret"] == "{{ conn.aws_default.password }}"
    assert seen["code"] == payloads["code"]
    assert seen["big"] == big
    runs = local_aws.client("glue").get_job_runs(JobName=job)["JobRuns"]
    assert runs[0]["Arguments"]["--jinja"] == "{{ 7 * 7 }}"
    assert runs[0]["Arguments"]["--code"] == payloads["code"]
    assert "49" not in runs[0]["Arguments"]["--jinja"]
    assert big not in caplog.text, "a 20 kB argument was logged in full"
    final = wait_status(local_aws, execution_arn(run), "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Succeeded", final.get("FailureReason")


def test_routing_by_pipeline_name_and_match_arguments(local_aws: Any, dag_runner: Any) -> None:
    """Two handlers on one queue for one pipeline, told apart by an argument: each takes its own."""
    from airflow.sdk import task

    from tests.support.callbacks import start, waiting_token

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn_a = start(local_aws, pipeline, Dataset="s3://bucket/a")
    arn_b = start(local_aws, pipeline, Dataset="s3://bucket/b")
    token_a, token_b = waiting_token(local_aws, arn_a), waiting_token(local_aws, arn_b)
    got: dict[str, str] = {}

    def make(name: str) -> Any:
        @task(task_id=f"work_{name}")
        def work(arguments: dict[str, Any]) -> dict[str, Any]:
            got[name] = arguments["dataset"]
            return {"passed": name == "a", "rows": 1}

        return work

    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    with dag() as d:
        for name in ("b", "a"):  # b's handler first: it must skip a's message
            callback_handler(
                f"h_{name}",
                queue,
                pipeline_name=pipeline,
                match_arguments={"dataset": f"s3://bucket/{name}"},
                work=make(name),
                visibility_timeout=VISIBILITY,
                sensor_kwargs={**FAST_SENSOR, "deferrable": True},
            )
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    assert got == {"a": "s3://bucket/a", "b": "s3://bucket/b"}
    assert wait_status(local_aws, arn_a, "Succeeded", "Failed")["PipelineExecutionStatus"] == "Succeeded"
    assert wait_status(local_aws, arn_b, "Succeeded", "Failed")["PipelineExecutionStatus"] == "Failed"
    assert len(answer_calls(local_aws, token_a)) == 1
    assert len(answer_calls(local_aws, token_b)) == 1
    assert queue_counts(local_aws, queue) == (0, 0)
