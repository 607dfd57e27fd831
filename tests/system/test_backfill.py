"""System test (b): ``airflow backfill create`` of ``historical_retraining`` over 30 dates on the stack,
with 30 % of every AWS call answered ``ThrottlingException``.

The limits, from the outside in: the backfill's ``--max-active-runs 8``; the pool ``sagemaker_pipelines``
(4 slots, deferred tasks counted: the stack creates it as compose's airflow-init does); and a cap of 4
running executions of the ``retraining`` pipeline on the endpoint (``set_concurrency_cap``), beyond which
SageMaker answers ``ResourceLimitExceeded``. (The DAG's own ``max_active_tis_per_dag``,
``SMP_MAX_CONCURRENT``, is above all three in the test stack: see conftest.)

"0 task failures" means: no try of any task instance of the backfill failed — every one succeeded on its
first try (``try_number`` 1; the DAG gives the task 2 retries, which would have hidden a failed try
behind a successful run). The throttles must all be absorbed by the provider's backoff, in the worker
(start, parameter check) and in the triggerer (status polling, step listing).

Asserted from the outside only: the runs and task instances (REST), the asset events (REST), and the
endpoint's execution list, call record and peak concurrency. The backfill's wall time (from the CLI call
until its last run ended) is printed.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from stack import POOL, AirflowApi, Stack

DAG_ID = "historical_retraining"
PIPELINE = "retraining"
FIRST_DATE = date(2025, 3, 1)
DATES = 30
MAX_ACTIVE_RUNS = 8
ENDPOINT_CAP = 4
THROTTLE_RATE = 0.3


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def peak_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one time (an interval ending when another starts does not overlap)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def wait_for_backfill(api: AirflowApi, dag_id: str, since: str, timeout: float = 1200.0) -> dict[str, Any]:
    """The backfill of ``dag_id`` created after ``since``, once it completed (a safety net, not a
    measurement: :class:`AssertionError` naming the unfinished runs after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        backfills = [
            b for b in api.get("/api/v2/backfills", dag_id=dag_id)["backfills"] if b["created_at"] >= since
        ]
        assert len(backfills) <= 1, backfills
        if backfills and backfills[0]["completed_at"]:
            return backfills[0]
        if time.monotonic() > deadline:
            busy = {
                r["dag_run_id"]: r["state"]
                for r in api.dag_runs(dag_id)
                if r["state"] not in ("success", "failed")
            }
            raise AssertionError(
                f"backfill of {dag_id} not completed after {timeout:.0f}s: {backfills} {busy}"
            )
        time.sleep(2.0)


@pytest.mark.timeout(1800)  # the backfill took 1.5-2 min here; generous for a busy shared machine
def test_backfill_30_dates_with_throttling(
    airflow_stack: Stack, airflow_api: AirflowApi, stack_aws: Any
) -> None:
    controls = stack_aws.controls
    dates = [FIRST_DATE + timedelta(days=n) for n in range(DATES)]
    names = {f"retraining-{d:%Y%m%d}" for d in dates}
    since = datetime.now(UTC).isoformat()
    pool = airflow_api.get(f"/api/v2/pools/{POOL.name}")
    assert (pool["slots"], pool["include_deferred"]) == (4, True), pool

    controls.set_concurrency_cap(PIPELINE, ENDPOINT_CAP)
    controls.set_faults("*", throttle_rate=THROTTLE_RATE, seed=30)
    airflow_api.wait_for_dag(DAG_ID)
    airflow_api.set_paused(DAG_ID, False)  # a paused DAG's backfill runs stay queued
    began = time.monotonic()
    airflow_stack.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        dates[0].isoformat(),
        "--to-date",
        dates[-1].isoformat(),
        "--max-active-runs",
        str(MAX_ACTIVE_RUNS),
    )
    backfill = wait_for_backfill(airflow_api, DAG_ID, since)
    runs = airflow_api.wait_until_idle(DAG_ID)
    wall = time.monotonic() - began
    controls.clear_faults()
    print(
        f"\n[backfill] {DATES} dates of {DAG_ID} in {wall:.1f}s (wall time, from `airflow backfill create`)"
    )

    # 30 backfill runs, one per date, all succeeded.
    assert backfill["max_active_runs"] == MAX_ACTIVE_RUNS
    mine = [r for r in runs if r["run_type"] == "backfill" and r["start_date"] and r["start_date"] >= since]
    assert sorted(_iso(r["logical_date"]).date() for r in mine) == dates, [r["dag_run_id"] for r in mine]
    assert sorted(_iso(r["data_interval_start"]).date() for r in mine) == dates  # the display names' days
    assert {r["state"] for r in mine} == {"success"}, {r["dag_run_id"]: r["state"] for r in mine}
    assert peak_overlap([(_iso(r["start_date"]), _iso(r["end_date"])) for r in mine]) <= MAX_ACTIVE_RUNS

    # 0 task failures: every task instance succeeded on its first try.
    instances = [ti for r in mine for ti in airflow_api.task_instances(DAG_ID, r["dag_run_id"])]
    assert len(instances) == DATES
    tries = {ti["dag_run_id"]: (ti["state"], ti["try_number"]) for ti in instances}
    assert set(tries.values()) == {("success", 1)}, tries
    assert {ti["pool"] for ti in instances} == {POOL.name}

    # Exactly one execution per run: 30 for the backfill, with 30 distinct display names (the run's data
    # interval), each the one its task instance recorded; any other execution belongs to another run of
    # the DAG that started during the test (unpausing creates the latest scheduled run).
    executions = stack_aws.executions(PIPELINE)
    by_name = Counter(e["PipelineExecutionDisplayName"] for e in executions)
    assert {n: by_name[n] for n in names} == dict.fromkeys(names, 1), by_name
    others = [r for r in runs if r not in mine and r["start_date"] and r["start_date"] >= since]
    assert len(executions) == DATES + len(others), (len(executions), [r["dag_run_id"] for r in others])
    arn_by_name = {e["PipelineExecutionDisplayName"]: e["PipelineExecutionArn"] for e in executions}
    interval_starts = {r["dag_run_id"]: _iso(r["data_interval_start"]) for r in mine}
    for ti in instances:
        name = f"retraining-{interval_starts[ti['dag_run_id']]:%Y%m%d}"
        recorded = airflow_api.xcom(DAG_ID, ti["dag_run_id"], "retrain", key="pipeline_execution_arn")
        assert recorded == arn_by_name[name], (ti["dag_run_id"], recorded)
    statuses = {e["PipelineExecutionDisplayName"]: e["PipelineExecutionStatus"] for e in executions}
    assert {statuses[n] for n in names} == {"Succeeded"}, statuses

    # At most 4 ran at once on the endpoint, and Airflow's limits alone kept it there: no start was
    # refused. (A task instance holds its pool slot while queued, running or deferred, not between its
    # trigger firing and its resumption being queued: its start and end dates do not bound its slot.)
    peak = controls.peak_concurrency(PIPELINE)
    print(f"[backfill] peak concurrency of {PIPELINE} on the endpoint: {peak} (cap {ENDPOINT_CAP})")
    assert 1 <= peak <= ENDPOINT_CAP
    starts = controls.calls(action="StartPipelineExecution")
    assert not [c for c in starts if c["error_code"] == "ResourceLimitExceeded"], starts

    # The throttling happened, on the worker's and the triggerer's calls alike, and was absorbed.
    calls = [c for c in controls.calls() if c["time"] >= _iso(since).timestamp()]
    throttled = Counter(c["action"] for c in calls if c["fault"] == "throttle")
    served = len([c for c in calls if c["fault"] is None])
    print(f"[backfill] {sum(throttled.values())} of {len(calls)} AWS calls throttled: {dict(throttled)}")
    assert throttled["StartPipelineExecution"] > 0 and throttled["ListPipelineExecutions"] > 0, throttled
    assert served > 0
    tokens = {c["args"]["ClientRequestToken"] for c in starts if c["status"] == 200}
    assert len(tokens) == len(executions)  # a start repeated after a throttle sent the same token

    # Each run's model event on the historical-models asset.
    events = [e for e in airflow_api.asset_events(source_dag_id=DAG_ID) if e["source_run_id"] in tries]
    assert sorted(e["source_run_id"] for e in events) == sorted(tries), events
    assert {e["extra"]["pipeline_execution_arn"] for e in events} == {arn_by_name[n] for n in names}
