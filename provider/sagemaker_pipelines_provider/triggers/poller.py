"""The shared, coalescing status poller of the pipeline executions waited on in one triggerer.

One :class:`ExecutionStatusPoller` per (event loop, AWS connection, pipeline) serves every execution trigger
waiting on that pipeline: a poll round reads ``ListPipelineExecutions`` pages (bounded by
:func:`page_budget`) and describes only the watched executions those pages miss. Subscribers hear of the
first status and then of changes only; an error is an update whose ``error`` is set. The lifecycle
(subscribers, wake-up, interval, registry, lent client) is :class:`~.shared_service.SharedService`'s; the
costs and guarantees are in docs/triggerer.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.results import describe_fields
from sagemaker_pipelines_provider.triggers.shared_service import LentClient, SharedService, UpdateSubscriber
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs
from sagemaker_pipelines_provider.utils.backoff import error_code

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
    """What makes two subscriptions share a poller (and its client): the pipeline and the connection."""

    pipeline_name: str
    aws: AwsConnectionArgs = field(default_factory=AwsConnectionArgs)

    def hook(self) -> SageMakerPipelineHook:
        return self.aws.hook(SageMakerPipelineHook)


@dataclass(frozen=True)
class ExecutionUpdate:
    """The observed state of one execution (or the error that prevented observing it)."""

    status: str | None
    failure_reason: str | None = None
    display_name: str | None = None
    error: str | None = None

    def as_describe(self, arn: str) -> dict[str, Any]:
        """The DescribePipelineExecution fields a result needs, so the end costs no extra Describe."""
        return describe_fields(arn, self.status, self.failure_reason, self.display_name)


class _Subscription(UpdateSubscriber[ExecutionUpdate]):
    def __init__(self, arn: str, poll_interval: float) -> None:
        super().__init__(poll_interval)
        self.arn = arn


class ExecutionStatusPoller(SharedService[PollerKey, _Subscription]):
    """Polls the status of every watched execution of one pipeline (see the module docstring)."""

    task_name = "sagemaker-pipeline-poller"

    def __init__(self, key: PollerKey) -> None:
        super().__init__(key)
        self.hook = key.hook()
        self.lent = LentClient(self.hook)
        self._start_times: dict[str, dt.datetime] = {}
        self.rounds = 0

    def describe(self) -> str:
        return self.key.pipeline_name

    # -- subscribers -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, arn: str, poll_interval: float
    ) -> AsyncIterator[asyncio.Queue[ExecutionUpdate]]:
        """Watch ``arn``; yields the queue on which its :class:`ExecutionUpdate` s arrive."""
        async with self._subscribed(_Subscription(arn, poll_interval)) as subscription:
            yield subscription.queue

    @property
    def watched(self) -> frozenset[str]:
        """The ARNs currently watched."""
        return frozenset(s.arn for s in self._subscribers)

    # -- the loop ----------------------------------------------------------------------------------------

    async def _session(self) -> None:
        async with self.lent.session() as client:
            await self._poll_while_subscribed(lambda: self._poll_round(client), default=30.0)

    def _fail(self, error: BaseException) -> None:
        for subscription in list(self._subscribers):
            subscription.offer(ExecutionUpdate(status=None, error=f"{type(error).__name__}: {error}"))

    async def _poll_round(self, client: Any) -> None:
        wanted = {s.arn for s in self._subscribers}
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
        for subscription in list(self._subscribers):
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


def get_poller(key: PollerKey) -> ExecutionStatusPoller:
    """The running event loop's poller for ``key``, created on first use (call from inside the loop)."""
    return ExecutionStatusPoller.shared(key)


def active_pollers() -> dict[PollerKey, ExecutionStatusPoller]:
    """The pollers of the running event loop (for tests and diagnostics)."""
    return ExecutionStatusPoller.active()
