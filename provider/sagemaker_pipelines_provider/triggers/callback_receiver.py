"""The shared per-queue receiver: one receive loop per SQS queue serves every waiting callback trigger.

A triggerer may hold hundreds of deferred :class:`~sagemaker_pipelines_provider.triggers.callback.
CallbackMessageTrigger` instances waiting on one queue. Instead of one long-polling loop each (which
multiplies ReceiveMessage calls and makes the triggers steal each other's messages), they register as
*waiters* with the queue's one :class:`QueueReceiver`, which receives batches of up to 10 messages and
routes them with :func:`~sagemaker_pipelines_provider.callbacks.message.plan_batch`.

Lifecycle: receivers are process-level helpers keyed by (event loop, connection, region, queue URL ...),
created lazily inside the running event loop by :func:`get_receiver` on the first waiter, and ending by
themselves when the last waiter leaves (the next waiter creates a new one). Closing the receiver's client
awaits; a waiter that registers meanwhile is served by a new client opened once the old one is closed. A
receiver never outlives its event loop, so ``dag.test()`` — which runs each trigger in its own
``asyncio.run`` — gets a fresh one each time.

Delivery contract (what the waiters and the queue see):

- a message matching a waiter is first checked: is its token still waiting
  (:mod:`~sagemaker_pipelines_provider.callbacks.liveness`, one ListPipelineExecutionSteps)? If so — or
  if that cannot be told — it is *claimed*: hidden for the waiter's ``visibility_timeout`` and handed
  over; it is **never deleted here** (the answer operators delete it once its token is answered);
- a message whose token is already answered (an SQS duplicate, a late ``Stopping`` copy, a copy whose
  claim lapsed before its answer) is **deleted** and goes to no waiter: the waiter keeps waiting for a
  live message (of the same batch, if one matches); further copies of a token found answered are deleted
  without another check;
- valid messages no waiter takes, and further copies of a claimed token, are made visible again at once
  (other consumers are not starved; the answer's sweep finds the copies);
- malformed messages are logged once per process and left as received (hidden for
  ``inspect_visibility_timeout``, then back, counted by the queue's redrive policy) — never deleted;
- crash or cancellation anywhere: a claimed message whose waiter is gone is released at once when
  possible, otherwise it comes back after its visibility timeout; messages received but not yet routed
  come back after ``inspect_visibility_timeout``. Nothing is lost, and receiving a message again can only
  lead to answering the same token again, which SageMaker refuses as already answered;
- a receive that fails (after the project's backoff budget) fails every current waiter with that error.

Why not Airflow 3.3's ``BaseEventTrigger.shared_stream_key`` (one poll fanned out to sibling triggers)?
Its fan-out *broadcasts* every raw event to every subscriber, and its ack mode advances the broker once
the derived trigger events are persisted. Callback routing needs the opposite on both counts: each message
goes to exactly one waiter, a message nobody takes must be made visible again at once (the broadcast
cannot tell "filtered out by everyone" from "taken"), and the message may only be deleted after its token
is answered by a worker, long after the trigger event was persisted. ``dag.test()`` also runs triggers
outside the triggerer's stream manager. So the receiver is this module's own process-level helper.

When a batch held valid messages that no waiter takes (released again at once), the next receive is
delayed by a short jittered backoff (reset by a match or a new waiter), so receivers on one queue do not
hot-loop on each other's messages. A batch of malformed messages only is followed by an immediate receive:
those are hidden for the inspection timeout, so the next receive sees other messages — a queue full of
junk cannot starve the valid callbacks behind it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
from sagemaker_pipelines_provider.hooks.callback_queue import CallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy, Retryable
from sagemaker_pipelines_provider.utils.loop_registry import LoopRegistry

log = logging.getLogger(__name__)

#: Pause after a batch that matched no waiter: jittered, doubling from 0.1 s up to 2 s (the project's one
#: backoff formula, :meth:`BackoffPolicy.delay`).
IDLE_POLICY = BackoffPolicy(base_delay=0.1, max_delay=2.0)


@dataclass(frozen=True)
class ReceiverKey:
    """What makes two waiters share a receiver: same queue, reached with the same connection settings."""

    queue_url: str
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    verify: bool | str | None = None
    botocore_config: str = "{}"

    @classmethod
    def build(
        cls,
        queue_url: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> ReceiverKey:
        config = json.dumps(botocore_config or {}, sort_keys=True, default=str)
        return cls(queue_url, aws_conn_id, region_name, verify, config)

    def hook(self) -> CallbackQueueHook:
        """A hook for this key's connection settings."""
        config = json.loads(self.botocore_config) or None
        return CallbackQueueHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify, config=config
        )

    def sagemaker_hook(self) -> SageMakerPipelineHook:
        """A SageMaker hook for this key's connection settings (to check whether a token still waits)."""
        config = json.loads(self.botocore_config) or None
        return SageMakerPipelineHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify, config=config
        )


@dataclass(eq=False)
class _Waiter:
    route: CallbackRoute
    visibility_timeout: int
    wait_time_seconds: int
    future: asyncio.Future[CallbackMessage]
    seq: int = field(default=0)


