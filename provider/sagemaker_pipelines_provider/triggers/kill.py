"""Which stops of a deferred task are real kills: the checks both stop paths of a deferred wait apply.

StopPipelineExecution is sent for a deferred :class:`~sagemaker_pipelines_provider.operators.pipeline.
SageMakerPipelineOperator` only when its task instance was really killed:

- **a user or the scheduler ended the task instance** (mark failed / success, clear, DAG run timeout or
  deletion): it left the DEFERRED state, and Airflow's triggerer cancels its trigger with the
  "user action" message, which calls the trigger's ``on_kill``. Airflow 3.3's triggerer sends that same
  message when the trigger was only *reassigned* to another triggerer (its own heartbeat was late: the
  trigger is no longer in its share, ``TriggerRunnerSupervisor.update_triggers``), with the task instance
  still DEFERRED and the other triggerer already waiting. So ``on_kill`` first reads the task instance's
  state (:func:`task_instance_left_deferred`) and stops only when it is no longer DEFERRED;
- **execution_timeout**: the trigger's deadline, or Airflow's deferral timeout on the worker;
- **a SIGTERM of the task while its wait runs in the same process** (``dag.test()`` and
  ``airflow dags test`` run the trigger in the task's process, :func:`waiting_here`): Airflow's task
  runner leaves its SIGTERM handler installed, which calls the operator's ``on_kill``; the operator
  stops the execution and then ends the process (otherwise the handler returns and the in-process wait
  goes on until SIGKILL).

Never: a triggerer restart or shutdown (the trigger is cancelled without the message), a reassignment,
the end of ``dags test`` or its Ctrl-C, a SIGTERM of a worker process whose task already handed its wait
to the triggerer, or a kill that cannot be confirmed (no task instance attached to the trigger, or its
state unreadable within :data:`STATE_CHECK_TIMEOUT`): that is logged and the execution keeps running,
since a stop nobody asked for cannot be undone. (Nor a clear whose next try is already deferred again
when the old trigger gets cancelled: the state check cannot tell the tries apart, and that try has
re-attached to the execution.)
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
