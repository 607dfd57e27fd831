"""The kill rules' building blocks that need no Airflow process (the paths themselves: integration tests)."""

from __future__ import annotations

import asyncio

import pytest
from sagemaker_pipelines_provider.triggers.kill import (
    is_waited_on_here,
    run_to_the_end,
    task_instance_left_deferred,
    waiting_here,
)

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc"


def test_work_run_to_the_end_survives_the_cancellation_of_its_caller() -> None:
    """Airflow's trigger runner cancels a trigger again while its on_kill runs: the stop must not be cut."""

    async def scenario() -> list[str]:
        steps: list[str] = []
        started, release = asyncio.Event(), asyncio.Event()

        async def work() -> None:
            started.set()
            await release.wait()
            steps.append("stopped")

        caller = asyncio.create_task(run_to_the_end(work()))
        await started.wait()
        caller.cancel("__airflow_user_action__")
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        while not steps:
            await asyncio.sleep(0.01)
        return steps

    assert asyncio.run(scenario()) == ["stopped"]


def test_a_kill_that_cannot_be_confirmed_is_no_kill() -> None:
    killed, why = asyncio.run(task_instance_left_deferred(None))
    assert (killed, "cannot be confirmed" in why) == (False, True)

    class Ti:  # outside a triggerer (no Task SDK comms) the state cannot be read
        dag_id, run_id, task_id, map_index = "d", "r", "t", -1

    killed, why = asyncio.run(task_instance_left_deferred(Ti()))
    assert (killed, "could not be read" in why) == (False, True)


def test_waits_in_this_process_are_recorded_while_they_last() -> None:
    assert not is_waited_on_here(ARN)
    with waiting_here(ARN):
        with waiting_here(ARN):
            assert is_waited_on_here(ARN)
        assert is_waited_on_here(ARN)
    assert not is_waited_on_here(ARN)
