"""The shared per-queue receiver: one receive loop per SQS queue serves every waiting callback trigger.

Every :class:`~.callback.SageMakerCallbackTrigger` (and event trigger) of one event loop waiting on one queue
registers as a *waiter* with that queue's :class:`QueueReceiver`, which receives batches of up to 10 messages
and routes them (:func:`~sagemaker_pipelines_provider.callbacks.message.plan_batch`). A message for a waiter
is checked live (its token still waits), *claimed* (hidden for the waiter's ``visibility_timeout``) and
handed over, never deleted here; copies of an answered token are deleted; the rest is released at once, and
malformed messages are left as received. The lifecycle is :class:`~.shared_service.SharedService`'s; the
delivery contract (crash, cancellation, duplicates, why not ``shared_stream_key``) is in docs/triggerer.md.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Collection, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

from sagemaker_pipelines_provider.callbacks.liveness import LiveBatch, TokenState
from sagemaker_pipelines_provider.callbacks.message import (
    MALFORMED_LOG,
    CallbackMessage,
    CallbackRoute,
    describe,
)
from sagemaker_pipelines_provider.hooks.callback_queue import MAX_BATCH, SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.shared_service import SharedService, Subscriber
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy, Retryable

log = logging.getLogger(__name__)

#: Pause after a batch that matched no waiter: jittered, doubling from 0.1 s up to 2 s (the project's one
#: backoff formula, :meth:`BackoffPolicy.delay`).
IDLE_POLICY = BackoffPolicy(base_delay=0.1, max_delay=2.0)

#: At most this many receives (each followed by the routing of its batch) run at once on one queue. The
#: first one long-polls for as long as the receiver runs; a batch that comes back full opens more, one
#: per batch's worth of waiters still waiting, and an extra receive ends at its first batch that is not
#: full or serves nobody (see :meth:`QueueReceiver._extra_lane`).
MAX_RECEIVE_LANES = 4
#: The long-poll wait of the extra receives: they drain a backlog, then end.
EXTRA_LANE_WAIT_SECONDS = 1


@dataclass(frozen=True)
class ReceiverKey:
    """What makes two waiters share a receiver: same queue, reached with the same connection settings."""

    queue_url: str
    aws: AwsConnectionArgs = field(default_factory=AwsConnectionArgs)

    def hook(self) -> SageMakerCallbackQueueHook:
        """A hook for this key's connection settings."""
        return self.aws.hook(SageMakerCallbackQueueHook)

    def sagemaker_hook(self) -> SageMakerPipelineHook:
        """A SageMaker hook for this key's connection settings (to check whether a token still waits)."""
        return self.aws.hook(SageMakerPipelineHook)


class _OnceClient:
    """One session's SageMaker client, opened at most once however many checks need it at the same time.

    :meth:`open_soon` starts the opening ahead of the first need (it runs while the first receive waits);
    an opening that failed is tried again at the next need. The client is closed with the session's stack.
    """

    def __init__(self, hook_factory: Callable[[], SageMakerPipelineHook], clients: AsyncExitStack) -> None:
        self._hook_factory = hook_factory
        self._clients = clients
        self._opening: asyncio.Task[tuple[SageMakerPipelineHook, Any]] | None = None

    def open_soon(self) -> None:
        if self._opening is None or (self._opening.done() and self._failed(self._opening)):
            self._opening = asyncio.get_running_loop().create_task(self._open())

    async def get(self) -> tuple[SageMakerPipelineHook, Any]:
        """The hook and its open client (raises what opening it raised)."""
        self.open_soon()
        assert self._opening is not None
        return await asyncio.shield(self._opening)

    async def close(self) -> None:
        """Stop an opening still under way (call before the session's stack closes)."""
        if self._opening is None:
            return
        if not self._opening.done():
            self._opening.cancel()
        with suppress(BaseException):
            await self._opening

    async def _open(self) -> tuple[SageMakerPipelineHook, Any]:
        hook = self._hook_factory()
        return hook, await self._clients.enter_async_context(hook.async_client())

    @staticmethod
    def _failed(task: asyncio.Task[Any]) -> bool:
        return task.cancelled() or task.exception() is not None


class _Waiter(Subscriber):
    def __init__(
        self, route: CallbackRoute, visibility_timeout: int, wait_time_seconds: int, seq: int
    ) -> None:
        super().__init__(wait_time_seconds)  # the receive's long-poll wait: the smallest one asked for
        self.route = route
        self.visibility_timeout = visibility_timeout
        self.future: asyncio.Future[CallbackMessage] = asyncio.get_running_loop().create_future()
        self.seq = seq

    @property
    def waiting(self) -> bool:
        return not self.future.done()


