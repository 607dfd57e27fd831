"""Triggers that wait for SageMaker callback messages on an SQS queue.

- :class:`SageMakerCallbackTrigger` — what :class:`~sagemaker_pipelines_provider.sensors.callback.
  SageMakerCallbackSensor` defers to: fires once, with the first message matching its route.
- :class:`SageMakerCallbackEventTrigger` — a ``BaseEventTrigger`` for an ``AssetWatcher``: one asset event
  per matching callback message.

Both share their queue's receiver (:mod:`.callback_receiver`) and never delete a message: it is handed over
claimed, and only the answer to its token deletes it. See docs/triggerer.md. ``CallbackMessageTrigger`` and
``CallbackMessageEventTrigger`` are deprecated aliases.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from sagemaker_pipelines_provider.callbacks.message import CallbackMessage, CallbackRoute, mask_token
from sagemaker_pipelines_provider.triggers.callback_receiver import ReceiverKey, get_receiver
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs, WithAwsConnection
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy, Retryable, classify
from sagemaker_pipelines_provider.utils.deprecation import renamed

#: Defaults shared by the sensor, the triggers and the task group.
DEFAULT_VISIBILITY_TIMEOUT = 300
DEFAULT_WAIT_TIME_SECONDS = 20
DEFAULT_INSPECT_VISIBILITY_TIMEOUT = 30

#: Backoff of the event trigger between failed receive loops (it runs for the life of the watcher).
EVENT_TRIGGER_RESTART_POLICY = BackoffPolicy(base_delay=1.0, max_delay=60.0)

_REPR_CHARS = 300


class CallbackTriggerEvent(TriggerEvent):
    """A ``TriggerEvent`` whose ``repr`` (what the triggerer logs) never prints a large payload in full."""

    def __repr__(self) -> str:
        return f"CallbackTriggerEvent<{_payload_preview(self.payload)}>"

    def __str__(self) -> str:
        return self.__repr__()


def _payload_preview(payload: Any) -> str:
    if isinstance(payload, dict):
        inner = payload.get("message")
        message: dict[str, Any] = inner if isinstance(inner, dict) else payload
        shown = {
            "status": payload.get("status"),
            "message_id": message.get("message_id"),
            "token": mask_token(message.get("token")),
            "pipeline_execution_arn": message.get("pipeline_execution_arn"),
            "callback_status": message.get("status"),
            "arguments": sorted((message.get("arguments") or {}).keys())
            if isinstance(message.get("arguments"), dict)
            else None,
        }
        text = repr({k: v for k, v in shown.items() if v is not None})
    else:
        text = repr(payload)
    return text if len(text) <= _REPR_CHARS else f"{text[:_REPR_CHARS]}…"


class _CallbackTriggerArgs(WithAwsConnection):
    """The serialisable arguments shared by both triggers."""

    def __init__(
        self,
        *,
        queue_url: str,
        pipeline_execution_arn: str | None = None,
        pipeline_name: str | None = None,
        match_arguments: dict[str, Any] | None = None,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        wait_time_seconds: int = DEFAULT_WAIT_TIME_SECONDS,
        inspect_visibility_timeout: int = DEFAULT_INSPECT_VISIBILITY_TIMEOUT,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> None:
        self.queue_url = queue_url
        self.pipeline_execution_arn = pipeline_execution_arn
        self.pipeline_name = pipeline_name
        self.match_arguments = match_arguments
        self.visibility_timeout = int(visibility_timeout)
        self.wait_time_seconds = int(wait_time_seconds)
        self.inspect_visibility_timeout = int(inspect_visibility_timeout)
        self.aws = AwsConnectionArgs.of(aws_conn_id, region_name, verify, botocore_config)

    def _common_kwargs(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "pipeline_execution_arn": self.pipeline_execution_arn,
            "pipeline_name": self.pipeline_name,
            "match_arguments": self.match_arguments,
            "visibility_timeout": self.visibility_timeout,
            "wait_time_seconds": self.wait_time_seconds,
            "inspect_visibility_timeout": self.inspect_visibility_timeout,
            **self.aws.to_kwargs(),
        }

    @property
    def route(self) -> CallbackRoute:
        return CallbackRoute.from_fields(
            self.pipeline_execution_arn, self.pipeline_name, self.match_arguments
        )

    async def _next_message(self) -> CallbackMessage:
        receiver = get_receiver(
            ReceiverKey(self.queue_url, self.aws), inspect_visibility_timeout=self.inspect_visibility_timeout
        )
        return await receiver.wait_for(
            self.route, visibility_timeout=self.visibility_timeout, wait_time_seconds=self.wait_time_seconds
        )


class SageMakerCallbackTrigger(_CallbackTriggerArgs, BaseTrigger):
    """Fire once with the first callback message on ``queue_url`` that matches the route.

    Events (payload ``status``):

    - ``success`` — ``message`` is the claimed message's result dict (see
      :meth:`~sagemaker_pipelines_provider.callbacks.message.CallbackMessage.to_result`), hidden for
      ``visibility_timeout`` seconds from the claim;
    - ``timeout`` — ``timeout_at`` (ISO-8601) passed first (the triggerer enforces the deferral timeout
      too; this also bounds in-process runs such as ``dag.test()``);
    - ``error`` — receiving failed after the backoff budget (``error`` says why).

    On kill or cancellation the wait is unregistered; a message claimed at that very moment is released
    at once, or returns after its visibility timeout. A triggerer crash after the claim loses nothing: the
    message returns after ``visibility_timeout`` and the re-created trigger receives it again.
    """

    def __init__(self, *, timeout_at: str | None = None, **kwargs: Any) -> None:
        _CallbackTriggerArgs.__init__(self, **kwargs)
        BaseTrigger.__init__(self)
        self.timeout_at = timeout_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {**self._common_kwargs(), "timeout_at": self.timeout_at},
        )

    def _seconds_left(self) -> float | None:
        if not self.timeout_at:
            return None
        deadline = dt.datetime.fromisoformat(self.timeout_at)
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=dt.UTC)
        return (deadline - dt.datetime.now(dt.UTC)).total_seconds()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        left = self._seconds_left()
        try:
            if left is None:
                message = await self._next_message()
            elif left <= 0:
                raise TimeoutError
            else:
                message = await asyncio.wait_for(self._next_message(), timeout=left)
        except TimeoutError:
            yield CallbackTriggerEvent(
                payload={"status": "timeout", "queue_url": self.queue_url, "route": self.route.describe()}
            )
            return
        except Exception as err:
            yield CallbackTriggerEvent(
                payload={
                    "status": "error",
                    "queue_url": self.queue_url,
                    "error": f"{type(err).__name__}: {err}",
                }
            )
            return
        yield CallbackTriggerEvent(
            payload={
                "status": "success",
                "message": message.to_result(visibility_timeout=self.visibility_timeout),
            }
        )


class SageMakerCallbackEventTrigger(_CallbackTriggerArgs, BaseEventTrigger):
    """For an ``AssetWatcher``: one asset event per matching callback message, for the life of the watcher.

    Example — a handler DAG scheduled by callbacks of the ``training`` pipeline::

        callbacks = Asset(
            "sagemaker-callbacks-training",
            watchers=[
                AssetWatcher(
                    name="training-callbacks",
                    trigger=SageMakerCallbackEventTrigger(queue_url=QUEUE_URL, pipeline_name="training"),
                )
            ],
        )

        with DAG("validate_model", schedule=[callbacks]):
            callback_handler("validate", from_asset=callbacks, work=..., outputs=...)

    The event's payload (the asset event's ``extra["payload"]``) is the claimed message's result dict. The
    message is **not** deleted: it stays hidden for ``visibility_timeout`` seconds — size it to the time
    from the event to the handler run's first task, which extends it from then on — and is deleted by the
    handler run once the token is answered. No-loss rule: if the event is not persisted, the run not
    created, or the handler dies, the message comes back and fires a new event. A copy of a message whose
    token is already answered fires no event: the receiver deletes it. A duplicate received while the
    token still waits (a slow handler) causes a second run; its work is skipped once the token is answered
    and its answer, refused as already answered, deletes its copy.
    """

    def __init__(self, **kwargs: Any) -> None:
        _CallbackTriggerArgs.__init__(self, **kwargs)
        BaseEventTrigger.__init__(self)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{self.__class__.__module__}.{self.__class__.__qualname__}", self._common_kwargs())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        failures = 0
        while True:
            try:
                message = await self._next_message()
            except Exception as err:
                if classify(err, action="ReceiveMessage") is None:
                    raise
                delay = EVENT_TRIGGER_RESTART_POLICY.delay(failures, Retryable.TRANSIENT)
                failures += 1
                self.log.warning("Receiving callbacks failed (%s); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            yield CallbackTriggerEvent(payload=message.to_result(visibility_timeout=self.visibility_timeout))


__all__ = [
    "DEFAULT_INSPECT_VISIBILITY_TIMEOUT",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "DEFAULT_WAIT_TIME_SECONDS",
    "CallbackTriggerEvent",
    "SageMakerCallbackEventTrigger",
    "SageMakerCallbackTrigger",
]

__getattr__ = renamed(
    __name__,
    globals(),
    {
        "CallbackMessageTrigger": "SageMakerCallbackTrigger",
        "CallbackMessageEventTrigger": "SageMakerCallbackEventTrigger",
    },
)
