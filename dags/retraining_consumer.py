"""retraining_consumer — scheduled on the model assets the retraining DAGs update.

Each run reads the asset events that triggered it (``triggering_asset_events``), or, when started by
hand, the latest event of each asset (``inlet_events``), and reports the execution ARN and the model
package ARN a retraining produced — where a deployment or an approval step would start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, task
from sagemaker_pipelines_provider.assets import model_package_group_asset

DEMO_MODELS = model_package_group_asset("demo-models")
HISTORICAL_MODELS = model_package_group_asset("historical-models")
ASSETS = (DEMO_MODELS, HISTORICAL_MODELS)

with DAG(
    dag_id="retraining_consumer",
    description="React to newly registered models",
    schedule=(DEMO_MODELS | HISTORICAL_MODELS),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["sagemaker", "example", "assets"],
    doc_md=__doc__,
) as dag:

    @task(inlets=list(ASSETS))
    def new_models(**context: Any) -> list[dict[str, Any]]:
        """The (execution ARN, model package ARN) of each model this run is about."""
        triggering = context.get("triggering_asset_events") or {}
        events = [event for asset in ASSETS for event in triggering.get(asset, [])]
        if not events:  # a manual run: the latest event of each asset
            inlet_events = context["inlet_events"]
            events = [inlet_events[asset][-1] for asset in ASSETS if len(inlet_events[asset])]
        models = []
        for event in events:
            extra = event.extra or {}
            models.append(
                {
                    "pipeline_execution_arn": extra.get("pipeline_execution_arn"),
                    "model_package_arn": extra.get("model_package_arn"),
                    "asset": event.asset.name if getattr(event, "asset", None) else None,
                }
            )
            print(f"new model {extra.get('model_package_arn')} from {extra.get('pipeline_execution_arn')}")
        return models

    new_models()
