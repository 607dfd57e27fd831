"""The seeded ECS cluster ``ml`` runs tasks with the default launch type (EC2) as well as FARGATE.

moto places EC2 tasks on container instances and gives their capacity back only on ``StopTask``; the
seed registers one container instance and the endpoint frees a task's capacity when the task stops by
itself, so the instance never fills up. Plain boto3 over HTTP, then the Amazon provider's
``EcsRunTaskOperator`` with its default launch type in an in-process DAG run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.seed import ECS_CLUSTER, TASK_FAMILY

pytestmark = pytest.mark.integration

#: More tasks than the seeded instance holds at once (moto: 7482 MiB; the task definition: 512 MiB).
TASKS_IN_A_ROW = 20


def run_to_the_end(ecs: Any, **launch: Any) -> dict[str, Any]:
    """RunTask on the seeded cluster, then DescribeTasks until STOPPED (the 4th read, moto's pace)."""
    response = ecs.run_task(cluster=ECS_CLUSTER, taskDefinition=TASK_FAMILY, **launch)
    assert response["failures"] == [] and len(response["tasks"]) == 1, response
    arn = response["tasks"][0]["taskArn"]
    for _ in range(10):
        (task,) = ecs.describe_tasks(cluster=ECS_CLUSTER, tasks=[arn])["tasks"]
        if task["lastStatus"] == "STOPPED":
            return dict(task)
    raise AssertionError(f"task {arn} did not stop after 10 reads: {task['lastStatus']}")


def test_seed_registers_a_container_instance(local_aws: Any) -> None:
    seeded = local_aws.seed()
    ecs = local_aws.client("ecs")
    assert ecs.list_container_instances(cluster=ECS_CLUSTER)["containerInstanceArns"] == [
        seeded["container_instance_arn"]
    ]
    assert local_aws.seed()["container_instance_arn"] == seeded["container_instance_arn"]  # idempotent


def test_default_launch_type_runs_task_after_task(local_aws: Any) -> None:
    local_aws.seed()
    ecs = local_aws.client("ecs")
    for _ in range(TASKS_IN_A_ROW):
        task = run_to_the_end(ecs)
        assert task["containerInstanceArn"], task  # placed on the seeded instance
        assert task["containers"][0]["exitCode"] == 0
    (instance_arn,) = ecs.list_container_instances(cluster=ECS_CLUSTER)["containerInstanceArns"]
    (instance,) = ecs.describe_container_instances(cluster=ECS_CLUSTER, containerInstances=[instance_arn])[
        "containerInstances"
    ]
    remaining = {r["name"]: r.get("integerValue") for r in instance["remainingResources"]}
    registered = {r["name"]: r.get("integerValue") for r in instance["registeredResources"]}
    assert remaining["CPU"] == registered["CPU"] and remaining["MEMORY"] == registered["MEMORY"], instance


def test_explicit_launch_types_run(local_aws: Any) -> None:
    local_aws.seed()
    ecs = local_aws.client("ecs")
    for launch_type in ("EC2", "FARGATE"):
        assert run_to_the_end(ecs, launchType=launch_type)["containers"][0]["exitCode"] == 0


def test_ecs_run_task_operator_with_its_default_launch_type(local_aws: Any, dag_runner: Any) -> None:
    from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
    from airflow.sdk import DAG

    local_aws.seed()
    with DAG("ecs_default_launch_type", schedule=None, start_date=dt.datetime(2026, 1, 1)) as dag:
        EcsRunTaskOperator(
            task_id="validate",
            cluster=ECS_CLUSTER,
            task_definition=TASK_FAMILY,
            overrides={},
            waiter_delay=1,
            waiter_max_attempts=20,
            awslogs_group=None,
        )
    run = dag_runner.run_dag(dag, logical_date=None)
    assert run.state == "success", dag_runner.task_states(run)
    (task,) = local_aws.client("ecs").describe_tasks(
        cluster=ECS_CLUSTER, tasks=local_aws.client("ecs").list_tasks(cluster=ECS_CLUSTER)["taskArns"]
    )["tasks"]
    assert task["launchType"] == "EC2", task
