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
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from sagemaker_pipelines_provider.callbacks.liveness import LiveBatch, TokenState
from sagemaker_pipelines_provider.callbacks.message import (
    MALFORMED_LOG,
    CallbackMessage,
    CallbackRoute,
    describe,
)
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.shared_service import SharedService, Subscriber
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy, Retryable

log = logging.getLogger(__name__)

#: Pause after a batch that matched no waiter: jittered, doubling from 0.1 s up to 2 s (the project's one
#: backoff formula, :meth:`BackoffPolicy.delay`).
IDLE_POLICY = BackoffPolicy(base_delay=0.1, max_delay=2.0)


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
        self._sagemaker: tuple[SageMakerPipelineHook, Any] | None = None
        self._clients: AsyncExitStack | None = None
        self._check_failed_logged = False
        self._orphans: list[str] = []
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
            self._clients, self._sagemaker = clients, None  # the SageMaker client is opened on first use
            try:
                await self._receive_while_waited(hook, client)
            finally:
                self._clients, self._sagemaker = None, None

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
                raw = await hook.areceive(
                    client,
                    self.key.queue_url,
                    wait_time_seconds=wait_time,
                    visibility_timeout=self.inspect_visibility_timeout,
                )
            except Exception as err:
                self._fail(err)
                return
            self.receives += 1
            if not raw:
                idle_rounds = 0
                continue
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

    async def _token_state(self, message: CallbackMessage) -> TokenState:
        """Whether the message's token still waits (UNKNOWN when that cannot be told: hand it over)."""
        if not message.pipeline_execution_arn or self._clients is None:
            return TokenState.UNKNOWN
        try:
            if self._sagemaker is None:
                sagemaker = self._sagemaker_hook_factory()
                self._sagemaker = sagemaker, await self._clients.enter_async_context(sagemaker.async_client())
            sagemaker, client = self._sagemaker
            return await sagemaker.acallback_token_state(
                message.pipeline_execution_arn, message.token, client=client
            )
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
            return TokenState.UNKNOWN

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
        order = sorted(self._waiting(), key=lambda w: w.seq)
        batch = LiveBatch(raw, self.key.queue_url, [w.route for w in order])
        while todo := batch.unchecked():
            states = await asyncio.gather(*(self._token_state(m) for m in todo))
            batch.record({m.token: state for m, state in zip(todo, states, strict=True)})
        plan = batch.plan
        for error in plan.malformed:
            MALFORMED_LOG.report(log, error, self.key.queue_url)
        release = [m.receipt_handle for m in plan.release]

        async def claim(waiter: _Waiter, message: CallbackMessage) -> tuple[_Waiter, CallbackMessage] | None:
            if await hook.achange_visibility(
                client, self.key.queue_url, message.receipt_handle, waiter.visibility_timeout
            ):
                return waiter, message
            log.info("%s vanished before it could be claimed", describe(message))
            return None

        claimed: list[tuple[_Waiter, CallbackMessage] | None] = []
        try:
            # the claims of one batch go to different waiters: send them at once
            claimed = await asyncio.gather(
                *(claim(order[index], message) for index, message, _ in plan.claims)
            )
        finally:
            # release before telling any waiter: a waiter told first may end the event loop (dag.test) and
            # cancel this task before the release, leaving copies hidden from the answer's sweep
            for waiter, message in filter(None, claimed):
                if waiter.future.done():  # cancelled while we were claiming
                    release.append(message.receipt_handle)
            await self._release_handles(hook, client, release)
            await self._delete_settled(hook, client, plan.settled)
        served = False
        for waiter, message in filter(None, claimed):
            if waiter.future.done():
                continue
            log.info("Claimed %s for a waiter on %s", describe(message), waiter.route.describe())
            waiter.future.set_result(message)
            self.claimed += 1
            served = True
        return served or bool(plan.settled), len(release)


def get_receiver(key: ReceiverKey, *, inspect_visibility_timeout: int = 30) -> QueueReceiver:
    """The running event loop's receiver for ``key``, created on first use (call inside the loop)."""
    return QueueReceiver.shared(key, inspect_visibility_timeout=inspect_visibility_timeout)


def active_receivers() -> list[QueueReceiver]:
    """The receivers of the running event loop (diagnostics and tests)."""
    return list(QueueReceiver.active().values())


__all__ = ["IDLE_POLICY", "QueueReceiver", "ReceiverKey", "active_receivers", "get_receiver"]
