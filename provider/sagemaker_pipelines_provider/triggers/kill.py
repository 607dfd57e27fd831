"""Which stops of a deferred task are real kills: the checks both stop paths of a deferred wait apply.

StopPipelineExecution is sent for a deferred operator only when its task instance was really killed: it
left the DEFERRED state (:func:`task_instance_left_deferred`; Airflow 3.3's triggerer also calls ``on_kill``
when it merely hands the trigger to another triggerer), its ``execution_timeout`` passed, or a SIGTERM hit
the task while its wait ran in the same process (:func:`waiting_here`). Never on a triggerer restart, a
reassignment, or a kill that cannot be confirmed. The full list is in docs/triggerer.md.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

#: Seconds ``on_kill`` waits for the task instance's state. The first Execution API call of a triggerer
#: can take 10-15 s (the in-process API starts up); later ones take milliseconds.
STATE_CHECK_TIMEOUT = 60.0

_waits: dict[int, str] = {}
_wait_ids = itertools.count()
_unfinished: set[asyncio.Future[None]] = set()  # work of run_to_the_end, referenced until it is done


@contextmanager
def waiting_here(pipeline_execution_arn: str) -> Iterator[None]:
    """Record that a trigger of this process waits on the execution (for as long as the block runs)."""
    wait_id = next(_wait_ids)
    _waits[wait_id] = pipeline_execution_arn
    try:
        yield
    finally:
        _waits.pop(wait_id, None)


def is_waited_on_here(pipeline_execution_arn: str) -> bool:
    """True while a trigger of this process waits on the execution (safe to call in a signal handler)."""
    return pipeline_execution_arn in list(_waits.values())


async def run_to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Await ``work`` in a task of its own that a cancellation of the caller does not abandon.

    For ``on_kill``: until the trigger's task has ended, Airflow 3.3's trigger runner cancels it again
    with the user-action message on every loop (about once a second, as long as the trigger is in the
    supervisor's ``cancelling_triggers``), and bounds ``on_kill`` by ``[triggerer] on_kill_timeout``; either
    would cut a state check or a stop halfway. The work goes on in the triggerer's event loop.
    """
    task = asyncio.ensure_future(work)
    _unfinished.add(task)
    task.add_done_callback(_unfinished.discard)
    await asyncio.shield(task)


async def task_instance_left_deferred(
    task_instance: Any, *, timeout: float = STATE_CHECK_TIMEOUT
) -> tuple[bool, str]:
    """``(killed, why)`` for the task instance of a trigger that Airflow cancelled as a user action.

    ``killed`` is True only when Airflow reports the task instance in a state other than DEFERRED (or
    no longer reports it: its DAG run was deleted). Still DEFERRED — the trigger was reassigned to
    another triggerer — or unknown gives False; ``why`` says which, for the log.
    """
    if task_instance is None:
        return False, "no task instance is attached to the trigger, so a kill cannot be confirmed"
    try:
        states = await asyncio.wait_for(asyncio.to_thread(_task_states, task_instance), timeout)
    except Exception as err:  # TimeoutError included: not confirmed, so not a kill
        return False, f"the task instance's state could not be read ({type(err).__name__}: {err})"
    map_index = getattr(task_instance, "map_index", -1)
    map_index = -1 if map_index is None else int(map_index)
    key = task_instance.task_id if map_index < 0 else f"{task_instance.task_id}_{map_index}"
    in_run = (states or {}).get(task_instance.run_id) or {}
    if key not in in_run:
        return True, "the task instance no longer exists (its DAG run was deleted)"
    state = in_run[key]
    state = getattr(state, "value", state)
    if state == "deferred":
        return False, "the task instance is still deferred (the trigger was handed to another triggerer)"
    return True, f"the task instance is now {state or 'cleared'}"


def _task_states(task_instance: Any) -> dict[str, Any]:
    """Ask Airflow (the triggerer's supervisor, through the Task SDK) for the task instance's state."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    map_index = getattr(task_instance, "map_index", None)
    return RuntimeTaskInstance.get_task_states(
        dag_id=task_instance.dag_id,
        task_ids=[task_instance.task_id],
        run_ids=[task_instance.run_id],
        map_index=None if map_index is None else int(map_index),
    )
