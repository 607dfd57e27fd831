"""System test (c): processes of the stack killed with SIGKILL while pipeline tasks are in flight.

Both tests run ``historical_retraining`` (one ``SageMakerPipelineOperator`` task, deferrable, 2 retries)
and assert from the outside only: runs and task instances (REST; a deferred task instance shows its
trigger and the triggerer job running it), the endpoint's execution list and call record.

``test_triggerer_killed_with_waits_live``
    :data:`WAITS` runs wait deferred at once (the pool is widened for the test; the ``Train`` step of each
    execution takes :data:`HOLD_SECONDS`), spread by Airflow over the two triggerers. The triggerer holding
    the most is killed: the other one takes its triggers over (printed: the take-over time, from the kill
    until every one of them runs on the survivor — about the stack's
    ``[triggerer] triggerer_health_check_threshold``, shortened to 10 s in the test stack, see conftest).
    Every run succeeds on its first try, no execution is started twice (one per task instance), and no
    execution is stopped: a hand-over is not a kill.
``test_worker_killed_inside_the_start``
    StartPipelineExecution answers are held :data:`START_DELAY` s (the execution starts at once: the
    endpoint's ``delay`` fault). Once the endpoint has started the execution of each of :data:`STARTS`
    runs, and before any answer reached its task, the Celery worker is killed, then started again. The
    scheduler fails the lost tries once their heartbeats stop (``[scheduler]
    task_instance_heartbeat_timeout``, shortened to 30 s in the test stack) and retries them; each retry
    sends the same ClientRequestToken and gets the same execution back: still exactly one execution per
    task instance, every run succeeds.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from stack import POOL, AirflowApi, Stack

DAG_ID = "historical_retraining"
PIPELINE = "retraining"
TASK = "retrain"
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: Deferred pipeline waits live when a triggerer is killed.
WAITS = 20
#: Seconds the Train step of each execution takes in the triggerer test: long enough for WAITS tasks to
#: start and defer on a busy 2-core machine, then for the take-over.
HOLD_SECONDS = 90.0
#: Runs whose start the worker kill cuts, and how long the endpoint holds each StartPipelineExecution
#: answer (the execution exists from the first moment); at most 60 (botocore's read timeout).
STARTS = 4
START_DELAY = 45.0
#: States a task instance reaches only once its start was answered (it deferred, or ended).
ANSWERED = frozenset({"deferred", "success", "failed", "up_for_retry"})

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 600.0, poll: float = 0.5) -> T:
    """``probe()``'s first truthy value (a safety net, not a measurement: :class:`AssertionError`
    after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout:.0f}s for {what}")
        time.sleep(poll)


def display_name(run: dict[str, Any]) -> str:
    """The DAG's display name of a run's execution: its data interval's first day (for a manual run with a
    logical date, the interval the timetable infers: the day before)."""
    return f"retraining-{run['data_interval_start'][:10].replace('-', '')}"


def trigger_runs(api: AirflowApi, days: list[date]) -> dict[str, str]:
    """One run per day (its logical date), as a user's script does through the REST API; run id ->
    the display name of its execution."""
    runs = [api.trigger(DAG_ID, logical_date=f"{day.isoformat()}T00:00:00Z") for day in days]
    names = {r["dag_run_id"]: display_name(r) for r in runs}
    assert len(set(names.values())) == len(days), names
    return names


def instances(api: AirflowApi, run_ids: set[str], **query: Any) -> list[dict[str, Any]]:
    """The task instances of these runs (one list call for all runs of the DAG)."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/~/taskInstances"
    return [ti for ti in api.paginate(path, "task_instances", **query) if ti["dag_run_id"] in run_ids]


@contextmanager
def pool_slots(api: AirflowApi, slots: int) -> Iterator[None]:
    """The example DAGs' pool widened to ``slots`` for the block, then as the stack made it."""
    api.ensure_pool(POOL.name, slots, POOL.description, POOL.include_deferred)
    try:
        yield
    finally:
        api.ensure_pool(POOL.name, POOL.slots, POOL.description, POOL.include_deferred)


def assert_one_execution_each(
    api: AirflowApi, aws: Any, runs: dict[str, str], since: str, max_try: int
) -> list[dict[str, Any]]:
    """Every run succeeded (``runs``: run id -> display name); each task instance has exactly one
    execution (its run's display name), the one it recorded, Succeeded; any other execution belongs to
    another run of the DAG that started during the test. Returns the task instances."""
    all_runs = api.wait_until_idle(DAG_ID)
    states = {r["dag_run_id"]: r["state"] for r in all_runs if r["dag_run_id"] in runs}
    assert states == dict.fromkeys(runs, "success"), states
    tis = instances(api, set(runs))
    assert len(tis) == len(runs) and {ti["state"] for ti in tis} == {"success"}, tis
    assert max(ti["try_number"] for ti in tis) <= max_try, {ti["dag_run_id"]: ti["try_number"] for ti in tis}

    executions = aws.executions(PIPELINE)
    names = Counter(e["PipelineExecutionDisplayName"] for e in executions)
    mine = set(runs.values())
    assert {n: names[n] for n in mine} == dict.fromkeys(mine, 1), names
    others = [r for r in all_runs if r["dag_run_id"] not in runs and (r["start_date"] or "") >= since]
    assert len(executions) == len(runs) + len(others), (names, [r["dag_run_id"] for r in others])
    by_name = {e["PipelineExecutionDisplayName"]: e for e in executions}
    for ti in tis:
        execution = by_name[runs[ti["dag_run_id"]]]
        assert execution["PipelineExecutionStatus"] == "Succeeded", execution
        recorded = api.xcom(DAG_ID, ti["dag_run_id"], TASK, key="pipeline_execution_arn")
        assert recorded == execution["PipelineExecutionArn"], (ti["dag_run_id"], recorded)
    return tis


