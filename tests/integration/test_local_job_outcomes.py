"""Glue job runs and ECS tasks that fail on the local endpoint: ``LocalControls.set_job_outcome``.

moto's Glue runs always succeed and its ECS tasks always exit 0 (with containers stuck ``PENDING``);
the endpoint rewrites moto's answers (:mod:`sagemaker_pipelines_provider.local.server.job_outcomes`). Plain
boto3 over HTTP, then the Amazon provider's own ``GlueJobOperator`` and ``EcsRunTaskOperator`` in an
in-process DAG run.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.controls import LocalControlError
from sagemaker_pipelines_provider.local.server.job_outcomes import DEFAULT_JOB_FAILURE, USER_STOP_EXIT_CODE

pytestmark = pytest.mark.integration

ROLE_ARN = "arn:aws:iam::123456789012:role/JobRole"
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def glue_job(local_aws: Any) -> str:
    name = unique("job")
    local_aws.client("glue").create_job(
        Name=name, Role=ROLE_ARN, Command={"Name": "glueetl", "ScriptLocation": "s3://bucket/job.py"}
    )
    return name


def run_glue(local_aws: Any, job: str) -> dict[str, Any]:
    """Start a run and read it once (moto's runs are terminal at the first read)."""
    glue = local_aws.client("glue")
    run_id = glue.start_job_run(JobName=job)["JobRunId"]
    return dict(glue.get_job_run(JobName=job, RunId=run_id)["JobRun"])


def ecs_family(local_aws: Any) -> tuple[str, str]:
    """(cluster, family); ``bridge`` networking because moto cannot build ``awsvpc`` tasks' interfaces."""
    ecs = local_aws.client("ecs")
    cluster, family = unique("cluster"), unique("family")
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=family,
        networkMode="bridge",
        containerDefinitions=[
            {"name": "main", "image": "python:3.11-slim", "essential": True, "memory": 256}
        ],
    )
    return cluster, family


def run_ecs(local_aws: Any, cluster: str, family: str) -> str:
    response = local_aws.client("ecs").run_task(cluster=cluster, taskDefinition=family, launchType="FARGATE")
    return str(response["tasks"][0]["taskArn"])


def describe_task(local_aws: Any, cluster: str, arn: str) -> dict[str, Any]:
    return dict(local_aws.client("ecs").describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0])


def stopped_task(local_aws: Any, cluster: str, arn: str) -> dict[str, Any]:
    """DescribeTasks until STOPPED (moto moves one state per call: the 4th call answers STOPPED)."""
    seen = []
    for _ in range(4):
        task = describe_task(local_aws, cluster, arn)
        seen.append(task["lastStatus"])
        if task["lastStatus"] == "STOPPED":
            return task
    raise AssertionError(f"task {arn} not STOPPED after 4 DescribeTasks: {seen}")


# ------------------------------------------------------------------------------------------------------
# Glue


def test_glue_run_fails_with_the_message_only_for_the_configured_job(local_aws: Any) -> None:
    failing, other = glue_job(local_aws), glue_job(local_aws)
    assert run_glue(local_aws, failing)["JobRunState"] == "SUCCEEDED"  # normal before the control

    local_aws.controls.set_job_outcome("glue", failing, fail="bad input: column 'x' missing")

    run = run_glue(local_aws, failing)
    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"] == "bad input: column 'x' missing"
    assert "ErrorMessage" not in run_glue(local_aws, other)
    assert run_glue(local_aws, other)["JobRunState"] == "SUCCEEDED"
    # GetJobRuns agrees with GetJobRun, and repeated reads are stable.
    glue = local_aws.client("glue")
    states = {r["Id"]: r["JobRunState"] for r in glue.get_job_runs(JobName=failing)["JobRuns"]}
    assert sorted(states.values()) == ["FAILED", "SUCCEEDED"]
    assert states[run["Id"]] == "FAILED"
    again = glue.get_job_run(JobName=failing, RunId=run["Id"])["JobRun"]
    assert (again["JobRunState"], again["ErrorMessage"]) == ("FAILED", "bad input: column 'x' missing")


