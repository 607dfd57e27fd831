"""Helpers of the tests that run the example DAGs of ``dags/`` against the local endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
FAST_ENV = {"AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL": "0.2"}
POOL = "sagemaker_pipelines"
STEP_SECONDS = 0.05


def load_dag(dag_id: str) -> Any:
    """Parse the example file of ``dag_id`` now (so the environment above applies)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def prepare(local_aws: Any, *, pool_slots: int = 8) -> dict[str, Any]:
    """Seed the demo resources, make steps fast, create the pool the examples use."""
    from airflow.models.pool import Pool

    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(STEP_SECONDS)
    seeded = local_aws.seed()
    Pool.create_or_update_pool(
        POOL, slots=pool_slots, description="SageMaker pipelines", include_deferred=True
    )
    return seeded


def executions(local_aws: Any, pipeline: str) -> list[dict[str, Any]]:
    sm = local_aws.client("sagemaker")
    return list(sm.list_pipeline_executions(PipelineName=pipeline)["PipelineExecutionSummaries"])
