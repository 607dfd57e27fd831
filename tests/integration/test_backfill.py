"""A 30-day backfill of ``historical_retraining`` against the local endpoint, with a concurrency cap.

How: the backfill's dag runs are created by Airflow's own backfill code (``_create_backfill``, what
``airflow backfill create`` and the REST API call), then driven by :mod:`scheduler_loop` — the scheduler's
``_start_queued_dagruns`` (the backfill's ``max_active_runs``) and critical section
(``_executable_task_instances_to_queued``: pool, ``max_active_tis_per_dag``) in the test thread, and the
deferred tasks' triggers concurrently on a background event loop, as a triggerer would. So up to
``max_active_tis_per_dag`` executions are in flight at once, more than the endpoint's cap: the cap is
enforced by SageMaker (ResourceLimitExceeded) and absorbed by the operator's deferred backoff.

Why not threads running ``dag.test()``: it creates manual runs (not backfill runs), runs each trigger in
line (one execution in flight at a time), and SQLite does not take concurrent writers from threads.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
DATES = 30
CAP = 2
AIRFLOW_CONCURRENCY = 5
FIRST = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def test_backfill_30_dates_respects_the_cap(
    local_aws: Any, dag_runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.backfill import _create_backfill
    from airflow.models.pool import Pool

    from tests.support import scheduler_loop

    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL", "0.2")
    monkeypatch.setenv("SMP_MAX_CONCURRENT", str(AIRFLOW_CONCURRENCY))
    monkeypatch.setenv("SMP_CAPACITY_BACKOFF", "0.3")
    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(1.0)
    local_aws.seed()
    local_aws.controls.set_concurrency_cap("retraining", CAP)
    Pool.create_or_update_pool(
        "sagemaker_pipelines", slots=AIRFLOW_CONCURRENCY, description="SageMaker", include_deferred=True
    )

    bag = DagBag(dag_folder=str(DAGS_FOLDER / "historical_retraining.py"))
    dag = bag.dags["historical_retraining"]
    dag_runner.sync_dag(dag)
    scheduler_loop.unpause(dag.dag_id)

    started = time.monotonic()
    backfill = _create_backfill(
        dag_id=dag.dag_id,
        from_date=FIRST,
        to_date=FIRST + dt.timedelta(days=DATES - 1),
        max_active_runs=AIRFLOW_CONCURRENCY + 1,
        reverse=False,
        dag_run_conf=None,
        triggering_user_name="test",
    )
    runs = scheduler_loop.run_dag_runs(dag, timeout=170)
    elapsed = time.monotonic() - started

    backfill_runs = [r for r in runs if r.backfill_id == backfill.id]
    assert len(backfill_runs) == DATES
    assert Counter(str(r.state) for r in backfill_runs) == {"success": DATES}

    sm = local_aws.client("sagemaker")
    summaries = [
        s
        for page in sm.get_paginator("list_pipeline_executions").paginate(PipelineName="retraining")
        for s in page["PipelineExecutionSummaries"]
    ]
    names = Counter(s["PipelineExecutionDisplayName"] for s in summaries)
    expected = {f"retraining-{(FIRST + dt.timedelta(days=i)):%Y%m%d}" for i in range(DATES)}
    assert set(names) == expected, set(names) ^ expected
    assert all(count == 1 for count in names.values()), [n for n, c in names.items() if c > 1]
    assert all(s["PipelineExecutionStatus"] == "Succeeded" for s in summaries)
    params = {
        p["Name"]: p["Value"]
        for p in sm.list_pipeline_parameters_for_execution(
            PipelineExecutionArn=next(
                s["PipelineExecutionArn"]
                for s in summaries
                if s["PipelineExecutionDisplayName"] == f"retraining-{FIRST:%Y%m%d}"
            )
        )["PipelineParameters"]
    }
    assert params["DataStartDate"] == f"{FIRST:%Y-%m-%d}"
    assert params["DataEndDate"] == f"{FIRST + dt.timedelta(days=1):%Y-%m-%d}"

    peak = local_aws.controls.peak_concurrency("retraining")
    refused = [
        c
        for c in local_aws.controls.calls(action="StartPipelineExecution")
        if c["error_code"] == "ResourceLimitExceeded"
    ]
    print(
        f"backfill: {DATES} executions, peak {peak} (cap {CAP}), "
        f"{len(refused)} starts refused, {elapsed:.1f}s"
    )
    assert peak <= CAP
    assert peak == CAP, "the cap never mattered: the test did not exercise concurrency"
    assert refused, "no start was refused: the cap was never reached"
