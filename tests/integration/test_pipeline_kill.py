"""A deferred SageMakerPipelineOperator stops its execution on a real kill only (issue 15, item 7).

Real kills: a user marking the task failed / success or clearing it, ``execution_timeout``, a SIGTERM of
the task. Not kills: a triggerer restart, a trigger handed to another triggerer (Airflow 3.3 cancels it
with the same "user action" message as a real kill, the task instance still deferred), the end or a
Ctrl-C of ``airflow dags test``, a SIGTERM of a worker process after its task deferred.

Airflow runs here as users run it: real ``airflow triggerer`` processes and ``airflow dags test`` as a
command on the tests' metadata DB, and in-process Airflow's own task runner (and the SIGTERM handler it
leaves installed). ``execution_timeout`` and the deferral-timeout backstop are covered in
``test_pipeline_operator.py``; the user-action cancellation in Airflow's ``TriggerRunner``, state by
state, in ``test_pipeline_trigger.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_processes import (
    AirflowProcess,
    defer_in_this_process,
    share_the_sqlite_db,
    start_triggerer,
    trigger_id_of,
    trigger_log_events,
    trigger_owner,
)
from tests.support.pipelines import (
    POLL,
    START_DATE,
    CallbackAnswerer,
    calls,
    create_pipeline,
    executions,
    fast_endpoint,
    processing_step,
    unique,
    wait_until,
)

pytestmark = pytest.mark.integration

USER_ACTION_CANCEL = "Trigger cancelled by user action, invoking on_kill"


def long_running_task(dag_id: str, pipeline: str) -> Any:
    from airflow.sdk import DAG
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    with DAG(dag_id, schedule=None, start_date=START_DATE, catchup=False) as dag:
        SageMakerPipelineOperator(task_id="run", pipeline_name=pipeline, deferrable=True, poll_interval=POLL)
    return dag


def polls_since(local_aws: Any, pipeline: str, seq: int) -> list[dict[str, Any]]:
    return [
        c
        for c in local_aws.controls.calls(action="ListPipelineExecutions", since=seq)
        if c["args"].get("PipelineName") == pipeline
    ]


def last_seq(local_aws: Any) -> int:
    return int(local_aws.controls.calls()[-1]["seq"])


@pytest.mark.timeout(300)
def test_a_trigger_handed_to_another_triggerer_keeps_running_and_mark_failed_stops_it_once(
    local_aws: Any, dag_runner: Any, airflow_db: Path, tmp_path: Path
) -> None:
    """Two real triggerers: A's trigger runner hangs (SIGSTOP) long enough for Airflow's watchdog to stop
    A's heartbeat, B takes the trigger over, A's runner comes back and A cancels its copy with the
    user-action message (``update_triggers``: the trigger left A's share). Then the user marks the task
    failed: B's copy is cancelled the same way, and that one is a kill."""
    share_the_sqlite_db()
    fast_endpoint(local_aws, step_seconds=600)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Slow")])
    deferred = defer_in_this_process(dag_runner, long_running_task(unique("kill-ha"), pipeline), "run")
    trigger_id = trigger_id_of(deferred)
    (execution,) = executions(local_aws, pipeline)
    arn = execution["PipelineExecutionArn"]

    first, first_job = start_triggerer(tmp_path / "triggerer-a.log")
    second = None
    try:
        wait_until(lambda: trigger_owner(trigger_id) == first_job, timeout=60, what="A to take the trigger")
        seq = last_seq(local_aws)
        wait_until(lambda: polls_since(local_aws, pipeline, seq), timeout=60, what="A's trigger polling")

        first.freeze_children()  # A's runner hangs: A stops heartbeating, after 4 s it is dead to B
        second, second_job = start_triggerer(tmp_path / "triggerer-b.log")
        wait_until(lambda: trigger_owner(trigger_id) == second_job, timeout=90, what="B to take the trigger")
        seq = last_seq(local_aws)
        wait_until(lambda: polls_since(local_aws, pipeline, seq), timeout=60, what="B's trigger polling")
        first.thaw_children()  # A finds the trigger gone from its share and cancels it as a "user action"
        wait_until(
            lambda: "trigger completed" in trigger_log_events(airflow_db, deferred, first_job),
            timeout=60,
            what="A to cancel its copy of the trigger",
        )
        events_a = trigger_log_events(airflow_db, deferred, first_job)
        assert USER_ACTION_CANCEL in events_a  # Airflow did call on_kill ...
        assert calls(local_aws, "StopPipelineExecution", pipeline) == []  # ... and nothing was stopped
        assert any("the task instance is still deferred" in e for e in events_a), events_a
        assert executions(local_aws, pipeline)[0]["PipelineExecutionStatus"] == "Executing"
        assert deferred.state() == "deferred"
        seq = last_seq(local_aws)
        wait_until(lambda: polls_since(local_aws, pipeline, seq), timeout=60, what="B still polling")

        deferred.set_state("failed")  # the user marks the task failed: a real kill
        (stop,) = wait_until(
            lambda: calls(local_aws, "StopPipelineExecution", pipeline), timeout=150, what="the stop"
        )
        wait_until(
            lambda: "trigger completed" in trigger_log_events(airflow_db, deferred, second_job),
            timeout=150,
            what="B to end the trigger",
        )
        events_b = trigger_log_events(airflow_db, deferred, second_job)
        assert USER_ACTION_CANCEL in events_b
        assert any("the task instance is now failed" in e for e in events_b), events_b
        assert len(calls(local_aws, "StopPipelineExecution", pipeline)) == 1
        assert stop["args"]["PipelineExecutionArn"] == arn
        assert stop["args"]["ClientRequestToken"] == deferred.trigger().stop_token
        wait_until(
            lambda: executions(local_aws, pipeline)[0]["PipelineExecutionStatus"] == "Stopped",
            what="Stopped",
        )
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_sigterm_of_a_worker_after_its_task_deferred_stops_nothing(local_aws: Any, dag_runner: Any) -> None:
    """The task ran in this process as on a worker and deferred; Airflow's task runner left its SIGTERM
    handler (which calls ``on_kill``) installed. A SIGTERM now is a worker shutting down, not a kill of the
    deferred task: nothing is stopped. The same SIGTERM while the trigger waits in this process (as in
    ``dag.test()``) is a kill of the waiting task: one stop, and the process is told to exit."""
    from sagemaker_pipelines_provider.triggers.kill import is_waited_on_here

    fast_endpoint(local_aws, step_seconds=600)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Slow")])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        deferred = defer_in_this_process(
            dag_runner, long_running_task(unique("kill-worker"), pipeline), "run"
        )
        airflow_handler = signal.getsignal(signal.SIGTERM)
        assert callable(airflow_handler) and airflow_handler is not previous, "Airflow's task runner handler"
        (execution,) = executions(local_aws, pipeline)
        arn = execution["PipelineExecutionArn"]

        airflow_handler(signal.SIGTERM, None)
        assert calls(local_aws, "StopPipelineExecution", pipeline) == []
        assert executions(local_aws, pipeline)[0]["PipelineExecutionStatus"] == "Executing"

        async def first_event() -> Any:
            async with contextlib.aclosing(deferred.trigger().run()) as events:
                return await anext(events)

        loop = asyncio.new_event_loop()
        waiting = threading.Thread(target=loop.run_forever, daemon=True)
        waiting.start()
        wait = asyncio.run_coroutine_threadsafe(first_event(), loop)
        try:
            wait_until(lambda: is_waited_on_here(arn), what="the trigger to wait in this process")
            with pytest.raises(SystemExit) as exited:
                airflow_handler(signal.SIGTERM, None)
            assert exited.value.code == 128 + signal.SIGTERM
        finally:
            wait.cancel()
            wait_until(lambda: not is_waited_on_here(arn), what="the cancelled trigger to end")
            loop.call_soon_threadsafe(loop.stop)
            waiting.join(10)
        (stop,) = calls(local_aws, "StopPipelineExecution", pipeline)
        assert stop["args"]["PipelineExecutionArn"] == arn
    finally:
        signal.signal(signal.SIGTERM, previous)