class QueueReceiver:
    """One receive loop for one queue, routing messages to the waiters registered with :meth:`wait_for`."""

    _seq = itertools.count()

    def __init__(
        self,
        key: ReceiverKey,
        *,
        inspect_visibility_timeout: int = 30,
        hook_factory: Callable[[], CallbackQueueHook] | None = None,
        sagemaker_hook_factory: Callable[[], SageMakerPipelineHook] | None = None,
        on_exit: Callable[[QueueReceiver], None] | None = None,
    ) -> None:
        self.key = key
        self.inspect_visibility_timeout = inspect_visibility_timeout
        self._hook_factory = hook_factory or key.hook
        self._sagemaker_hook_factory = sagemaker_hook_factory or key.sagemaker_hook
        self._sagemaker: tuple[SageMakerPipelineHook, Any] | None = None
        self._clients: AsyncExitStack | None = None
        self._check_failed_logged = False
        self._on_exit = on_exit
        self._waiters: dict[int, _Waiter] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._orphans: list[str] = []
        self.receives = 0
        self.claimed = 0
        self.released = 0
        self.settled_deleted = 0

    @property
    def waiting(self) -> int:
        """How many waiters are registered now."""
        return len(self._waiters)

    async def wait_for(
        self, route: CallbackRoute, *, visibility_timeout: int, wait_time_seconds: int = 20
    ) -> CallbackMessage:
        """Wait for a message matching ``route``; it is returned claimed (hidden ``visibility_timeout`` s).

        Cancelling the wait unregisters the waiter; a message claimed for it in the meantime is released
        again at once (or, failing that, returns after its visibility timeout).
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(
            route=route,
            visibility_timeout=visibility_timeout,
            wait_time_seconds=wait_time_seconds,
            future=loop.create_future(),
            seq=next(self._seq),
        )
        self._waiters[waiter.seq] = waiter
        self._wake.set()
        self._ensure_running()
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
            self._waiters.pop(waiter.seq, None)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"callback-receiver:{self.key.queue_url}"
            )

    def _open_waiters(self) -> list[_Waiter]:
        return [w for w in self._waiters.values() if not w.future.done()]

    async def _run(self) -> None:
        try:
            # Re-checked after the client closed: a waiter (or an orphan to release) may arrive while its
            # exit awaits, and this task is still "running" then, so wait_for did not start another one.
            while True:
                await self._session()
                if not self._open_waiters() and not self._orphans:
                    return  # no await between this check and on_exit: nobody can register in between
        except asyncio.CancelledError:
            raise
        except Exception as err:  # never leave waiters hanging on a dead receiver
            log.exception("Callback receiver for %s failed", self.key.queue_url)
            self._fail_waiters(err)
        finally:
            if self._on_exit is not None:
                self._on_exit(self)

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

    async def _receive_while_waited(self, hook: CallbackQueueHook, client: Any) -> None:
        idle_rounds = 0
        while True:
            if self._orphans:
                orphans, self._orphans = self._orphans, []
                await self._release_handles(hook, client, orphans)
            waiters = self._open_waiters()
            if not waiters:
                if not self._waiters and not self._orphans:
                    return
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            wait_time = min(w.wait_time_seconds for w in waiters)
            try:
                raw = await hook.areceive(
                    client,
                    self.key.queue_url,
                    wait_time_seconds=wait_time,
                    visibility_timeout=self.inspect_visibility_timeout,
                )
            except Exception as err:
                self._fail_waiters(err)
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
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
                idle_rounds = 0
            except TimeoutError:
                pass

    def _fail_waiters(self, error: BaseException) -> None:
        for waiter in list(self._waiters.values()):
            if not waiter.future.done():
                waiter.future.set_exception(error)

    async def _release_handles(self, hook: CallbackQueueHook, client: Any, handles: Sequence[str]) -> None:
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
        self, hook: CallbackQueueHook, client: Any, messages: Sequence[CallbackMessage]
    ) -> None:
        for message in messages:
            try:
                if await hook.adelete(client, self.key.queue_url, message.receipt_handle):
                    self.settled_deleted += 1
                    log.info("Deleted %s: its token is already answered", describe(message))
            except Exception as err:  # it comes back, and is found settled again
                log.warning("Could not delete %s: %s", describe(message), err)

    async def _route(
        self, hook: CallbackQueueHook, client: Any, raw: Sequence[dict[str, Any]]
    ) -> tuple[bool, int]:
        """Claim what matches, delete what is settled, release the rest; (progress made, released)."""
        order = sorted(self._open_waiters(), key=lambda w: w.seq)
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


# -------------------------------------------------------------------------------------------------------
# process-level registry, one map per event loop

_registry: LoopRegistry[ReceiverKey, QueueReceiver] = LoopRegistry()


def get_receiver(key: ReceiverKey, *, inspect_visibility_timeout: int = 30) -> QueueReceiver:
    """The running event loop's receiver for ``key``, created on first use (call inside the loop)."""

    def forget(done: QueueReceiver) -> None:
        # a receiver that ended with waiters still registered (they are failing) is restarted by the next
        # wait_for; one that ended idle is dropped and the next waiter creates a new one
        if not done.waiting:
            _registry.forget(done.key, done)

    return _registry.get(
        key, lambda: QueueReceiver(key, inspect_visibility_timeout=inspect_visibility_timeout, on_exit=forget)
    )


def active_receivers() -> list[QueueReceiver]:
    """The receivers of the running event loop (diagnostics and tests)."""
    return list(_registry.active().values())


__all__ = ["IDLE_POLICY", "QueueReceiver", "ReceiverKey", "active_receivers", "get_receiver"]
