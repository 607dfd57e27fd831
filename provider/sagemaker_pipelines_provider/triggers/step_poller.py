"""Step-level status of pipeline executions, shared by every step trigger waiting on one execution.

Built on the shared execution poller by composition, not beside it: one :class:`ExecutionStepsPoller`
exists per (event loop, connection, region, verify, botocore config, execution ARN). It subscribes to the
pipeline's :class:`~sagemaker_pipelines_provider.triggers.poller.ExecutionStatusPoller` for the
execution's *status* (so that status still costs one ``ListPipelineExecutions`` page per pipeline per
round, however many executions and steps are watched) and borrows that poller's aiobotocore client to
add the one thing the execution poller does not read: **one ``ListPipelineExecutionSteps`` (all pages)
per execution per round**, however many step tasks of that execution wait.

Contract (the same as the execution poller's):

- a subscriber receives a :class:`StepsSnapshot` after its subscription (the poller polls at once for a
  newcomer, so the first snapshot is fresh) and then only when the snapshot changes; a read that outlived
  the hook's retry budget arrives as a snapshot whose ``error`` is set (the subscriber decides to fail);
- created lazily inside the running event loop by :func:`get_steps_poller`; polls from the first
  subscription and ends (leaving the registry and its execution-poller subscription) when the last
  subscriber leaves; a cancelled trigger leaves by exiting :meth:`ExecutionStepsPoller.subscribe`;
- the interval is the smallest interval any current subscriber asked for.

Nothing here is serialised: triggers rebuild their subscription from their own arguments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from sagemaker_pipelines_provider.triggers.poller import (
    ExecutionStatusPoller,
    ExecutionUpdate,
    PollerKey,
    get_poller,
)
from sagemaker_pipelines_provider.utils.backoff import error_code
from sagemaker_pipelines_provider.utils.loop_registry import LoopRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepsPollerKey:
    """What makes two step subscriptions share a steps poller: the execution poller's key and the ARN."""

    status_key: PollerKey
    pipeline_execution_arn: str


@dataclass(frozen=True)
class StepsSnapshot:
    """One observation of an execution: its status and every ListPipelineExecutionSteps entry."""

    execution_status: str | None
    failure_reason: str | None = None
    steps: tuple[Mapping[str, Any], ...] = field(default=())
    error: str | None = None


class _Subscriber:
    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.queue: asyncio.Queue[StepsSnapshot] = asyncio.Queue()
        self.last: StepsSnapshot | None = None

    def offer(self, snapshot: StepsSnapshot) -> None:
        if snapshot != self.last:
            self.last = snapshot
            self.queue.put_nowait(snapshot)


class ExecutionStepsPoller:
    """Lists the steps of one execution for all its subscribers (see the module docstring)."""

    def __init__(self, key: StepsPollerKey) -> None:
        self.key = key
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rounds = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(self, poll_interval: float) -> AsyncIterator[asyncio.Queue[StepsSnapshot]]:
        """Watch the execution's steps; yields the queue on which :class:`StepsSnapshot` s arrive."""
        subscriber = _Subscriber(poll_interval)
        self._subscribers.add(subscriber)
        self._ensure_running()
        self._wake.set()  # a newcomer gets a fresh snapshot now, not after the current sleep
        try:
            yield subscriber.queue
        finally:
            self._subscribers.discard(subscriber)
            if not self._subscribers:
                self._wake.set()

    def _interval(self) -> float:
        return min((s.poll_interval for s in self._subscribers), default=30.0)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sagemaker-pipeline-steps-poller:{self.key.pipeline_execution_arn}"
            )

    def _offer(self, snapshot: StepsSnapshot) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(snapshot)

    async def _run(self) -> None:
        status_poller = get_poller(self.key.status_key)
        arn = self.key.pipeline_execution_arn
        try:
            # No await between get_poller and subscribe: the execution poller cannot end in between.
            async with status_poller.subscribe(arn, self._interval()) as statuses:
                latest: ExecutionUpdate | None = None
                while self._subscribers:
                    if latest is None:
                        latest = await self._first_status(statuses)
                        if latest is None:
                            return
                    while not statuses.empty():
                        latest = statuses.get_nowait()
                    await self._round(status_poller, latest)
                    if not self._subscribers:
                        return
                    self._wake.clear()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self._interval())
        except Exception as err:  # never leave subscribers waiting on a dead loop
            log.exception("Step poller for %s failed", arn)
            self._offer(StepsSnapshot(execution_status=None, error=f"{type(err).__name__}: {err}"))
        finally:
            _forget(self)

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
        arn = self.key.pipeline_execution_arn
        if latest.error is not None:
            self._offer(StepsSnapshot(execution_status=None, error=latest.error))
            return
        hook = status_poller.hook
        try:
            client = await status_poller.client()
            if client is not None:
                steps = await hook.alist_pipeline_execution_steps(arn, client=client)
            else:
                async with hook.async_client() as own:
                    steps = await hook.alist_pipeline_execution_steps(arn, client=own)
        except Exception as err:
            self._offer(
                StepsSnapshot(execution_status=None, error=f"{error_code(err) or type(err).__name__}: {err}")
            )
            return
        self._offer(
            StepsSnapshot(
                execution_status=latest.status,
                failure_reason=latest.failure_reason,
                steps=tuple(steps),
            )
        )


# -------------------------------------------------------------------------------------------------------
# the process-level registry: one dict of steps pollers per running event loop

_REGISTRY: LoopRegistry[StepsPollerKey, ExecutionStepsPoller] = LoopRegistry()


def get_steps_poller(key: StepsPollerKey) -> ExecutionStepsPoller:
    """The running event loop's steps poller for ``key``, created on first use (call inside the loop)."""
    return _REGISTRY.get(key, lambda: ExecutionStepsPoller(key))


def active_steps_pollers() -> dict[StepsPollerKey, ExecutionStepsPoller]:
    """The steps pollers of the running event loop (for tests and diagnostics)."""
    return _REGISTRY.active()


def _forget(poller: ExecutionStepsPoller) -> None:
    _REGISTRY.forget(poller.key, poller)


__all__ = [
    "ExecutionStepsPoller",
    "StepsPollerKey",
    "StepsSnapshot",
    "active_steps_pollers",
    "get_steps_poller",
]
