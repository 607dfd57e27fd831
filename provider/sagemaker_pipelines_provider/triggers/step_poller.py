"""Step-level status of pipeline executions, shared by every step trigger waiting on one execution.

One :class:`ExecutionStepsPoller` per (event loop, AWS connection, execution) takes the execution's status
from the pipeline's shared :class:`~.poller.ExecutionStatusPoller` (subscribing to it) and, on that poller's
lent client, adds one ``ListPipelineExecutionSteps`` (all pages) per round, however many step tasks of the
execution wait. Subscribers get a :class:`StepsSnapshot` after joining and then on change only; an error is
a snapshot whose ``error`` is set. The lifecycle is :class:`~.shared_service.SharedService`'s; see
docs/triggerer.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sagemaker_pipelines_provider.triggers.poller import (
    ExecutionStatusPoller,
    ExecutionUpdate,
    PollerKey,
    get_poller,
)
from sagemaker_pipelines_provider.triggers.shared_service import SharedService, UpdateSubscriber
from sagemaker_pipelines_provider.utils.backoff import error_code


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


class ExecutionStepsPoller(SharedService[StepsPollerKey, UpdateSubscriber[StepsSnapshot]]):
    """Lists the steps of one execution for all its subscribers (see the module docstring)."""

    task_name = "sagemaker-pipeline-steps-poller"

    def __init__(self, key: StepsPollerKey) -> None:
        super().__init__(key)
        self.rounds = 0

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
        status_poller = get_poller(self.key.status_key)
        # No await between get_poller and subscribe: the execution poller cannot end in between.
        async with status_poller.subscribe(self.key.pipeline_execution_arn, self._interval(30.0)) as statuses:
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
        try:
            async with status_poller.lent.borrow() as client:
                steps = await status_poller.hook.alist_pipeline_execution_steps(arn, client=client)
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
