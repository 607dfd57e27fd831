"""on_pipeline_succeeded — a DAG run for each successful ``retraining`` execution, whoever started it.

SageMaker announces each execution's status changes on EventBridge; a rule forwards them to the SQS queue
``sagemaker-pipeline-events`` (docs/events.md). The ``AssetWatcher`` below (a
``PipelineStatusEventTrigger`` in the triggerer, reading the queue through its shared receiver) turns
each ``Succeeded`` execution of ``retraining`` into an asset event — an execution started by this
Airflow's backfill, by a SageMaker schedule, from the console or by another team. The run reads the event
from ``triggering_asset_events``: the execution ARN, its display name and the model package ARNs its
RegisterModel steps created, where a deployment or an approval request would start.

Configuration through the environment: ``SMP_EVENTS_QUEUE_URL`` (the events queue's URL).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task
from sagemaker_pipelines_provider.triggers.events import PipelineStatusEventTrigger

EVENTS_QUEUE_URL = os.environ.get(
    "SMP_EVENTS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-pipeline-events"
)
PIPELINE = "retraining"

RETRAINING_SUCCEEDED = Asset(
    "sagemaker-pipeline-retraining-succeeded",
    watchers=[
        AssetWatcher(
            name="retraining-succeeded",
            trigger=PipelineStatusEventTrigger(
                pipeline_name=PIPELINE, queue_url=EVENTS_QUEUE_URL, statuses=("Succeeded",)
            ),
        )
    ],
)

with DAG(
    dag_id="on_pipeline_succeeded",
    description="React to every successful retraining execution, however it was started",
    schedule=[RETRAINING_SUCCEEDED],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=8,
    tags=["sagemaker", "example", "event-driven", "assets"],
    doc_md=__doc__,
) as dag:

    @task
    def new_models(**context: Any) -> list[dict[str, Any]]:
        """One entry per execution this run is about (none for a run started by hand)."""
        events = (context.get("triggering_asset_events") or {}).get(RETRAINING_SUCCEEDED, [])
        models = []
        for event in events:
            payload = (event.extra or {}).get("payload") or {}
            models.append(
                {
                    "pipeline_execution_arn": payload.get("pipeline_execution_arn"),
                    "display_name": payload.get("display_name"),
                    "status": payload.get("status"),
                    "model_package_arns": payload.get("model_package_arns") or [],
                }
            )
            print(
                f"{payload.get('pipeline_name')} execution {payload.get('pipeline_execution_arn')} "
                f"{payload.get('status')}: model packages {payload.get('model_package_arns')}"
            )
        if not models:
            print("No pipeline event triggered this run (started by hand?): nothing to do")
        return models

    new_models()
