"""Step-level status of pipeline executions, shared by every step trigger waiting on one execution.

One :class:`ExecutionStepsPoller` per (event loop, AWS connection, execution) takes the execution's status
from the pipeline's shared :class:`~.poller.ExecutionStatusPoller` (subscribing to it) and, on that poller's
lent client, adds one ``ListPipelineExecutionSteps`` (all pages) per round, however many step tasks of the
execution wait. Subscribers get a :class:`StepsSnapshot` after joining and then on change only; an error is
a snapshot whose ``error`` is set. The lifecycle is :class:`~.shared_service.SharedService`'s; see
docs/triggerer.md.

With an ``event_queue_url`` in its key, the poller also subscribes to that queue's receiver for the
execution's events, which are wake-ups: an event that can decide a step (a step reaching a final status, the
execution ending) makes it list the steps now (events arriving meanwhile are coalesced into one more round);
otherwise it lists them every safety interval (the subscribers' ``poll_interval``). The execution status of a
snapshot is the higher-ranked of the poller's read and the events'; a Failed known from an event only is
confirmed with one DescribePipelineExecution (a late event of an execution resumed since must not end a wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sagemaker_pipelines_provider.triggers.event_receiver import (
    EventQueueKey,
    EventStreamError,
    get_event_receiver,
)
from sagemaker_pipelines_provider.triggers.poller import (
    ExecutionStatusPoller,
    ExecutionUpdate,
    PollerKey,
    get_poller,
)
from sagemaker_pipelines_provider.triggers.shared_service import SharedService, UpdateSubscriber
from sagemaker_pipelines_provider.utils.backoff import error_code
from sagemaker_pipelines_provider.utils.pipeline_events import PipelineEvent, execution_rank
from sagemaker_pipelines_provider.utils.status import is_terminal
from sagemaker_pipelines_provider.utils.step_status import FINISHED_STEP_STATUSES


@dataclass(frozen=True)
class StepsPollerKey:
    """What makes two step subscriptions share a steps poller: the execution poller's key and the ARN."""

    status_key: PollerKey
    pipeline_execution_arn: str
    event_queue_url: str | None = None


@dataclass(frozen=True)
class StepsSnapshot:
    """One observation of an execution: its status and every ListPipelineExecutionSteps entry."""

    execution_status: str | None
    failure_reason: str | None = None
    steps: tuple[Mapping[str, Any], ...] = field(default=())
    error: str | None = None