def test_glue_fail_runs_fails_the_first_run_then_succeeds(local_aws: Any) -> None:
    job = glue_job(local_aws)
    local_aws.controls.set_job_outcome("glue", job, fail_runs=1)
    glue = local_aws.client("glue")
    # Decided at start, in start order: the second run read first still succeeds.
    first = glue.start_job_run(JobName=job)["JobRunId"]
    second = glue.start_job_run(JobName=job)["JobRunId"]
    assert glue.get_job_run(JobName=job, RunId=second)["JobRun"]["JobRunState"] == "SUCCEEDED"
    first_run = glue.get_job_run(JobName=job, RunId=first)["JobRun"]
    assert (first_run["JobRunState"], first_run["ErrorMessage"]) == ("FAILED", DEFAULT_JOB_FAILURE)
    assert local_aws.controls.job_outcomes() == [
        {
            "service": "glue",
            "name": job,
            "fail": DEFAULT_JOB_FAILURE,
            "exit_code": 1,
            "fail_runs": 1,
            "failed": 1,
            "remaining": 0,
        }
    ]


def test_glue_clearing_affects_later_runs_only(local_aws: Any) -> None:
    job = glue_job(local_aws)
    local_aws.controls.set_job_outcome("glue", job, fail="boom")
    glue = local_aws.client("glue")
    failed = glue.start_job_run(JobName=job)["JobRunId"]
    local_aws.controls.set_job_outcome("glue", job, fail=None)
    assert local_aws.controls.job_outcomes() == []
    assert run_glue(local_aws, job)["JobRunState"] == "SUCCEEDED"
    assert glue.get_job_run(JobName=job, RunId=failed)["JobRun"]["JobRunState"] == "FAILED"  # stays

    local_aws.controls.set_job_outcome("glue", job, fail="boom")
    local_aws.controls.clear_job_outcomes()
    assert run_glue(local_aws, job)["JobRunState"] == "SUCCEEDED"


# ------------------------------------------------------------------------------------------------------
# ECS


def test_ecs_task_stops_with_containers_stopped_and_exit_code_0(local_aws: Any) -> None:
    cluster, family = ecs_family(local_aws)
    arn = run_ecs(local_aws, cluster, family)
    running = describe_task(local_aws, cluster, arn)
    assert running["containers"][0]["lastStatus"] == "RUNNING"  # moto says PENDING
    assert "exitCode" not in running["containers"][0]
    task = stopped_task(local_aws, cluster, arn)
    assert task["desiredStatus"] == "STOPPED"
    assert [(c["lastStatus"], c["exitCode"]) for c in task["containers"]] == [("STOPPED", 0)]
    assert (task["stopCode"], task["stoppedReason"]) == (
        "EssentialContainerExited",
        "Essential container in task exited",
    )


def test_ecs_task_exits_non_zero_with_the_reason(local_aws: Any) -> None:
    cluster, family = ecs_family(local_aws)
    local_aws.controls.set_job_outcome(
        "ecs", family, fail="OutOfMemoryError: container killed", exit_code=137
    )
    arn = run_ecs(local_aws, cluster, family)
    task = stopped_task(local_aws, cluster, arn)
    assert [(c["lastStatus"], c["exitCode"]) for c in task["containers"]] == [("STOPPED", 137)]
    assert task["stoppedReason"] == "OutOfMemoryError: container killed"
    assert task["stopCode"] == "EssentialContainerExited"
    assert describe_task(local_aws, cluster, arn)["containers"][0]["exitCode"] == 137  # stable


