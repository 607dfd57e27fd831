"""Helpers of the callback integration tests.

Everything runs against the local endpoint (``local_aws`` fixture): pipelines with a Callback step are
created with plain boto3, executions are started by ``SageMakerPipelineOperator`` (or boto3), and handler
DAGs run in-process with ``dag.test()`` (``dag_runner``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from tests.support.endpoint import ROLE_ARN, START_DATE, create_queue, fast_endpoint, unique
from tests.support.waiting import wait_until

__all__ = ["create_queue", "fast_endpoint", "wait_until"]

#: Short SQS settings so that tests take seconds: long polls of 1 s, messages back 3 s after a crash.
FAST_SENSOR = {"wait_time_seconds": 1, "inspect_visibility_timeout": 5, "timeout": 60, "poke_interval": 0.2}
VISIBILITY = 3


def callback_pipeline(
    local_aws: Any,
    queue_url: str,
    *,
    name: str | None = None,
    arguments: dict[str, Any] | None = None,
    outputs: Iterable[tuple[str, str]] = (("passed", "Boolean"), ("rows", "Integer")),
    condition_on: str | None = "passed",
) -> str:
    """Create a pipeline: Prepare -> Callback ``Validate`` -> Condition on its output (if given).

    The Condition takes the ``Register`` branch when ``OutputParameters[condition_on]`` is true, else the
    Fail step ``Rejected`` ("validation rejected").
    """
    name = name or unique("cbpipe")
    steps: list[dict[str, Any]] = [
        {"Name": "Prepare", "Type": "Processing", "Arguments": {"Input": {"Get": "Parameters.Dataset"}}},
        {
            "Name": "Validate",
            "Type": "Callback",
            "DependsOn": ["Prepare"],
            "Arguments": arguments
            if arguments is not None
            else {
                "dataset": {"Get": "Parameters.Dataset"},
                "execution": {"Get": "Execution.PipelineExecutionId"},
            },
            "SqsQueueUrl": queue_url,
            "OutputParameters": [{"OutputName": n, "OutputType": t} for n, t in outputs],
        },
    ]
    if condition_on:
        steps.append(
            {
                "Name": "Check",
                "Type": "Condition",
                "Arguments": {
                    "Conditions": [
                        {
                            "Type": "Equals",
                            "LeftValue": {"Get": f"Steps.Validate.OutputParameters['{condition_on}']"},
                            "RightValue": True,
                        }
                    ],
                    "IfSteps": [{"Name": "Register", "Type": "Processing", "Arguments": {}}],
                    "ElseSteps": [
                        {
                            "Name": "Rejected",
                            "Type": "Fail",
                            "Arguments": {"ErrorMessage": "validation rejected"},
                        }
                    ],
                },
            }
        )
    definition = {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "Dataset", "Type": "String", "DefaultValue": "s3://bucket/data"}],
        "Steps": steps,
    }
    local_aws.client("sagemaker").create_pipeline(
        PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN
    )
    return name


def start(local_aws: Any, pipeline: str, **parameters: str) -> str:
    """Start an execution with plain boto3; return its ARN."""
    response = local_aws.client("sagemaker").start_pipeline_execution(
        PipelineName=pipeline,
        PipelineParameters=[{"Name": k, "Value": v} for k, v in parameters.items()],
        ClientRequestToken=unique("token-padding-to-32-characters-minimum"),
    )
    return str(response["PipelineExecutionArn"])


def describe(local_aws: Any, arn: str) -> dict[str, Any]:
    return dict(local_aws.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=arn))


def wait_status(local_aws: Any, arn: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the execution is in one of ``statuses``; return DescribePipelineExecution."""
    return wait_until(
        lambda: d if (d := describe(local_aws, arn))["PipelineExecutionStatus"] in statuses else None,
        timeout=timeout,
        what=f"{arn} to be {'/'.join(statuses)}",
    )


def callback_steps(local_aws: Any, arn: str) -> list[dict[str, Any]]:
    steps = local_aws.client("sagemaker").list_pipeline_execution_steps(PipelineExecutionArn=arn)
    return [s for s in steps["PipelineExecutionSteps"] if "Callback" in (s.get("Metadata") or {})]


def waiting_token(local_aws: Any, arn: str, timeout: float = 30.0) -> str:
    """The token of the execution's waiting callback step, once its message was sent."""

    def find() -> str | None:
        for step in callback_steps(local_aws, arn):
            token = step["Metadata"]["Callback"].get("CallbackToken")
            if token and step["StepStatus"] in ("Executing", "Stopping"):
                return str(token)
        return None

    return wait_until(find, timeout=timeout, what=f"a waiting callback of {arn}")


