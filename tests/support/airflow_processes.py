"""Helpers of the kill tests (no tests here): a task deferred in the metadata DB, Airflow's Task SDK comms in
this process, real ``airflow`` processes (triggerers, ``airflow dags test``) on the tests' metadata DB.

Each ``airflow`` child process runs in its own session and gets SIGTERM if the test process dies
(``PR_SET_PDEATHSIG``), so none outlives the test run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.support.scheduler_loop import sdk_task_instance
from tests.support.waiting import wait_until

#: Runs ``python -m airflow ARGS`` with SIGTERM on the death of the parent (the test process).
_AIRFLOW_CHILD = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
    "os.execv(sys.executable, [sys.executable, '-m', 'airflow', *sys.argv[1:]])"
)


@dataclass
class DeferredTask:
    """A task instance that ran in this process until it deferred (DEFERRED, with its trigger row)."""

    ti: Any  # the scheduler's TaskInstance (detached from its session)
    sdk_ti: Any  # the Task SDK TaskInstance (what a triggerer attaches to the trigger)
    defer: Any  # the DeferTask message
    scheduler_dag: Any  # the SerializedDAG (what the REST API acts on: mark failed / success)

    def trigger(self) -> Any:
        """The trigger instance, rebuilt from its serialised arguments as a triggerer does."""
        from airflow.sdk._shared.module_loading import import_string
        from airflow.sdk.serde import deserialize

        return import_string(self.defer.classpath)(**deserialize(self.defer.trigger_kwargs))  # type: ignore[arg-type]

    def state(self) -> str | None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            ti = (
                session.query(TaskInstance)
                .filter_by(dag_id=self.ti.dag_id, run_id=self.ti.run_id, task_id=self.ti.task_id)
                .one()
            )
            return None if ti.state is None else str(ti.state)

    def set_state(self, state: str) -> None:
        """Mark the task instance failed / success as the REST API (and the UI) does."""
        self.scheduler_dag.set_task_instance_state(
            task_id=self.ti.task_id, run_id=self.ti.run_id, state=state, commit=True
        )

    def clear(self) -> None:
        """Clear the task instance as the REST API (and the UI) does."""
        from airflow.models.taskinstance import TaskInstance, clear_task_instances
        from airflow.utils.session import create_session

        with create_session() as session:
            tis = (
                session.query(TaskInstance)
                .filter_by(dag_id=self.ti.dag_id, run_id=self.ti.run_id, task_id=self.ti.task_id)
                .all()
            )
            clear_task_instances(tis, session)


def defer_in_this_process(dag_runner: Any, dag: Any, task_id: str) -> DeferredTask:
    """Create a manual run of ``dag`` and run ``task_id`` in this process (as a worker would) until it
    defers. Nothing runs the trigger: the task instance stays DEFERRED in the metadata DB."""
    from airflow.models.dagrun import get_or_create_dagrun
    from airflow.sdk import timezone
    from airflow.sdk.execution_time.comms import DeferTask
    from airflow.sdk.execution_time.supervisor import run_task_in_process
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType

    dag_runner.sync_dag(dag)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = timezone.utcnow()
    with create_session() as session:
        run = get_or_create_dagrun(
            dag=scheduler_dag,
            start_date=now,
            logical_date=None,
            data_interval=None,
            run_after=now,
            run_id=f"manual__kill_{time.time_ns()}",
            session=session,
            conf=None,
            triggered_by=DagRunTriggeredByType.TEST,
            triggering_user_name="kill-test",
        )
        run.dag = scheduler_dag
        schedulable, _ = run.update_state(session=session)
        (ti,) = [t for t in schedulable if t.task_id == task_id]
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        session.refresh(ti)
        session.expunge(ti)
    ti.set_state(TaskInstanceState.QUEUED)
    sdk_ti = sdk_task_instance(ti)
    result = run_task_in_process(ti=sdk_ti, task=dag.task_dict[task_id])
    assert isinstance(result.msg, DeferTask), f"{task_id} did not defer: {result.state} {result.error!r}"
    deferred = DeferredTask(ti=ti, sdk_ti=sdk_ti, defer=result.msg, scheduler_dag=scheduler_dag)
    assert deferred.state() == "deferred"
    return deferred


@contextlib.contextmanager
def task_sdk_comms(ti_id: UUID) -> Iterator[None]:
    """Serve the Task SDK's calls to Airflow (``RuntimeTaskInstance.get_task_states`` ...) in this process
    from the metadata DB, as ``dag.test()`` does for its in-line triggers and a triggerer's supervisor
    does for its triggers."""
    import psutil
    import structlog
    from airflow.sdk.execution_time.supervisor import (
        InProcessSupervisorComms,
        InProcessTestSupervisor,
        set_supervisor_comms,
    )

    supervisor = InProcessTestSupervisor(
        id=ti_id,
        pid=os.getpid(),
        process=psutil.Process(),
        process_log=structlog.get_logger(logger_name="task").bind(),
        client=InProcessTestSupervisor._api_client(),
    )
    supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
    with set_supervisor_comms(supervisor.comms):
        yield


class AirflowProcess:
    """``airflow ARGS`` in a child process (own session, output in ``log``) on the tests' metadata DB."""

    def __init__(self, args: list[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.log = log
        self._output = log.open("wb")
        self._frozen: list[Any] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", _AIRFLOW_CHILD, *args],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process only."""
        self.process.send_signal(signum)

    def freeze_children(self) -> None:
        """SIGSTOP the process's children (a triggerer's trigger runner: its event loop hangs)."""
        import psutil

        self._frozen = psutil.Process(self.pid).children()
        assert self._frozen, "the process has no child to freeze"
        for child in self._frozen:
            child.suspend()

    def thaw_children(self) -> None:
        for child in self._frozen:
            child.resume()

    def wait(self) -> int:
        """Wait for the process to exit (bounded by the test's timeout, not here); its exit status."""
        return self.process.wait()

    def close(self) -> None:
        """End the process group if still running (SIGCONT, SIGTERM, then SIGKILL) and close the log."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGCONT)
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        self._output.close()

    def output(self) -> str:
        self._output.flush()
        return self.log.read_text(errors="replace")


#: Triggerers that hand triggers over quickly: a heartbeat every second; no heartbeat once the trigger
#: runner's event loop has been silent for 2 s (Airflow's hung-loop watchdog); dead to the others after 4 s
#: without a heartbeat.
TRIGGERER_ENV = {
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__RUNNER_HEALTH_CHECK_THRESHOLD": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "4",
}


def share_the_sqlite_db() -> None:
    """Switch the tests' SQLite file to WAL (persistent): readers no longer block the writer, which several
    Airflow processes on one file need (rollback-journal locks stall triggerer heartbeats for ~25 s)."""
    from airflow import settings
    from sqlalchemy import text

    assert settings.engine is not None
    if settings.engine.dialect.name == "sqlite":
        with settings.engine.connect() as connection:
            connection.execute(text("PRAGMA journal_mode=WAL"))


def triggerer_job_ids() -> list[int]:
    """Ids of the triggerer jobs that have not ended, oldest first."""
    from airflow.jobs.job import Job
    from airflow.utils.session import create_session

    with create_session() as session:
        jobs = session.query(Job).filter(Job.job_type == "TriggererJob", Job.end_date.is_(None))
        return sorted(job.id for job in jobs)


def start_triggerer(log: Path) -> tuple[AirflowProcess, int]:
    """Start ``airflow triggerer`` (no log server: several run at once); return it and its job id."""
    before = set(triggerer_job_ids())
    process = AirflowProcess(["triggerer", "--skip-serve-logs"], log, TRIGGERER_ENV)
    try:
        job_id = wait_until(
            lambda: next((j for j in triggerer_job_ids() if j not in before), None),
            timeout=120,
            interval=0.2,
            what=f"the triggerer's job (log: {log})",
        )
    except BaseException:
        process.close()
        raise
    return process, job_id


def trigger_owner(trigger_id: int) -> int | None:
    """The id of the triggerer job the trigger is assigned to."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    with create_session() as session:
        trigger = session.get(Trigger, trigger_id)
        return None if trigger is None else trigger.triggerer_id


def trigger_id_of(deferred: DeferredTask) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(id=deferred.ti.id).one()
        assert ti.trigger_id is not None, "a deferred task instance has a trigger row"
        return int(ti.trigger_id)


def trigger_log_events(airflow_home: Path, deferred: DeferredTask, job_id: int) -> list[str]:
    """The events the trigger logged in triggerer ``job_id`` (its per-trigger log file)."""
    import json

    ti = deferred.ti
    path = (
        airflow_home
        / "logs"
        / f"dag_id={ti.dag_id}"
        / f"run_id={ti.run_id}"
        / f"task_id={ti.task_id}"
        / f"attempt={ti.try_number}.log.trigger.{job_id}.log"
    )
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            events.append(str(json.loads(line).get("event")))
    return events