def test_ecs_fail_runs_then_normal_and_stop_task_is_user_initiated(local_aws: Any) -> None:
    cluster, family = ecs_family(local_aws)
    local_aws.controls.set_job_outcome("ecs", family, exit_code=3, fail_runs=1)
    first, second = run_ecs(local_aws, cluster, family), run_ecs(local_aws, cluster, family)
    assert stopped_task(local_aws, cluster, first)["containers"][0]["exitCode"] == 3
    assert stopped_task(local_aws, cluster, second)["containers"][0]["exitCode"] == 0

    third = run_ecs(local_aws, cluster, family)
    stopped = local_aws.client("ecs").stop_task(cluster=cluster, task=third, reason="cancelled by Airflow")[
        "task"
    ]
    assert (stopped["lastStatus"], stopped["stopCode"], stopped["stoppedReason"]) == (
        "STOPPED",
        "UserInitiated",
        "cancelled by Airflow",
    )
    assert describe_task(local_aws, cluster, third)["containers"][0]["exitCode"] == USER_STOP_EXIT_CODE


# ------------------------------------------------------------------------------------------------------
# Control API


def test_reset_clears_rules_and_bad_input_is_rejected(local_aws: Any) -> None:
    job = glue_job(local_aws)
    local_aws.controls.set_job_outcome("glue", job, fail="boom")
    local_aws.controls.reset()
    assert local_aws.controls.job_outcomes() == []
    job = glue_job(local_aws)  # the reset forgot moto's job too
    assert run_glue(local_aws, job)["JobRunState"] == "SUCCEEDED"

    for kwargs, message in (
        ({"service": "batch", "name": "x"}, "service must be one of ['glue', 'ecs']"),
        ({"service": "ecs", "name": "x", "exit_code": 0}, "exit_code must be a non-zero integer"),
        ({"service": "glue", "name": "x", "fail_runs": 0}, "fail_runs must be an integer >= 1"),
        ({"service": "glue", "name": "x", "fail": ""}, "fail must be a non-empty failure reason"),
    ):
        with pytest.raises(LocalControlError) as excinfo:
            local_aws.controls.set_job_outcome(**kwargs)
        assert excinfo.value.status == 400 and message in excinfo.value.message


# ------------------------------------------------------------------------------------------------------
# The Amazon provider's operators, unchanged


def test_amazon_glue_and_ecs_operators_see_failures_and_successes(local_aws: Any, dag_runner: Any) -> None:
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
    from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
    from airflow.sdk import DAG

    job = glue_job(local_aws)
    cluster, family = ecs_family(local_aws)
    failing_cluster, failing_family = ecs_family(local_aws)
    local_aws.controls.set_job_outcome("glue", job, fail="bad input", fail_runs=1)
    local_aws.controls.set_job_outcome("ecs", failing_family, fail="validation failed", exit_code=3)

    def ecs_task(task_id: str, cluster: str, family: str) -> Any:
        return EcsRunTaskOperator(
            task_id=task_id,
            cluster=cluster,
            task_definition=family,
            launch_type="FARGATE",
            overrides={},
            waiter_delay=0.2,  # type: ignore[arg-type]  # botocore's waiter sleeps any number
            waiter_max_attempts=20,
        )

    with DAG(unique("job-outcomes"), schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) as dag:
        GlueJobOperator(
            task_id="glue",
            job_name=job,
            wait_for_completion=True,
            job_poll_interval=0.1,
            verbose=False,
            retries=1,
            retry_delay=dt.timedelta(0),
        )
        ecs_task("ecs_ok", cluster, family)
        ecs_task("ecs_fails", failing_cluster, failing_family)

    run = dag_runner.run_dag(dag)
    states = dag_runner.task_states(run)
    assert states == {"glue": "success", "ecs_ok": "success", "ecs_fails": "failed"}, states
    runs = local_aws.client("glue").get_job_runs(JobName=job)["JobRuns"]
    assert sorted(r["JobRunState"] for r in runs) == ["FAILED", "SUCCEEDED"]  # try 1 failed, try 2 ran
