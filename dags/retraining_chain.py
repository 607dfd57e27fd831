"""retraining_chain — the flagship: small SageMaker pipelines, a Glue job and an ECS task in one DAG.

::

    features (pipeline) -> validate_features (Glue) -> training (pipeline)
        training's Callback step ValidateModel -> validate_model (ECS task) -> answer(validation_passed)
    -> evaluation (pipeline: RegisterEvaluatedModel) -> publish_model (asset event)

Every value one link passes to the next is an XComArg reference
(:mod:`sagemaker_pipelines_provider.task_groups.chain`), never a ``{{ ti.xcom_pull() }}`` string: the
features execution's id names the training data, the training job's ARN names the model artifacts the
evaluation reads. A successful run emits an event on the ``demo-models`` asset carrying the evaluation's
execution ARN and model package ARN (``retraining_consumer`` is scheduled on it).

Resources (queue, pipelines, Glue job, ECS cluster/task definition) are those of
``sagemaker_pipelines_provider.local.seed``; run it against the local endpoint with ``make demo``.
Dates come from ``(dag_run.logical_date or dag_run.run_after)``: the logical date of a scheduled or backfill
run, and for a manual run without a logical date (Airflow 3's Trigger button, ``airflow dags trigger``) the
time it was triggered — ``{{ ds }}`` is undefined in such a run.

Configuration through the environment: ``SMP_CALLBACK_QUEUE_URL``, ``SMP_EVENTS_QUEUE_URL``, ``SMP_POOL``
(default ``sagemaker_pipelines``). The pipeline waits are event-driven: they wake on SageMaker's status
events from the seeded queue ``sagemaker-pipeline-events`` (docs/events.md; set ``SMP_EVENTS_QUEUE_URL``
empty to poll instead) and poll only every ``[sagemaker_pipelines] event_safety_poll_interval`` as a
safety net. The Glue job, the ECS task and the callback queue are polled every ``[sagemaker_pipelines]
default_poll_interval`` seconds (the provider's Airflow option, default 30).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.sdk import DAG
from sagemaker_pipelines_provider.assets import model_package_group_asset, publish_model
from sagemaker_pipelines_provider.task_groups.chain import (
    SageMakerCallbackWork,
    execution_id_from_arn,
    pipeline_chain,
)
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval

BUCKET = "sagemaker-local-demo"
QUEUE_URL = os.environ.get(
    "SMP_CALLBACK_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-callbacks"
)
#: The queue of SageMaker's status events (an empty value: the waits poll).
EVENTS_QUEUE_URL = os.environ.get(
    "SMP_EVENTS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-pipeline-events"
)
POOL = os.environ.get("SMP_POOL", "sagemaker_pipelines")
POLL = default_poll_interval()  # for the Glue, ECS and SQS waits
MODELS = model_package_group_asset("demo-models")


def training_data_url(features_execution_id: str) -> str:
    """Where the ``features`` pipeline wrote its training split (its ProcessingOutput S3 URI)."""
    return f"s3://{BUCKET}/features/{features_execution_id}/train"


def model_data_url(training_result: dict[str, Any]) -> str:
    """SageMaker's layout: ``<S3OutputPath>/<TrainingJobName>/output/model.tar.gz``."""
    execution_id = execution_id_from_arn(training_result["pipeline_execution_arn"])
    job_name = training_result["outputs"]["Train"]["TrainingJobArn"].rsplit("/", 1)[-1]
    return f"s3://{BUCKET}/models/{execution_id}/{job_name}/output/model.tar.gz"


def ecs_model_validation(args: Any) -> EcsRunTaskOperator:
    """The work of the training's Callback step: validate the model artifacts in an ECS task.

    ``args.template("model_artifacts")`` renders to the callback message's value as data (never
    rendered again as a template).
    """
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


with (
    DAG(
        dag_id="retraining_chain",
        description="features -> Glue -> training (+ECS validation callback) -> evaluation -> register",
        schedule="@daily",
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["sagemaker", "example", "chain"],
        doc_md=__doc__,
    ) as dag,
    pipeline_chain("retrain", deferrable=True, pool=POOL, event_queue_url=EVENTS_QUEUE_URL or None) as chain,
):
    features = chain.pipeline(
        "features",
        parameters={
            "InputDataUrl": f"s3://{BUCKET}/raw/" + "{{ (dag_run.logical_date or dag_run.run_after) | ds }}/"
        },
        display_name="features-{{ (dag_run.logical_date or dag_run.run_after) | ds_nodash }}",
    )
    chain.add(
        GlueJobOperator(
            task_id="validate_features",
            job_name="validate-features",
            script_args={"--features": features.execution_id.map(training_data_url)},
            wait_for_completion=True,
            job_poll_interval=POLL,
            verbose=False,
        )
    )
    training = chain.pipeline(
        "training",
        parameters={
            "TrainingDataUrl": features.execution_id.map(training_data_url),
            "Epochs": 10,
            "ModelPackageGroupName": "demo-models",
        },
        display_name="training-{{ (dag_run.logical_date or dag_run.run_after) | ds_nodash }}",
        callback=SageMakerCallbackWork(
            queue_url=QUEUE_URL,
            work=ecs_model_validation,
            outputs={"validation_passed": True},
            sensor_kwargs={"poke_interval": POLL, "wait_time_seconds": min(20, max(1, int(POLL)))},
        ),
    )
    evaluation = chain.pipeline(
        "evaluation",
        parameters={
            "ModelDataUrl": training.value().map(model_data_url, description="model_data_url"),
            "AccuracyThreshold": 0.8,
            "ModelPackageGroupName": "demo-models",
        },
        display_name="evaluation-{{ (dag_run.logical_date or dag_run.run_after) | ds_nodash }}",
    )
    chain.add(publish_model(MODELS, evaluation.result, step="RegisterEvaluatedModel"))
