"""The handler killed mid-work: the message returns and is answered on retry.

A child process plays the handler's worker: it runs the handler's own code path — the sensor's
``SageMakerCallbackTrigger`` claims the message, then the work takes its visibility lease exactly as a work
task's pre-execute hook does (``callbacks.lease.hold``) — signals that the work started, and hangs. (It
runs them outside Airflow's task runner: a ``dag.test()`` child would add ~25 s of start-up for the same
code path.) The test SIGKILLs the child's process group — no ``finally``, no ``on_kill``, no answer.
Then: the token is still unanswered, the message was never deleted and, once the dead worker's lease
stops extending it, comes back on the queue; the handler DAG then runs (the retry) in this process,
receives the same message again and answers the token exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.callbacks import (
    FAST_SENSOR,
    VISIBILITY,
    answer_calls,
    callback_pipeline,
    create_queue,
    dag,
    fast_endpoint,
    queue_counts,
    start,
    wait_status,
    wait_until,
    waiting_token,
)

pytestmark = pytest.mark.integration


def build_dag(queue: str, arn: str) -> Any:
    """The handler DAG (the retry)."""
    from airflow.sdk import task
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    @task
    def work(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"passed": True, "rows": 5}

    with dag() as d:
        callback_handler(
            "h",
            queue,
            pipeline_execution_arn=arn,
            work=work,
            visibility_timeout=VISIBILITY,
            sensor_kwargs={**FAST_SENSOR, "deferrable": True},
        )
    return d


CHILD = """
import asyncio, sys, time
from pathlib import Path
from sagemaker_pipelines_provider.callbacks import lease
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackTrigger

trigger = SageMakerCallbackTrigger(
    queue_url={queue!r}, pipeline_execution_arn={arn!r}, visibility_timeout={visibility},
    wait_time_seconds=1, inspect_visibility_timeout=5,
)
message = asyncio.run(anext(trigger.run())).payload["message"]
lease.hold(
    SageMakerCallbackQueueHook(),
    message["queue_url"],
    message["receipt_handle"],
    {visibility},
    token=message["token"],
)
Path({marker!r}).write_text("working")
time.sleep(300)
"""


def test_handler_killed_mid_work_message_returns_and_is_answered_on_retry(
    local_aws: Any, dag_runner: Any, tmp_path: Path
) -> None:
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)
    marker = tmp_path / "work-started"
    script = CHILD.format(queue=queue, arn=arn, visibility=VISIBILITY, marker=str(marker))
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    began = time.monotonic()
    try:
        wait_until(marker.exists, timeout=120, interval=0.2, what="the child's work task to start")
        print(f"child work started after {time.monotonic() - began:.1f}s")
        time.sleep(VISIBILITY)  # the work holds the message for a while: its lease extends it
        assert queue_counts(local_aws, queue) == (0, 1), "the message must stay hidden while the work runs"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(10)

    assert answer_calls(local_aws, token) == [], "nothing may be answered by the killed handler"
    # the dead worker no longer extends the message: it comes back on its own
    wait_until(
        lambda: queue_counts(local_aws, queue) == (1, 0),
        timeout=VISIBILITY * 4,
        what="the message to come back after the kill",
    )

    print(f"message back after {time.monotonic() - began:.1f}s")
    run = dag_runner.run_dag(build_dag(queue, arn))
    print(f"retry done after {time.monotonic() - began:.1f}s")
    assert run.state == "success", dag_runner.task_states(run)
    message = run.get_task_instance("h.wait").xcom_pull(task_ids="h.wait")
    assert message["receive_count"] >= 2
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
    assert wait_status(local_aws, arn, "Succeeded", "Failed")["PipelineExecutionStatus"] == "Succeeded"
    assert queue_counts(local_aws, queue) == (0, 0)
