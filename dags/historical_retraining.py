"""historical_retraining — retrain once per day of history, for backfills.

Each run retrains the ``retraining`` pipeline on its own data interval (``DataStartDate`` /
``DataEndDate`` = its start / end date; a manual run without a logical date, from the Trigger button,
retrains on the day before it was triggered: see :func:`data_interval`) with a deterministic display name
(``retraining-<YYYYMMDD>``): a re-run or a retried task finds the same execution again rather than
starting a second one (the operator's idempotency token is derived from the task instance).

Backfill a year (runs are created by the scheduler, at most ``--max-active-runs`` at once)::

    airflow backfill create --dag-id historical_retraining \\
        --from-date 2025-01-01 --to-date 2025-12-31 --max-active-runs 8

Concurrency is capped three ways, from the outside in:

- ``--max-active-runs`` of the backfill (Airflow dag runs);
- the ``retrain`` task: ``max_active_tis_per_dag`` (``SMP_MAX_CONCURRENT``, default 4; deferred tasks
  count) and the pool ``sagemaker_pipelines`` (create it with ``include_deferred`` so that waiting
  executions hold their slot: ``airflow pools set sagemaker_pipelines 4 "SageMaker" --include-deferred``);
- SageMaker's own limit on running executions: a start refused with ``ResourceLimitExceeded`` waits
  (deferred, with backoff) and tries again instead of failing.

A successful retraining emits an event on the ``historical-models`` asset carrying the execution ARN and
the model package ARN (``retraining_consumer`` is scheduled on it).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, NamedTuple

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from sagemaker_pipelines_provider.assets import emit_model_event, model_package_group_asset
from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy

POOL = os.environ.get("SMP_POOL", "sagemaker_pipelines")
MAX_CONCURRENT = int(os.environ.get("SMP_MAX_CONCURRENT", "4"))
MODELS = model_package_group_asset("historical-models")
#: First wait after SageMaker refuses a start with ResourceLimitExceeded (doubles, jittered, up to 60 s).
CAPACITY_BACKOFF = float(os.environ.get("SMP_CAPACITY_BACKOFF", "2"))


class Interval(NamedTuple):
    start: dt.datetime
    end: dt.datetime


def data_interval(dag_run: Any) -> Interval:
    """The run's data interval (template macro ``data_interval(dag_run)``).

    A scheduled or backfill run has one. A manual run without a logical date (Airflow 3's Trigger button,
    ``airflow dags trigger``) has none (``data_interval_start`` is undefined in its templates): it retrains
    on the day before it was triggered (``run_after``).
    """
    if dag_run.data_interval_start is not None and dag_run.data_interval_end is not None:
        return Interval(dag_run.data_interval_start, dag_run.data_interval_end)
    end = dag_run.run_after
    return Interval(end - dt.timedelta(days=1), end)


with DAG(
    dag_id="historical_retraining",
    description="Retrain the model on each day of history (backfill-friendly)",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=MAX_CONCURRENT,
    params={"market": "all"},
    user_defined_macros={"data_interval": data_interval},
    tags=["sagemaker", "example", "backfill"],
    doc_md=__doc__,
) as dag:
    retrain = SageMakerPipelineOperator(
        task_id="retrain",
        pipeline_name="retraining",
        parameters={
            "DataStartDate": "{{ data_interval(dag_run).start | ds }}",
            "DataEndDate": "{{ data_interval(dag_run).end | ds }}",
            "Market": "{{ params.market }}",
            "ModelPackageGroupName": "historical-models",
        },
        display_name="retraining-{{ data_interval(dag_run).start | ds_nodash }}",
        description="historical_retraining {{ data_interval(dag_run) | map('ds') | join(' to ') }}",
        deferrable=True,
        pool=POOL,
        max_active_tis_per_dag=MAX_CONCURRENT,
        backoff_policy=BackoffPolicy(capacity_base_delay=CAPACITY_BACKOFF, capacity_max_delay=60.0),
        outlets=[MODELS],
        post_execute=emit_model_event(MODELS, step="RegisterModel"),
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    )
