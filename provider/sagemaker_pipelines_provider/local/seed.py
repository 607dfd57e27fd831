"""Demo resources for the local AWS endpoint (queues, event rule, bucket, role, pipelines, Glue job, ECS),
created idempotently by :func:`seed` through a boto3 session cut off from the user's AWS set-up
(:mod:`.aws_session`). The list of resources: docs/local-endpoint.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

from .engine.events import EXECUTION_EVENT, STEP_EVENT

__all__ = [
    "BUCKET",
    "CALLBACK_QUEUE",
    "DEMO_PIPELINES",
    "ECS_CLUSTER",
    "EVENTS_QUEUE",
    "EVENTS_RULE",
    "EVENT_PATTERN",
    "GLUE_JOB",
    "ROLE_NAME",
    "TASK_FAMILY",
    "events_queue_policy",
    "load_definition",
    "seed",
]

REGION = "us-east-1"
CALLBACK_QUEUE = "sagemaker-callbacks"
CALLBACK_DLQ = "sagemaker-callbacks-dlq"
EVENTS_QUEUE = "sagemaker-pipeline-events"
EVENTS_RULE = "sagemaker-pipeline-status-changes"
#: The rule's pattern: SageMaker's execution and step status changes (docs/events.md).
EVENT_PATTERN = {"source": ["aws.sagemaker"], "detail-type": [EXECUTION_EVENT, STEP_EVENT]}
BUCKET = "sagemaker-local-demo"
ROLE_NAME = "SageMakerPipelineExecutionRole"
DEMO_PIPELINES = ("features", "training", "evaluation", "scheduled-training", "retraining")
GLUE_JOB = "validate-features"
ECS_CLUSTER = "ml"
TASK_FAMILY = "model-validation"
#: An AMI of moto's default image list (the seeded container instance's image; never launched for real).
ECS_INSTANCE_AMI = "ami-12c6146b"
EVALUATION_REPORT_KEY = "evaluation/evaluation.json"
EVALUATION_REPORT = {"metrics": {"accuracy": {"value": 0.91}, "auc": {"value": 0.95}}}

_ASSUME_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {
                "Service": ["sagemaker.amazonaws.com", "glue.amazonaws.com", "ecs-tasks.amazonaws.com"]
            },
            "Action": "sts:AssumeRole",
        }
    ],
}

ClientFactory = Callable[[str], Any]


def load_definition(name: str) -> str:
    """The packaged JSON definition of demo pipeline ``name`` (one of :data:`DEMO_PIPELINES`)."""
    if name not in DEMO_PIPELINES:
        raise ValueError(f"unknown demo pipeline {name!r}; choose one of {', '.join(DEMO_PIPELINES)}")
    return resources.files(__package__).joinpath("pipelines", f"{name}.json").read_text()


def _client_factory(target: str | Any | None, region: str) -> ClientFactory:
    """Turn a URL, an object with ``.client(service)``, or a mapping of clients into a factory."""
    if isinstance(target, Mapping):
        return lambda service: target[service]
    if target is not None and not isinstance(target, str) and callable(getattr(target, "client", None)):
        return target.client  # type: ignore[no-any-return]
    from .aws_session import isolated_boto3_session

    endpoint_url = target or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint_url:
        raise ValueError(
            "seed() needs the local endpoint's URL: pass it, or export AWS_ENDPOINT_URL (it never seeds the "
            "AWS account of your profile)"
        )
    session = isolated_boto3_session(region)

    def make(service: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=endpoint_url)  # type: ignore[call-overload]

    return make


def events_queue_policy(queue_arn: str, rule_arn: str) -> dict[str, Any]:
    """The queue policy that lets EventBridge deliver the rule's events to the queue (docs/events.md)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowSageMakerPipelineEvents",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def _events_queue(client: ClientFactory) -> dict[str, Any]:
    """The queue ``sagemaker-pipeline-events`` fed by the EventBridge rule of :data:`EVENT_PATTERN`."""
    sqs, events = client("sqs"), client("events")
    queue_url = sqs.create_queue(QueueName=EVENTS_QUEUE)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rule_arn = events.put_rule(
        Name=EVENTS_RULE,
        EventPattern=json.dumps(EVENT_PATTERN),
        State="ENABLED",
        Description="SageMaker pipeline execution and step status changes",
    )["RuleArn"]
    policy = json.dumps(events_queue_policy(queue_arn, rule_arn))
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
    events.put_targets(Rule=EVENTS_RULE, Targets=[{"Id": EVENTS_QUEUE, "Arn": queue_arn}])
    return {"events_queue_url": queue_url, "events_queue_arn": queue_arn, "events_rule_arn": rule_arn}


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def seed(endpoint_url_or_clients: str | Any | None = None, *, region: str = REGION) -> dict[str, Any]:
    """Create the demo resources; return their names, URLs and ARNs.

    :param endpoint_url_or_clients: the endpoint URL (``None``: ``AWS_ENDPOINT_URL``), an object with a
        ``client(service)`` method (the ``local_aws`` fixture), or a mapping ``{service: client}`` with
        ``sqs``, ``events``, ``s3``, ``iam``, ``sagemaker``, ``glue``, ``ecs`` (and ``ec2``).
    """
    from botocore.exceptions import ClientError

    client = _client_factory(endpoint_url_or_clients, region)
    result: dict[str, Any] = {}

    # SQS: the callback queue and its dead-letter queue.
    sqs = client("sqs")
    dlq_url = sqs.create_queue(QueueName=CALLBACK_DLQ)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(QueueName=CALLBACK_QUEUE)["QueueUrl"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "100"})
    sqs.set_queue_attributes(
        QueueUrl=queue_url, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60"}
    )
    result.update(queue_url=queue_url, dlq_url=dlq_url, dlq_arn=dlq_arn)

    # SQS + EventBridge: the events queue and the rule that feeds it.
    result.update(_events_queue(client))

    # S3: the demo bucket, the evaluation report and placeholder scripts.
    s3 = client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    s3.put_object(Bucket=BUCKET, Key=EVALUATION_REPORT_KEY, Body=json.dumps(EVALUATION_REPORT).encode())
    for script in ("features.py", "evaluate.py", "validate_features.py"):
        s3.put_object(Bucket=BUCKET, Key=f"scripts/{script}", Body=b"print('local demo placeholder')\n")
    result["bucket"] = BUCKET

    # IAM: the execution role.
    iam = client("iam")
    try:
        role_arn = iam.create_role(
            RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(_ASSUME_ROLE_POLICY)
        )["Role"]["Arn"]
    except ClientError as exc:
        if _error_code(exc) != "EntityAlreadyExists":
            raise
        role_arn = iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
    result["role_arn"] = role_arn

    # SageMaker: the demo pipelines (created, or updated to the packaged definitions).
    sagemaker = client("sagemaker")
    pipelines: dict[str, str] = {}
    for name in DEMO_PIPELINES:
        definition = load_definition(name)
        try:
            sagemaker.describe_pipeline(PipelineName=name)
        except ClientError as exc:
            if _error_code(exc) not in ("ResourceNotFound", "ValidationException"):
                raise
            arn = sagemaker.create_pipeline(
                PipelineName=name,
                PipelineDisplayName=name,
                PipelineDefinition=definition,
                PipelineDescription=f"Local demo pipeline {name}",
                RoleArn=role_arn,
            )["PipelineArn"]
        else:
            arn = sagemaker.update_pipeline(
                PipelineName=name, PipelineDefinition=definition, RoleArn=role_arn
            )["PipelineArn"]
        pipelines[name] = arn
    result["pipelines"] = pipelines

    # Glue: the feature validation job.
    glue = client("glue")
    try:
        glue.create_job(
            Name=GLUE_JOB,
            Role=role_arn,
            Command={
                "Name": "glueetl",
                "ScriptLocation": f"s3://{BUCKET}/scripts/validate_features.py",
                "PythonVersion": "3",
            },
            GlueVersion="4.0",
            DefaultArguments={"--job-language": "python"},
        )
    except ClientError as exc:
        if _error_code(exc) != "AlreadyExistsException":
            raise
    result["glue_job"] = GLUE_JOB

    # ECS: the cluster and the model validation task definition.
    ecs = client("ecs")
    cluster_arn = ecs.create_cluster(clusterName=ECS_CLUSTER)["cluster"]["clusterArn"]
    existing = ecs.list_task_definitions(familyPrefix=TASK_FAMILY, sort="DESC")["taskDefinitionArns"]
    if existing:
        task_definition_arn = existing[0]
    else:
        task_definition_arn = ecs.register_task_definition(
            family=TASK_FAMILY,
            taskRoleArn=role_arn,
            executionRoleArn=role_arn,
            # bridge, and cpu/memory on the container: moto cannot run awsvpc tasks (it fails building
            # their network interface) nor containers without cpu/memory (RunTask raises a TypeError).
            networkMode="bridge",
            requiresCompatibilities=["EC2"],  # moto forces awsvpc on FARGATE-compatible definitions
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": "validate",
                    "image": "public.ecr.aws/docker/library/python:3.11-slim",
                    "essential": True,
                    "command": ["python", "-c", "print('model validated')"],
                    "cpu": 256,
                    "memory": 512,
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
    result.update(ecs_cluster_arn=cluster_arn, task_definition_arn=task_definition_arn)
    result["container_instance_arn"] = _container_instance(client, ecs)
    return result


def _container_instance(client: ClientFactory, ecs: Any) -> str:
    """The cluster's one EC2 container instance (a moto EC2 instance registered with ECS), so that tasks
    run with the default launch type (EC2, also the Amazon provider's ``EcsRunTaskOperator`` default) as
    well as with ``launch_type="FARGATE"``."""
    existing = ecs.list_container_instances(cluster=ECS_CLUSTER)["containerInstanceArns"]
    if existing:
        return str(existing[0])
    ec2 = client("ec2")
    instance = ec2.run_instances(
        ImageId=ECS_INSTANCE_AMI,
        InstanceType="m5.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": f"ecs-{ECS_CLUSTER}"}]}
        ],
    )["Instances"][0]
    document = json.dumps({"instanceId": instance["InstanceId"], "region": REGION})
    return str(
        ecs.register_container_instance(cluster=ECS_CLUSTER, instanceIdentityDocument=document)[
            "containerInstance"
        ]["containerInstanceArn"]
    )