class QueueReceiver(SharedService[ReceiverKey, _Waiter]):
    """One receive loop for one queue, routing messages to the waiters registered with :meth:`wait_for`."""

    task_name = "callback-receiver"
    _seq = itertools.count()

    def __init__(
        self,
        key: ReceiverKey,
        *,
        inspect_visibility_timeout: int = 30,
        hook_factory: Callable[[], SageMakerCallbackQueueHook] | None = None,
        sagemaker_hook_factory: Callable[[], SageMakerPipelineHook] | None = None,
    ) -> None:
        super().__init__(key)
        self.inspect_visibility_timeout = inspect_visibility_timeout
        self._hook_factory = hook_factory or key.hook
        self._sagemaker_hook_factory = sagemaker_hook_factory or key.sagemaker_hook
        self._sagemaker: _OnceClient | None = None
        self._check_failed_logged = False
        self._orphans: list[str] = []
        #: Waiters promised a message by a batch being routed (by that batch's number): batches routed at
        #: the same time never hand two messages to one waiter.
        self._reserved: dict[_Waiter, int] = {}
        self._batches = itertools.count()
        self._extra_lanes: set[asyncio.Task[None]] = set()
        self.receives = 0
        self.claimed = 0
        self.released = 0
        self.settled_deleted = 0

    @property
    def waiting(self) -> int:
        """How many waiters are registered now."""
        return len(self._subscribers)

    def describe(self) -> str:
        return self.key.queue_url

    async def wait_for(
        self, route: CallbackRoute, *, visibility_timeout: int, wait_time_seconds: int = 20
    ) -> CallbackMessage:
        """Wait for a message matching ``route``; it is returned claimed (hidden ``visibility_timeout`` s).

        Cancelling the wait unregisters the waiter; a message claimed for it in the meantime is released
        again at once (or, failing that, returns after its visibility timeout).
        """
        waiter = _Waiter(route, visibility_timeout, wait_time_seconds, next(self._seq))
        self._join(waiter)
        try:
            return await asyncio.shield(waiter.future)
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self._orphans.append(waiter.future.result().receipt_handle)
                self._wake.set()
            else:
                waiter.future.cancel()
            raise
        finally:
            self._leave(waiter)

    def _has_work(self) -> bool:
        return bool(self._waiting() or self._orphans)

    async def _session(self) -> None:
        """One client's life: receive and route while waiters are open; return when none is left."""
        hook = self._hook_factory()
        async with AsyncExitStack() as clients:
            client = await clients.enter_async_context(hook.async_client())
            # the SageMaker client (for the token checks) opens while the first receive waits
            self._sagemaker = _OnceClient(self._sagemaker_hook_factory, clients)
            self._sagemaker.open_soon()
            try:
                await self._receive_while_waited(hook, client)
            finally:
                lanes = list(self._extra_lanes)
                for lane in lanes:
                    lane.cancel()
                await asyncio.gather(*lanes, return_exceptions=True)
                await self._sagemaker.close()
                self._sagemaker = None

    async def _receive_while_waited(self, hook: SageMakerCallbackQueueHook, client: Any) -> None:
        idle_rounds = 0
        while True:
            if self._orphans:
                orphans, self._orphans = self._orphans, []
                await self._release_handles(hook, client, orphans)
            if not self._waiting():
                if not self._subscribers and not self._orphans:
                    return
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            wait_time = int(self._interval(default=20))
            try:
                raw = await self._receive(hook, client, wait_time)
            except Exception as err:
                self._fail(err)
                return
            if not raw:
                idle_rounds = 0
                continue
            self._open_lanes_for_backlog(hook, client, raw)
            progressed, released = await self._route(hook, client, raw)
            # let resolved waiters leave before deciding whether to receive again
            await asyncio.sleep(0)
            if progressed or not released:
                # served someone or deleted settled copies, or saw only malformed messages (now hidden for
                # the inspection timeout, so the next receive sees other messages): receive again at once
                idle_rounds = 0
                continue
            delay = IDLE_POLICY.delay(idle_rounds, Retryable.TRANSIENT)
            idle_rounds += 1
            if await self._pause(delay):
                idle_rounds = 0

    async def _receive(self, hook: SageMakerCallbackQueueHook, client: Any, wait_time: int) -> list[Any]:
        raw = await hook.areceive(
            client,
            self.key.queue_url,
            wait_time_seconds=wait_time,
            visibility_timeout=self.inspect_visibility_timeout,
        )
        self.receives += 1
        return raw

    def _open_lanes_for_backlog(
        self, hook: SageMakerCallbackQueueHook, client: Any, raw: Sequence[Any]
    ) -> None:
        """After a full batch (a backlog, likely), open more receives: one per batch's worth of waiters
        still waiting, up to :data:`MAX_RECEIVE_LANES` in all. A burst of callbacks is then received and
        checked several batches at a time instead of one after the other."""
        if len(raw) < MAX_BATCH:
            return
        wanted = min(MAX_RECEIVE_LANES, -(-len(self._waiting()) // MAX_BATCH))
        for _ in range(wanted - 1 - len(self._extra_lanes)):
            lane = asyncio.get_running_loop().create_task(
                self._extra_lane(hook, client), name=f"{self.task_name}-lane:{self.describe()}"
            )
            self._extra_lanes.add(lane)
            lane.add_done_callback(self._extra_lanes.discard)

    async def _extra_lane(self, hook: SageMakerCallbackQueueHook, client: Any) -> None:
        """Receive and route while batches come back full and serve someone (a backlog); then end."""
        try:
            while self._waiting():
                raw = await self._receive(hook, client, EXTRA_LANE_WAIT_SECONDS)
                if not raw:
                    return
                self._open_lanes_for_backlog(hook, client, raw)
                progressed, _ = await self._route(hook, client, raw)
                if len(raw) < MAX_BATCH or not progressed:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as err:  # as the first receive's failure would: the waiters get the error
            log.warning("Receiving from %s failed: %s: %s", self.key.queue_url, type(err).__name__, err)
            self._fail(err)

    def _fail(self, error: BaseException) -> None:
        for waiter in list(self._subscribers):
            if not waiter.future.done():
                waiter.future.set_exception(error)

    async def _release_handles(
        self, hook: SageMakerCallbackQueueHook, client: Any, handles: Sequence[str]
    ) -> None:
        if not handles:
            return
        try:
            await hook.arelease(client, self.key.queue_url, list(handles))
            self.released += len(handles)
        except Exception as err:  # they come back after their visibility timeout anyway
            log.warning("Could not release %d message(s) on %s: %s", len(handles), self.key.queue_url, err)

    async def _token_states(self, messages: Sequence[CallbackMessage]) -> dict[str, TokenState]:
        """Whether each message's token still waits: one check per execution, all at once (UNKNOWN when
        that cannot be told: the message is handed over)."""
        tokens: dict[str, set[str]] = {}
        states: dict[str, TokenState] = {}
        for message in messages:
            if message.pipeline_execution_arn:
                tokens.setdefault(message.pipeline_execution_arn, set()).add(message.token)
            else:
                states[message.token] = TokenState.UNKNOWN
        checked = await asyncio.gather(*(self._check(arn, each) for arn, each in tokens.items()))
        for result in checked:
            for token, state in result.items():
                # a token claimed under two executions (a forged message): the least final answer wins
                if token not in states or _CAUTION[state] > _CAUTION[states[token]]:
                    states[token] = state
        return states

    async def _check(self, arn: str, tokens: Collection[str]) -> dict[str, TokenState]:
        if self._sagemaker is None:
            return dict.fromkeys(tokens, TokenState.UNKNOWN)
        try:
            sagemaker, client = await self._sagemaker.get()
            return await sagemaker.acallback_token_states(arn, tokens, client=client)
        except Exception as err:  # the answer settles it later: refused as already answered, then deleted
            if not self._check_failed_logged:
                self._check_failed_logged = True
                log.warning(
                    "Could not check whether callback tokens on %s are still waiting (%s: %s); handing "
                    "messages over unchecked (needs sagemaker:ListPipelineExecutionSteps and "
                    "sagemaker:DescribePipelineExecution)",
                    self.key.queue_url,
                    type(err).__name__,
                    err,
                )
            return dict.fromkeys(tokens, TokenState.UNKNOWN)

    async def _delete_settled(
        self, hook: SageMakerCallbackQueueHook, client: Any, messages: Sequence[CallbackMessage]
    ) -> None:
        for message in messages:
            try:
                if await hook.adelete(client, self.key.queue_url, message.receipt_handle):
                    self.settled_deleted += 1
                    log.info("Deleted %s: its token is already answered", describe(message))
            except Exception as err:  # it comes back, and is found settled again
                log.warning("Could not delete %s: %s", describe(message), err)

    async def _route(
        self, hook: SageMakerCallbackQueueHook, client: Any, raw: Sequence[dict[str, Any]]
    ) -> tuple[bool, int]:
        """Claim what matches, delete what is settled, release the rest; (progress made, released)."""
        number = next(self._batches)
        order = sorted((w for w in self._waiting() if w not in self._reserved), key=lambda w: w.seq)
        batch = LiveBatch(raw, self.key.queue_url, [w.route for w in order])
        taken: set[_Waiter] = set()  # promised to another batch since this one was planned
        try:
            self._reserve(number, {order[index] for index, _, _ in batch.plan.claims}, taken)
            while todo := batch.unchecked():
                batch.record(await self._token_states(todo))
                self._reserve(number, {order[index] for index, _, _ in batch.plan.claims}, taken)
            return await self._settle(hook, client, batch, order, taken)
        finally:
            for waiter in [w for w, owner in self._reserved.items() if owner == number]:
                del self._reserved[waiter]

    def _reserve(self, number: int, waiters: set[_Waiter], taken: set[_Waiter]) -> None:
        """Promise ``waiters`` to batch ``number``; those another batch holds go to ``taken``."""
        for waiter in [w for w, owner in self._reserved.items() if owner == number and w not in waiters]:
            del self._reserved[waiter]
        for waiter in waiters:
            if self._reserved.setdefault(waiter, number) != number:
                taken.add(waiter)

    async def _settle(
        self,
        hook: SageMakerCallbackQueueHook,
        client: Any,
        batch: LiveBatch,
        order: Sequence[_Waiter],
        taken: set[_Waiter],
    ) -> tuple[bool, int]:
        plan = batch.plan
        for error in plan.malformed:
            MALFORMED_LOG.report(log, error, self.key.queue_url)
        release = [m.receipt_handle for m in plan.release]
        release.extend(m.receipt_handle for index, m, _ in plan.claims if order[index] in taken)
        claims = [(order[index], m) for index, m, _ in plan.claims if order[index] not in taken]
        # the claims (each for its waiter's visibility timeout) and the releases of one batch: one call
        changes = [(m.receipt_handle, w.visibility_timeout) for w, m in claims]
        changes.extend((handle, 0) for handle in release)
        claimed: list[tuple[_Waiter, CallbackMessage]] = []
        changed = False
        try:
            done = await hook.achange_visibilities(client, self.key.queue_url, changes) if changes else set()
            changed = True
            self.released += sum(handle in done for handle in release)
            for waiter, message in claims:
                if message.receipt_handle in done:
                    claimed.append((waiter, message))
                else:
                    log.info("%s vanished before it could be claimed", describe(message))
        finally:
            # release before telling any waiter: a waiter told first may end the event loop (dag.test) and
            # cancel this task before the release, leaving copies hidden from the answer's sweep
            late = [m.receipt_handle for w, m in claimed if w.future.done()]  # cancelled meanwhile
            await self._release_handles(hook, client, late if changed else [*release, *late])
            await self._delete_settled(hook, client, plan.settled)
        served = False
        for waiter, message in claimed:
            if waiter.future.done():
                continue
            log.info("Claimed %s for a waiter on %s", describe(message), waiter.route.describe())
            waiter.future.set_result(message)
            self.claimed += 1
            served = True
        return served or bool(plan.settled), len(release)


#: How final a token state is, for merging two answers about one token (least final wins).
_CAUTION = {TokenState.SETTLED: 0, TokenState.UNKNOWN: 1, TokenState.WAITING: 2}


def get_receiver(key: ReceiverKey, *, inspect_visibility_timeout: int = 30) -> QueueReceiver:
    """The running event loop's receiver for ``key``, created on first use (call inside the loop)."""
    return QueueReceiver.shared(key, inspect_visibility_timeout=inspect_visibility_timeout)


def active_receivers() -> list[QueueReceiver]:
    """The receivers of the running event loop (diagnostics and tests)."""
    return list(QueueReceiver.active().values())


__all__ = [
    "IDLE_POLICY",
    "MAX_RECEIVE_LANES",
    "QueueReceiver",
    "ReceiverKey",
    "active_receivers",
    "get_receiver",
]