class ExecutionStepsPoller(SharedService[StepsPollerKey, UpdateSubscriber[StepsSnapshot]]):
    """Lists the steps of one execution for all its subscribers (see the module docstring)."""

    task_name = "sagemaker-pipeline-steps-poller"

    def __init__(self, key: StepsPollerKey) -> None:
        super().__init__(key)
        self.rounds = 0
        self._nudged = asyncio.Event()  # an event asked for a round now
        self._event_status: str | None = None  # the highest execution status an event announced
        self._stream_error: str | None = None
        self._confirmed_failure: str | None = None  # SageMaker's reason, once it confirmed a Failed event

    def describe(self) -> str:
        return self.key.pipeline_execution_arn

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(self, poll_interval: float) -> AsyncIterator[asyncio.Queue[StepsSnapshot]]:
        """Watch the execution's steps; yields the queue on which :class:`StepsSnapshot` s arrive."""
        async with self._subscribed(UpdateSubscriber[StepsSnapshot](poll_interval)) as subscriber:
            yield subscriber.queue

    def _offer(self, snapshot: StepsSnapshot) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(snapshot)

    def _fail(self, error: BaseException) -> None:
        self._offer(StepsSnapshot(execution_status=None, error=f"{type(error).__name__}: {error}"))

    async def _session(self) -> None:
        arn = self.key.pipeline_execution_arn
        events_cm: Any = nullcontext(None)
        if self.key.event_queue_url:
            receiver = get_event_receiver(EventQueueKey(self.key.event_queue_url, self.key.status_key.aws))
            events_cm = receiver.subscribe_execution(arn)
        # The events first, then the execution poller (its first round is the first read of the status).
        async with events_cm as events:
            status_poller = get_poller(self.key.status_key)
            # No await between get_poller and subscribe: the execution poller cannot end in between.
            async with status_poller.subscribe(arn, self._interval(30.0)) as statuses:
                watcher = None if events is None else asyncio.ensure_future(self._watch(events))
                try:
                    await self._poll_rounds(status_poller, statuses)
                finally:
                    if watcher is not None:
                        watcher.cancel()

    async def _poll_rounds(
        self, status_poller: ExecutionStatusPoller, statuses: asyncio.Queue[ExecutionUpdate]
    ) -> None:
        latest: ExecutionUpdate | None = None

        async def poll() -> None:
            nonlocal latest
            if latest is None:
                latest = await self._first_status(statuses)
                if latest is None:  # every subscriber left first
                    return
            while not statuses.empty():
                latest = statuses.get_nowait()
            await self._round(status_poller, latest)

        await self._poll_while_subscribed(poll, default=30.0)

    async def _watch(self, events: asyncio.Queue[PipelineEvent | EventStreamError]) -> None:
        """Take the execution's events as wake-ups (see the module docstring)."""
        while True:
            item = await events.get()
            if isinstance(item, EventStreamError):
                self._stream_error = item.message
            elif item.kind == "execution":
                if self._event_status is None or execution_rank(item.status) > execution_rank(
                    self._event_status
                ):
                    self._event_status = item.status
                if not is_terminal(item.status):
                    continue
            elif item.status not in FINISHED_STEP_STATUSES:
                continue  # a step starting or running decides nothing
            self._nudged.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken by a join, the last leave, or an event."""
        if not self.key.event_queue_url:
            return await super()._pause(seconds)
        if self._nudged.is_set():  # an event came during the round
            return True
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._nudged.wait())}
        done, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return bool(done)

    async def _first_status(self, statuses: asyncio.Queue[ExecutionUpdate]) -> ExecutionUpdate | None:
        """Wait for the execution poller's first update (or for every subscriber to leave)."""
        getter = asyncio.ensure_future(statuses.get())
        try:
            while self._subscribers:
                self._wake.clear()
                waker = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({getter, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if getter in done:
                    return getter.result()
            return None
        finally:
            getter.cancel()

    async def _round(self, status_poller: ExecutionStatusPoller, latest: ExecutionUpdate) -> None:
        self.rounds += 1
        self._nudged.clear()  # an event from now on asks for another round
        arn = self.key.pipeline_execution_arn
        if self._stream_error is not None:
            self._offer(StepsSnapshot(execution_status=None, error=self._stream_error))
            return
        if latest.error is not None:
            self._offer(StepsSnapshot(execution_status=None, error=latest.error))
            return
        status, reason = latest.status, latest.failure_reason
        try:
            async with status_poller.lent.borrow() as client:
                if self._event_status is not None and (
                    status is None or execution_rank(self._event_status) > execution_rank(status)
                ):
                    status, reason = await self._confirm_event_status(status_poller, client, status, reason)
                steps = await status_poller.hook.alist_pipeline_execution_steps(arn, client=client)
        except Exception as err:
            self._offer(
                StepsSnapshot(execution_status=None, error=f"{error_code(err) or type(err).__name__}: {err}")
            )
            return
        self._offer(StepsSnapshot(execution_status=status, failure_reason=reason, steps=tuple(steps)))

    async def _confirm_event_status(
        self, status_poller: ExecutionStatusPoller, client: Any, status: str | None, reason: str | None
    ) -> tuple[str | None, str | None]:
        """The events' status, ahead of the poller's read; a Failed is confirmed with SageMaker first."""
        announced = str(self._event_status)
        if announced != "Failed":
            return announced, reason
        if self._confirmed_failure is None:
            describe = await status_poller.hook.adescribe_pipeline_execution(
                self.key.pipeline_execution_arn, client=client
            )
            if describe.get("PipelineExecutionStatus") != "Failed":  # a late event of a resumed execution
                self._event_status = None
                return status, reason
            self._confirmed_failure = describe.get("FailureReason") or ""
        return announced, self._confirmed_failure or None


def get_steps_poller(key: StepsPollerKey) -> ExecutionStepsPoller:
    """The running event loop's steps poller for ``key``, created on first use (call inside the loop)."""
    return ExecutionStepsPoller.shared(key)


def active_steps_pollers() -> dict[StepsPollerKey, ExecutionStepsPoller]:
    """The steps poller of the running event loop (for tests and diagnostics)."""
    return ExecutionStepsPoller.active()


__all__ = [
    "ExecutionStepsPoller",
    "StepsPollerKey",
    "StepsSnapshot",
    "active_steps_pollers",
    "get_steps_poller",
]
