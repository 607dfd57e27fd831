"""callback_handler_dag — event-driven: SageMaker is the outer DAG, Airflow answers its callbacks.

The ``scheduled-training`` pipeline is started outside Airflow (a SageMaker schedule, EventBridge, the
console). When its Callback step ``ValidateModel`` sends its message, the ``AssetWatcher`` below (a
``SageMakerCallbackEventTrigger`` in the triggerer, sharing one long-poll per queue) turns it into an
asset event, which schedules one run of this DAG. The run validates the model artifacts named in the
message with an ECS task and answers the token with ``validation_passed``; any failure answers the token
with a failure instead, so no execution waits for 28 days.

The message's arguments are untrusted: they reach the ECS task as data (``args.template``), never as
Jinja, and never pick the AWS resources (cluster, task definition are fixed here).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.sdk import DAG, Asset, AssetWatcher
from sagemaker_pipelines_provider.task_groups.callback import SageMakerCallbackArguments, callback_handler
from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackEventTrigger
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval

QUEUE_URL = os.environ.get(
    "SMP_CALLBACK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-callbacks"
)
POLL = default_poll_interval()  # the ECS task's wait polls at the provider's pace

CALLBACKS = Asset(
    "sagemaker-callbacks-scheduled-training",
    watchers=[
        AssetWatcher(
            name="scheduled-training-callbacks",
            trigger=SageMakerCallbackEventTrigger(
                queue_url=QUEUE_URL, pipeline_name="scheduled-training", visibility_timeout=600
            ),
        )
    ],
)


def ecs_model_validation(args: SageMakerCallbackArguments) -> EcsRunTaskOperator:
    return EcsRunTaskOperator(
        task_id="validate_model",
        cluster="ml",
        task_definition="model-validation",
        overrides={
            "containerOverrides": [
                {"name": "validate", "command": ["validate", "--model", args.template("model_artifacts")]}
            ]
        },
        wait_for_completion=True,
        waiter_delay=max(1, int(POLL)),
        waiter_max_attempts=600,
        awslogs_group=None,
    )


with DAG(
    dag_id="callback_handler_dag",
    description="Answer scheduled-training's ValidateModel callbacks, one run per callback message",
    schedule=[CALLBACKS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=8,
    tags=["sagemaker", "example", "callback", "event-driven"],
    doc_md=__doc__,
) as dag:
    callback_handler(
        "validate",
        from_asset=CALLBACKS,
        work=ecs_model_validation,
        outputs={"validation_passed": True},
        visibility_timeout=600,
    )