# -----------------------------------------------------------------------------------------------------------
# `airflow dags test` of the README's short example: a deferred wait that lasts (the Callback step
# ValidateModel of the seeded `training` pipeline waits for an answer).

SHORT_EXAMPLE = """
import pendulum
from airflow.sdk import DAG

from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

with DAG("{dag_id}", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    SageMakerPipelineOperator(
        task_id="train",
        pipeline_name="training",
        parameters={{"TrainingDataUrl": "s3://my-bucket/features/{{{{ ds }}}}/", "Epochs": 10}},
        display_name="train-{{{{ ds_nodash }}}}",
        deferrable=True,
        poll_interval=1,
    )
"""


def dags_test(tmp_path: Path, dag_id: str) -> AirflowProcess:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "short_example.py").write_text(SHORT_EXAMPLE.format(dag_id=dag_id))
    return AirflowProcess(
        ["dags", "test", dag_id, "2026-01-01"],
        tmp_path / "dags-test.log",
        {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)},
    )


def waiting_on_the_callback(local_aws: Any, process: AirflowProcess) -> str:
    """Wait until the task deferred and its trigger (in line, in the process) polls; the execution's ARN."""
    (start,) = wait_until(
        lambda: calls(local_aws, "StartPipelineExecution", "training"),
        timeout=180,
        interval=0.2,
        what=f"the execution to start (log: {process.log})",
    )
    seq = int(start["seq"])
    wait_until(
        lambda: polls_since(local_aws, "training", seq), timeout=60, interval=0.2, what="the trigger polling"
    )
    (execution,) = executions(local_aws, "training")
    return str(execution["PipelineExecutionArn"])