def queue_counts(local_aws: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attributes = local_aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def answer_calls(local_aws: Any, token: str | None = None) -> list[dict[str, Any]]:
    """Recorded SendPipelineExecutionStep{Success,Failure} calls (for ``token`` if given), oldest first."""
    found = [
        *local_aws.controls.calls(action="SendPipelineExecutionStepSuccess"),
        *local_aws.controls.calls(action="SendPipelineExecutionStepFailure"),
    ]
    found.sort(key=lambda c: c["seq"])
    if token is None:
        return found
    return [c for c in found if json.dumps(c.get("args") or {}).find(token) >= 0]


def accepted_answers(local_aws: Any) -> list[dict[str, Any]]:
    """Answer calls SageMaker accepted (status 200)."""
    return [c for c in answer_calls(local_aws) if int(c.get("status") or 0) == 200]


def dag(dag_id: str | None = None, **kwargs: Any) -> Any:
    from airflow.sdk import DAG

    kwargs.setdefault("schedule", None)
    kwargs.setdefault("start_date", START_DATE)
    kwargs.setdefault("catchup", False)
    return DAG(dag_id or unique("cb"), **kwargs)


def create_glue_job(local_aws: Any, name: str | None = None) -> str:
    """A Glue job on the endpoint (moto); returns its name."""
    name = name or unique("glue")
    local_aws.client("glue").create_job(
        Name=name,
        Role=ROLE_ARN,
        Command={"Name": "glueetl", "ScriptLocation": "s3://bucket/script.py", "PythonVersion": "3"},
        GlueVersion="4.0",
    )
    return name


def create_ecs_task(local_aws: Any) -> tuple[str, str]:
    """An ECS cluster and task definition on the endpoint (moto); returns (cluster, family).

    ``bridge`` networking: moto cannot run ``awsvpc`` tasks (it fails building their network interface).
    """
    ecs = local_aws.client("ecs")
    cluster = unique("cluster")
    family = unique("family")
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=family,
        networkMode="bridge",
        containerDefinitions=[
            {"name": "validate", "image": "python:3.11-slim", "essential": True, "memory": 512, "cpu": 256}
        ],
    )
    return cluster, family


def ecs_containers_stop(local_aws: Any) -> bool:
    """Whether the endpoint's ECS tasks end with their containers STOPPED (what EcsRunTaskOperator checks)."""
    cluster, family = create_ecs_task(local_aws)
    ecs = local_aws.client("ecs")
    arn = ecs.run_task(cluster=cluster, taskDefinition=family, launchType="FARGATE")["tasks"][0]["taskArn"]
    for _ in range(10):
        task = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        if task["lastStatus"] == "STOPPED":
            return all(c.get("lastStatus") == "STOPPED" for c in task.get("containers", []))
    return False


def job_outcome_control(local_aws: Any) -> Any:
    """The endpoint's control that makes a Glue job run fail / an ECS task exit non-zero, or None.

    Signature: ``controls.set_job_outcome(service, name, *, fail=<reason>, exit_code=1)`` with ``service``
    ``"glue"`` (``name``: job name; later runs end ``FAILED`` with ``fail`` as ErrorMessage) or ``"ecs"``
    (``name``: task definition family; later tasks' containers exit ``exit_code``).
    """
    return getattr(local_aws.controls, "set_job_outcome", None)


def next_event(trigger: Any) -> Any:
    """Run the watcher trigger until it fires once (what the triggerer does, one event at a time)."""

    async def first() -> Any:
        return await anext(trigger.run())

    return asyncio.run(asyncio.wait_for(first(), timeout=30))


def record_asset_event(asset: Any, payload: Any) -> Any:
    """Record the asset event as ``Trigger.submit_event`` does for an AssetWatcher's trigger."""
    from airflow.assets.manager import AssetManager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        model = session.scalars(select(AssetModel).where(AssetModel.name == asset.name)).one()
        event = AssetManager.register_asset_change(
            asset=model.to_serialized(), extra={"from_trigger": True, "payload": payload}, session=session
        )
        session.flush()
        assert event is not None, "the asset change was not recorded"
        return event.id


def run_consuming(dag_runner: Any, handler_dag: Any, event_ids: list[int], monkeypatch: Any) -> Any:
    """``dag.test()`` the handler DAG, its run consuming the given asset events as a scheduled run would."""
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent

    original = dagrun_module.get_or_create_dagrun

    def with_events(*args: Any, **kwargs: Any) -> Any:
        run = original(*args, **kwargs)
        session = kwargs["session"]
        for event_id in event_ids:
            run.consumed_asset_events.append(session.get(AssetEvent, event_id))
        session.commit()
        return run

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", with_events)
    return dag_runner.run_dag(handler_dag)