def test_triggerer_killed_with_waits_live(
    airflow_stack: Stack, airflow_api: AirflowApi, stack_aws: Any
) -> None:
    controls = stack_aws.controls
    since = datetime.now(UTC).isoformat()
    days = [date(2025, 6, 1) + timedelta(days=n) for n in range(WAITS)]
    controls.set_step_behaviour(PIPELINE, "Train", duration=HOLD_SECONDS)
    with pool_slots(airflow_api, WAITS + 4):
        runs = trigger_runs(airflow_api, days)

        def all_deferred() -> list[dict[str, Any]] | None:
            tis = instances(airflow_api, set(runs), state=["deferred"])
            held = [
                ti for ti in tis if ti["trigger"] and ti["trigger"]["triggerer_id"] and ti["triggerer_job"]
            ]
            return held if len(held) == WAITS else None

        deferred = wait_for(f"{WAITS} deferred pipeline waits", all_deferred)
        holders = Counter(ti["triggerer_job"]["hostname"] for ti in deferred)
        assert set(holders) <= set(TRIGGERERS), holders
        victim = holders.most_common(1)[0][0]
        survivor = next(name for name in TRIGGERERS if name != victim)
        handed = {ti["trigger"]["id"] for ti in deferred if ti["triggerer_job"]["hostname"] == victim}
        print(f"\n[faults] {WAITS} waits deferred ({dict(holders)}); kill -9 {victim}")

        killed_at = time.monotonic()
        airflow_stack.kill(victim, signal.SIGKILL)

        def taken_over() -> bool:
            tis = instances(airflow_api, set(runs))
            running_on = {
                ti["trigger"]["id"]: (ti["triggerer_job"] or {}).get("hostname")
                for ti in tis
                if ti["state"] == "deferred" and ti["trigger"]
            }
            # A trigger no longer listed has fired: only a live triggerer fires, and here only the survivor.
            return all(running_on.get(trigger, survivor) == survivor for trigger in handed)

        wait_for(f"{survivor} to take the triggers of {victim} over", taken_over, poll=0.25)
        takeover = time.monotonic() - killed_at
        print(
            f"[faults] {survivor} took the {len(handed)} triggers of {victim} over "
            f"{takeover:.1f}s after the kill"
        )
        airflow_stack.restart(victim)  # the stack as it was, for the tests after this one

        tis = assert_one_execution_each(airflow_api, stack_aws, runs, since, max_try=1)
    assert controls.calls(action="StopPipelineExecution") == []
    assert len(handed) >= 1 and len(tis) == WAITS


def test_worker_killed_inside_the_start(
    airflow_stack: Stack, airflow_api: AirflowApi, stack_aws: Any
) -> None:
    controls = stack_aws.controls
    since = datetime.now(UTC).isoformat()
    days = [date(2025, 7, 1) + timedelta(days=n) for n in range(STARTS)]
    controls.set_faults("StartPipelineExecution", delay=START_DELAY)
    with pool_slots(airflow_api, STARTS + 4):  # room for all of them, whatever else of the DAG runs
        runs = trigger_runs(airflow_api, days)
        mine = set(runs.values())

        def starts_in_flight() -> bool:
            tis = instances(airflow_api, set(runs))
            answered = {ti["dag_run_id"]: ti["state"] for ti in tis if ti["state"] in ANSWERED}
            assert not answered, (
                f"a start was answered before all {STARTS} were in flight ({answered}): "
                "raise START_DELAY for this machine"
            )
            started = {e["PipelineExecutionDisplayName"] for e in stack_aws.executions(PIPELINE)}
            return started >= mine and [ti["state"] for ti in tis] == ["running"] * STARTS

        wait_for(f"the {STARTS} executions to start", starts_in_flight)
        airflow_stack.kill("worker", signal.SIGKILL)
        killed_at = time.monotonic()
        controls.clear_faults()
        print(f"\n[faults] kill -9 worker with {STARTS} StartPipelineExecution answers held; restarting it")
        airflow_stack.restart("worker")
        tis = assert_one_execution_each(airflow_api, stack_aws, runs, since, max_try=3)
    print(f"[faults] the {STARTS} runs succeeded {time.monotonic() - killed_at:.1f}s after the kill")

    # The kill landed inside each start: the first try of every task instance was lost before it recorded
    # the execution (its answer was still held), and its retry sent the same ClientRequestToken and got
    # the same execution back.
    assert all(ti["try_number"] >= 2 for ti in tis), {ti["dag_run_id"]: ti["try_number"] for ti in tis}
    starts = controls.calls(action="StartPipelineExecution")
    for name in mine:
        answered = sorted(
            (
                c
                for c in starts
                if c["args"].get("PipelineExecutionDisplayName") == name and c["status"] == 200
            ),
            key=lambda c: c["time"],
        )
        assert len(answered) >= 2 and answered[0]["fault"] == "delay", (name, answered)
        assert len({c["args"]["ClientRequestToken"] for c in answered}) == 1, (name, answered)
