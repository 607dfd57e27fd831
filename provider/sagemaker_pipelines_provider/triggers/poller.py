"""The shared, coalescing status poller of pipeline executions inside the triggerer.

One :class:`ExecutionStatusPoller` exists per (event loop, connection, region, verify, botocore config,
pipeline). Every :class:`~sagemaker_pipelines_provider.triggers.pipeline.PipelineExecutionTrigger` waiting
on an execution of that pipeline subscribes to it; one poll round then costs:

- one ``ListPipelineExecutions`` page per 100 executions of the pipeline (newest first, bounded by
  ``CreatedAfter`` = the oldest watched execution's start, and by :func:`page_budget`), however many
  executions are watched;
- one ``DescribePipelineExecution`` per watched execution *not found* in those pages (an execution
  older than :func:`page_budget` pages of newer ones, or one the list has not caught up with yet).

Contract:

- a subscriber receives an :class:`ExecutionUpdate` for its first observed status and then only on
  change (status or failure reason); a poll error that outlived the hook's retry budget is delivered
  as an :class:`ExecutionUpdate` whose ``error`` is set (the subscriber decides to fail);
- the poller is created lazily, in the running event loop, by :func:`get_poller`; it starts polling on
  the first subscription and ends (closing its aiobotocore client and leaving the registry) when the last
  subscriber leaves — a cancelled trigger leaves by exiting :meth:`ExecutionStatusPoller.subscribe`;
- the poll interval is the smallest interval any current subscriber asked for;
- subscribers may borrow the poller's client (:meth:`ExecutionStatusPoller.client`) while subscribed.

Nothing here is serialised: triggers rebuild their subscription from their own arguments.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.utils.backoff import error_code
from sagemaker_pipelines_provider.utils.loop_registry import LoopRegistry

log = logging.getLogger(__name__)

#: Pages (of 100) read per poll round beyond the ones the watched executions could fill: room for newer
#: executions of the pipeline that nobody here watches.
EXTRA_PAGES = 4
#: Hard cap on ListPipelineExecutions pages per poll round, whatever is watched.
MAX_PAGES = 30


def page_budget(watched: int) -> int:
    """ListPipelineExecutions pages one round may read for ``watched`` executions (a round stops early once
    every watched execution is found). Scaling with the watched set keeps 1000 waiting executions at ~10
    list calls per round instead of hundreds of DescribePipelineExecution calls."""
    return min(MAX_PAGES, -(-watched // 100) + EXTRA_PAGES)


#: Margin subtracted from the oldest watched start time for ``CreatedAfter`` (clock and rounding slack).
CREATED_AFTER_MARGIN = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class PollerKey:
    """What makes two subscriptions share a poller (and its client)."""

    aws_conn_id: str | None
    region_name: str | None
    verify: bool | str | None
    botocore_config: str  # canonical JSON of the botocore config dict ("null" when none)
    pipeline_name: str

    @classmethod
    def build(
        cls,
        *,
        aws_conn_id: str | None,
        region_name: str | None,
        verify: bool | str | None,
        botocore_config: dict[str, Any] | None,
        pipeline_name: str,
    ) -> PollerKey:
        return cls(
            aws_conn_id, region_name, verify, json.dumps(botocore_config, sort_keys=True), pipeline_name
        )

    def hook(self) -> SageMakerPipelineHook:
        return SageMakerPipelineHook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=json.loads(self.botocore_config),
        )


@dataclass(frozen=True)
class ExecutionUpdate:
    """The observed state of one execution (or the error that prevented observing it)."""

    status: str | None
    failure_reason: str | None = None
    display_name: str | None = None
    error: str | None = None

    def as_describe(self, arn: str) -> dict[str, Any]:
        """The DescribePipelineExecution fields a result needs, so the end costs no extra Describe."""
        return {
            "PipelineExecutionArn": arn,
            "PipelineExecutionStatus": self.status,
            "FailureReason": self.failure_reason,
            "PipelineExecutionDisplayName": self.display_name,
        }


class _Subscription:
    def __init__(self, arn: str, poll_interval: float) -> None:
        self.arn = arn
        self.poll_interval = poll_interval
        self.queue: asyncio.Queue[ExecutionUpdate] = asyncio.Queue()
        self.last: ExecutionUpdate | None = None

    def offer(self, update: ExecutionUpdate) -> None:
        if update != self.last:
            self.last = update
            self.queue.put_nowait(update)


class ExecutionStatusPoller:
    """Polls the status of every watched execution of one pipeline (see the module docstring)."""

    def __init__(self, key: PollerKey) -> None:
        self.key = key
        self.hook = key.hook()
        self._subscriptions: set[_Subscription] = set()
        self._start_times: dict[str, dt.datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._client_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self.rounds = 0

    # -- subscribers -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, arn: str, poll_interval: float
    ) -> AsyncIterator[asyncio.Queue[ExecutionUpdate]]:
        """Watch ``arn``; yields the queue on which its :class:`ExecutionUpdate` s arrive."""
        subscription = _Subscription(arn, poll_interval)
        self._subscriptions.add(subscription)
        self._ensure_running()
        self._wake.set()  # a newcomer does not wait for the end of the current sleep
        try:
            yield subscription.queue
        finally:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                self._wake.set()

    @property
    def watched(self) -> frozenset[str]:
        """The ARNs currently watched."""
        return frozenset(s.arn for s in self._subscriptions)

    async def client(self) -> Any:
        """The poller's aiobotocore client (valid while the caller is subscribed)."""
        await self._client_ready.wait()
        return self._client

    # -- the loop ----------------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sagemaker-pipeline-poller:{self.key.pipeline_name}"
            )

    async def _run(self) -> None:
        try:
            # Re-checked after the client closes: a subscriber may arrive while it is closing.
            while self._subscriptions:
                try:
                    async with self.hook.async_client() as client:
                        self._client = client
                        self._client_ready.set()
                        await self._poll_while_watched(client)
                except Exception as err:  # the client could not be created (bad connection, no credentials)
                    log.exception("SageMaker pipeline poller for %s failed", self.key.pipeline_name)
                    for subscription in list(self._subscriptions):
                        subscription.offer(ExecutionUpdate(status=None, error=f"{type(err).__name__}: {err}"))
                    return
                finally:
                    self._client = None
                    self._client_ready.set()  # waiters get None and open a client of their own
                    self._client_ready = asyncio.Event()
        finally:
            # No await between the last emptiness check and this: nobody can subscribe in between.
            _forget(self)

    async def _poll_while_watched(self, client: Any) -> None:
        while self._subscriptions:
            await self._poll_round(client)
            if not self._subscriptions:
                return
            self._wake.clear()
            interval = min(s.poll_interval for s in self._subscriptions)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def _poll_round(self, client: Any) -> None:
        wanted = {s.arn for s in self._subscriptions}
        if not wanted:
            return
        self.rounds += 1
        found: dict[str, ExecutionUpdate] = {}
        errors: dict[str, str] = {}
        try:
            await self._read_pages(client, wanted, found)
        except Exception as err:
            log.warning("ListPipelineExecutions for %s failed: %s", self.key.pipeline_name, err)
        for arn in wanted - found.keys():
            try:
                describe = await self.hook.adescribe_pipeline_execution(arn, client=client)
            except Exception as err:
                errors[arn] = f"{error_code(err) or type(err).__name__}: {err}"
                continue
            created = describe.get("CreationTime")
            if isinstance(created, dt.datetime):
                self._start_times[arn] = created
            found[arn] = ExecutionUpdate(
                describe.get("PipelineExecutionStatus"),
                describe.get("FailureReason"),
                describe.get("PipelineExecutionDisplayName"),
            )
        for subscription in list(self._subscriptions):
            if subscription.arn in found:
                subscription.offer(found[subscription.arn])
            elif subscription.arn in errors:
                subscription.offer(ExecutionUpdate(status=None, error=errors[subscription.arn]))
        for arn in list(self._start_times):
            if arn not in wanted:
                del self._start_times[arn]

    async def _read_pages(self, client: Any, wanted: set[str], found: dict[str, ExecutionUpdate]) -> None:
        created_after = None
        if wanted <= self._start_times.keys():
            created_after = min(self._start_times[a] for a in wanted) - CREATED_AFTER_MARGIN
        next_token: str | None = None
        for _ in range(page_budget(len(wanted))):
            summaries, next_token = await self.hook.alist_pipeline_executions(
                self.key.pipeline_name, client=client, next_token=next_token, created_after=created_after
            )
            for summary in summaries:
                arn = summary.get("PipelineExecutionArn")
                if arn in wanted:
                    found[arn] = ExecutionUpdate(
                        summary.get("PipelineExecutionStatus"),
                        summary.get("PipelineExecutionFailureReason"),
                        summary.get("PipelineExecutionDisplayName"),
                    )
                    started = summary.get("StartTime")
                    if isinstance(started, dt.datetime):
                        self._start_times[arn] = started
            if not next_token or wanted <= found.keys():
                return


# -------------------------------------------------------------------------------------------------------
# the process-level registry: one dict of pollers per running event loop

_REGISTRY: LoopRegistry[PollerKey, ExecutionStatusPoller] = LoopRegistry()


def get_poller(key: PollerKey) -> ExecutionStatusPoller:
    """The running event loop's poller for ``key``, created on first use (call from inside the loop)."""
    return _REGISTRY.get(key, lambda: ExecutionStatusPoller(key))


def active_pollers() -> dict[PollerKey, ExecutionStatusPoller]:
    """The pollers of the running event loop (for tests and diagnostics)."""
    return _REGISTRY.active()


def _forget(poller: ExecutionStatusPoller) -> None:
    _REGISTRY.forget(poller.key, poller)
