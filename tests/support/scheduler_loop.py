"""Run existing DAG runs in-process, concurrently, the way the scheduler and the triggerer would.

``dag.test()`` creates its own manual run and runs each deferred task's trigger *in line* (blocking), so
it never has two pipeline executions in flight. Backfills (many runs at once) and asset-triggered runs
(runs that already exist, with their consumed asset events) need more; this loop gives it, in one
thread for the metadata database (SQLite-safe) plus one background asyncio loop for the triggers:

1. ``SchedulerJobRunner._start_queued_dagruns`` starts queued runs (a backfill's ``max_active_runs``);
2. ``DagRun.update_state`` of each running run gives its schedulable task instances (-> SCHEDULED);
3. ``SchedulerJobRunner._executable_task_instances_to_queued`` — the scheduler's critical section —
   queues those the pools (``include_deferred``), ``max_active_tasks`` and ``max_active_tis_per_dag``
   allow;
4. each queued task instance runs in-process (``run_task_in_process``, as ``dag.test()`` does); one that
   defers has its trigger started on the background loop and stays DEFERRED (holding its pool slot and
   its ``max_active_tis_per_dag`` share) until the trigger fires; it is then resumed with the event.

So many deferred tasks (pipeline executions) are in flight at once, as with a real triggerer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any
from uuid import UUID


class _TriggerLoop:
    """A background asyncio loop running triggers until their first event."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-triggerer", daemon=True)
        self.thread.start()

    def submit(self, trigger: Any) -> Future[Any]:
        async def first_event() -> Any:
            async for event in trigger.run():
                return event
            return None

        return asyncio.run_coroutine_threadsafe(first_event(), self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def unpause(dag_id: str) -> None:
    """The scheduler's queries skip paused DAGs (new DAGs are paused by default)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagModel).filter(DagModel.dag_id == dag_id).update({"is_paused": False})


def _scheduler() -> Any:
    from airflow.executors.executor_loader import ExecutorLoader
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    executor = ExecutorLoader.get_default_executor()
    return SchedulerJobRunner(job=Job(), executors=[executor])


def sdk_task_instance(ti: Any) -> Any:
    """The Task SDK's TaskInstance of the scheduler's ``ti`` (what a worker runs, a triggerer attaches)."""
    from airflow.sdk.api.datamodels._generated import TaskInstance as TaskInstanceSDK

    return TaskInstanceSDK(
        id=UUID(str(ti.id)),
        task_id=ti.task_id,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        try_number=ti.try_number,
        map_index=ti.map_index,
        dag_version_id=UUID(str(ti.dag_version_id)),
    )


def _run_one(ti: Any, task: Any, triggers: _TriggerLoop) -> Future[Any] | None:
    """Run ``ti`` in-process; return the future of its trigger when it deferred."""
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.execution_time.comms import DeferTask
    from airflow.sdk.execution_time.supervisor import run_task_in_process
    from airflow.sdk.serde import deserialize
    from airflow.serialization.serialized_objects import create_scheduler_operator
    from airflow.utils.state import TaskInstanceState

    result = run_task_in_process(ti=sdk_task_instance(ti), task=task)
    ti.set_state(result.ti.state)
    ti.task = create_scheduler_operator(result.ti.task)
    msg = result.msg
    if ti.state == TaskInstanceState.DEFERRED and isinstance(msg, DeferTask):
        kwargs = deserialize(msg.trigger_kwargs)  # type: ignore[type-var]
        trigger = import_string(msg.classpath)(**kwargs)  # type: ignore[arg-type]
        future = triggers.submit(trigger)
        future.next_method = msg.next_method  # type: ignore[attr-defined]
        future.next_kwargs = msg.next_kwargs  # type: ignore[attr-defined]
        return future
    return None


def run_dag_runs(dag: Any, run_ids: Iterable[str] | None = None, *, timeout: float = 150.0) -> list[Any]:
    """Drive the queued/running runs of ``dag`` (all, or ``run_ids``) to a final state; return them.

    ``dag`` is the parsed (SDK) DAG whose tasks run; it must already be synced to the metadata DB.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import timezone
    from airflow.sdk.serde import serialize
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    wanted = set(run_ids) if run_ids is not None else None
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    scheduler = _scheduler()
    triggers = _TriggerLoop()
    pending: dict[tuple[str, str, int], tuple[Future[Any], Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs of {dag.dag_id} not finished after {timeout}s")
            progressed = False
            # Triggers that fired: resume their task instances (as the triggerer does).
            for key, (future, ti) in list(pending.items()):
                if not future.done():
                    continue
                del pending[key]
                progressed = True
                event = future.result()
                with create_session() as session:
                    ti.next_method = future.next_method  # type: ignore[attr-defined]
                    ti.next_kwargs = (
                        {"event": serialize(event.payload)} if event else future.next_kwargs  # type: ignore[attr-defined]
                    )
                    ti.state = TaskInstanceState.SCHEDULED
                    session.add(ti)
            with create_session() as session:
                scheduler._start_queued_dagruns(session)
            with create_session() as session:
                runs = [
                    dr
                    for dr in session.query(DagRun).filter(DagRun.dag_id == dag.dag_id)
                    if wanted is None or dr.run_id in wanted
                ]
                active = [dr for dr in runs if dr.state in (DagRunState.RUNNING, DagRunState.QUEUED)]
                if not active and not pending:
                    session.expunge_all()
                    return runs
                for dr in active:
                    if dr.state != DagRunState.RUNNING:
                        continue
                    dr.dag = scheduler_dag
                    schedulable, _ = dr.update_state(session=session)
                    for ti in schedulable:
                        if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                            ti.try_number += 1
                        ti.state = TaskInstanceState.SCHEDULED
                        ti.scheduled_dttm = timezone.utcnow()
                session.commit()
                queued = scheduler._executable_task_instances_to_queued(max_tis=64, session=session)
                session.commit()
                queued_keys = [(ti.dag_id, ti.run_id, ti.task_id, ti.map_index) for ti in queued]
            for dag_id, run_id, task_id, map_index in queued_keys:
                if wanted is not None and run_id not in wanted:
                    continue
                with create_session() as session:
                    ti = (
                        session.query(TaskInstance)
                        .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
                        .one()
                    )
                    session.expunge(ti)
                progressed = True
                started = _run_one(ti, dag.task_dict[task_id], triggers)
                if started is not None:
                    pending[(run_id, task_id, map_index)] = (started, ti)
            if not progressed:
                time.sleep(0.05)
    finally:
        triggers.close()
