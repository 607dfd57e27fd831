"""The ``event_queue_url`` / ``safety_poll_interval`` arguments of the waiting operators and sensors.

One place for what they share (``docs/events.md``): the check of the queue before a task starts
anything, the trigger keyword arguments they pass on, and the one log line of a non-deferrable wait given
a queue (it polls as before: events serve deferrable waits, whose triggers share one receiver per queue).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from airflow.sdk.exceptions import AirflowException

from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs


def checked_safety_poll_interval(value: float | None) -> float | None:
    """``value`` as seconds (None: the triggers' default, ``[sagemaker_pipelines]
    event_safety_poll_interval``).

    :raises ValueError: not a finite number > 0.
    """
    if value is None:
        return None
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"safety_poll_interval must be a number of seconds > 0, got {value!r}")
    return seconds


def event_trigger_kwargs(event_queue_url: str | None, safety_poll_interval: float | None) -> dict[str, Any]:
    """The triggers' keyword arguments for an event-driven wait (none without a queue: a polling wait)."""
    if not event_queue_url:
        return {}
    kwargs: dict[str, Any] = {"event_queue_url": event_queue_url}
    if safety_poll_interval is not None:
        kwargs["safety_poll_interval"] = float(safety_poll_interval)
    return kwargs


def check_event_queue(task: Any) -> None:
    """Read the events queue's attributes (GetQueueAttributes) before ``task`` starts anything.

    ``task`` is an operator or sensor of this provider: its ``event_queue_url`` and AWS connection
    (``aws_conn_id``, ``region_name``, ``verify``, ``botocore_config``). Nothing to do without a queue.

    :raises AirflowException: the queue is missing or unreadable with that connection; the message names
        the task and, from :func:`~sagemaker_pipelines_provider.triggers.event_receiver.
        check_event_queue_sync`, the queue, the AWS error and what the queue needs (docs/events.md).
    """
    from sagemaker_pipelines_provider.triggers.event_receiver import check_event_queue_sync

    queue_url = task.event_queue_url
    if not queue_url:
        return
    aws = AwsConnectionArgs.of(task.aws_conn_id, task.region_name, task.verify, task.botocore_config)
    try:
        check_event_queue_sync(aws.hook(SageMakerCallbackQueueHook), queue_url)
    except Exception as err:
        raise AirflowException(
            f"Task {task.task_id}: {err} Nothing was started; leave event_queue_url out to wait by polling."
        ) from err


def log_polling_wait(log: logging.Logger | Any, event_queue_url: str | None) -> None:
    """The one line of a non-deferrable wait given ``event_queue_url``: it polls; events serve deferred
    waits (nothing is logged without a queue)."""
    if event_queue_url:
        log.info(
            "Waiting by polling in the worker: the events of %s serve deferrable waits only (a trigger "
            "subscribes to them); set deferrable=True to wait on events",
            event_queue_url,
        )


__all__ = [
    "check_event_queue",
    "checked_safety_poll_interval",
    "event_trigger_kwargs",
    "log_polling_wait",
]