@pytest.mark.timeout(300)  # the process must exit by itself after the SIGTERM: no timed assertion here
def test_a_sigterm_of_airflow_dags_test_while_deferred_stops_the_execution_and_ends_the_process(
    local_aws: Any, airflow_db: Path, tmp_path: Path
) -> None:
    local_aws.seed()
    process = dags_test(tmp_path, unique("short-sigterm"))
    try:
        arn = waiting_on_the_callback(local_aws, process)
        process.signal(signal.SIGTERM)
        status = process.wait()
        assert status == 128 + signal.SIGTERM, process.output()[-3000:]
        (stop,) = calls(local_aws, "StopPipelineExecution", "training")
        assert stop["args"]["PipelineExecutionArn"] == arn
        assert executions(local_aws, "training")[0]["PipelineExecutionStatus"] in ("Stopping", "Stopped")
    finally:
        process.close()


@pytest.mark.timeout(300)
def test_ctrl_c_of_airflow_dags_test_while_deferred_stops_nothing(
    local_aws: Any, airflow_db: Path, tmp_path: Path
) -> None:
    local_aws.seed()
    process = dags_test(tmp_path, unique("short-sigint"))
    try:
        waiting_on_the_callback(local_aws, process)
        process.signal(signal.SIGINT)
        process.wait()
        assert calls(local_aws, "StopPipelineExecution") == [], process.output()[-3000:]
        assert executions(local_aws, "training")[0]["PipelineExecutionStatus"] == "Executing"
    finally:
        process.close()


@pytest.mark.timeout(300)
def test_airflow_dags_test_of_a_deferred_run_that_ends_stops_nothing(
    local_aws: Any, airflow_db: Path, tmp_path: Path
) -> None:
    local_aws.seed()
    process = dags_test(tmp_path, unique("short-ends"))
    try:
        with CallbackAnswerer(local_aws, "training", {"validation_passed": True, "approved_by": "kill-test"}):
            waiting_on_the_callback(local_aws, process)
            status = process.wait()
        assert status == 0, process.output()[-3000:]
        assert calls(local_aws, "StopPipelineExecution") == []
        assert executions(local_aws, "training")[0]["PipelineExecutionStatus"] == "Succeeded"
    finally:
        process.close()
