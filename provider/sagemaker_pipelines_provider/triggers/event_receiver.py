"""The shared receiver of SageMaker's pipeline status-change events on one SQS queue, per event loop.

An EventBridge rule puts every execution and step status change (:mod:`~..utils.pipeline_events`) on an SQS
queue; several triggerers (HA) may read that queue, each with one :class:`PipelineEventReceiver` per
(event loop, queue URL, connection) that serves every trigger of its loop waiting for events. The receiver
runs only while someone in its loop subscribes; each session starts with GetQueueAttributes, so a missing or
unreadable queue fails every subscriber at once (:class:`EventStreamError`) instead of leaving it waiting.

Messages are notifications, not work: SageMaker stays the truth and waits start from one read of the current
status. The policy for each received message (docs/events.md, "How waits read the queue"):

- **wanted here** (a subscriber of this loop matches) -> offered to every matching subscriber (a copy with an
  event id a subscriber already got is not offered again), then deleted;
- **malformed** -> deleted, with a WARNING naming the reason;
- **of an execution whose wait ended here** (:meth:`PipelineEventReceiver.finished`; a bounded memory per
  queue in this process) -> deleted;
- **older than** :data:`UNCLAIMED_TTL` (``SentTimestamp``) -> deleted: by then the waits' safety polls have
  read that status anyway;
- **anything else** (held by another triggerer's wait, or by nobody) -> released for the other readers, hidden
  for a delay growing with its receive count (1, 2, 4 ... :data:`RELEASE_MAX_DELAY` s) so that readers that
  do not want it do not spin on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.sdk.exceptions import AirflowException

from sagemaker_pipelines_provider.hooks.callback_queue import (
    MAX_WAIT_TIME_SECONDS,
    SageMakerCallbackQueueHook,
)
from sagemaker_pipelines_provider.triggers.callback_receiver import ReceiverKey
from sagemaker_pipelines_provider.triggers.shared_service import SharedService, Subscriber
from sagemaker_pipelines_provider.utils.arn import as_pipeline_name
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy, Retryable, error_code
from sagemaker_pipelines_provider.utils.pipeline_events import MalformedEvent, PipelineEvent, parse_event

log = logging.getLogger(__name__)

#: Seconds after which a message nobody here wants is deleted (by ``SentTimestamp``): the default safety
#: poll interval, so every wait has read that status by then.
UNCLAIMED_TTL = 600.0
#: A released message is hidden ``RELEASE_BASE_DELAY * 2 ** (receive count - 1)`` seconds, at most
#: ``RELEASE_MAX_DELAY``.
RELEASE_BASE_DELAY = 1.0
RELEASE_MAX_DELAY = 60.0
#: Long-poll wait of each ReceiveMessage (SQS's maximum); each asks for up to 10 messages.
WAIT_TIME_SECONDS = MAX_WAIT_TIME_SECONDS
#: How long a received message stays hidden while the receiver decides on it (milliseconds of work). Short,
#: because a receive cut off in flight (a triggerer stopping, an event loop closing) hides its batch this
#: long from every reader; a message that comes back before it was deleted is offered to nobody twice.
INSPECT_VISIBILITY_TIMEOUT = 5
#: Executions remembered per queue as "the wait ended here" (least recently finished forgotten first).
FINISHED_MEMORY = 10_000
#: Event ids remembered per subscriber to offer each event once.
SEEN_MEMORY = 4096
#: Pause after a receive that failed while the queue still reads fine (the safety poll covers meanwhile).
ERROR_POLICY = BackoffPolicy(base_delay=1.0, max_delay=30.0)

_SYSTEM_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp")
_MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_ACCESS_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "KMS.AccessDeniedException", "AuthorizationError"}
)
#: What a role reading an events queue needs (docs/events.md, docs/iam-policy.json ``EventWaits``).
QUEUE_PERMISSIONS = (
    "sqs:GetQueueAttributes, sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility"
)


class EventQueueError(AirflowException):
    """The events queue cannot be read (missing, access denied, not a queue URL); the message says which
    queue, the AWS error and what to do."""


@dataclass(frozen=True)
class EventQueueKey(ReceiverKey):
    """What makes two subscriptions share a receiver: same queue (``queue_url``), reached with the same
    connection (``aws``); the callback receiver's key, as its own type so the two never share."""


@dataclass(frozen=True)
class EventStreamError:
    """Put on a subscriber's queue when the receiver cannot read the queue; no event follows it."""

    message: str


class _Ids:
    """A bounded set of recent ids (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, item: str) -> bool:
        """Remember ``item``; False when it was already there."""
        if item in self._ids:
            self._ids.move_to_end(item)
            return False
        self._ids[item] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, item: object) -> bool:
        return item in self._ids


_FINISHED: dict[str, _Ids] = {}
_FINISHED_LOCK = threading.Lock()  # triggerer loops in several threads of one process share the memory


def _arn_key(arn: str) -> str:
    # SageMaker writes pipeline names lower-case in execution ARNs; callers may not
    return arn.lower()


def _pipeline_route(pipeline_name: str) -> str:
    return "pipeline/" + pipeline_name.lower()  # never an ARN's key: those start with "arn:"


class _Sub(Subscriber):
    """One subscription: the events on its ``route`` (an execution ARN's key, or a pipeline's) go to
    ``queue``, each event id once; ``statuses`` (pipeline subscriptions) keeps only those execution events."""

    def __init__(self, route: str, wait_time_seconds: float, statuses: frozenset[str] | None = None) -> None:
        super().__init__(wait_time_seconds)
        self.route = route
        self.statuses = statuses
        self.queue: asyncio.Queue[PipelineEvent | EventStreamError] = asyncio.Queue()
        self.failed = False
        self._seen = _Ids(SEEN_MEMORY)

    def wants(self, event: PipelineEvent) -> bool:
        if self.failed:
            return False
        return self.statuses is None or (event.kind == "execution" and event.status in self.statuses)

    @property
    def waiting(self) -> bool:
        return not self.failed

    def offer(self, event: PipelineEvent) -> bool:
        """Queue ``event`` unless this subscription already got that event id."""
        if not self._seen.add(event.event_id):
            return False
        self.queue.put_nowait(event)
        return True

    def fail(self, message: str) -> None:
        if not self.failed:
            self.failed = True
            self.queue.put_nowait(EventStreamError(message))


class PipelineEventReceiver(SharedService[EventQueueKey, _Sub]):
    """Receives the events of one queue for the subscriptions of one event loop (module docstring).

    Constructor keywords (tests and the bench; defaults are the module constants): ``hook_factory``,
    ``wait_time_seconds``, ``unclaimed_ttl``, ``release_base_delay``, ``release_max_delay``.

    ``counts`` (diagnostics, the bench): ``receives`` (ReceiveMessage calls), ``messages`` received,
    ``offered`` (event handed to a subscription), ``deleted``, ``released``, and why messages were deleted
    without an offer: ``malformed``, ``finished``, ``expired``.
    """

    task_name = "sagemaker-pipeline-events"

    def __init__(
        self,
        key: EventQueueKey,
        *,
        hook_factory: Callable[[], SageMakerCallbackQueueHook] | None = None,
        wait_time_seconds: int | None = None,
        unclaimed_ttl: float | None = None,
        release_base_delay: float | None = None,
        release_max_delay: float | None = None,
    ) -> None:
        super().__init__(key)
        self._hook_factory = hook_factory or key.hook
        self.wait_time_seconds = WAIT_TIME_SECONDS if wait_time_seconds is None else wait_time_seconds
        self.unclaimed_ttl = UNCLAIMED_TTL if unclaimed_ttl is None else unclaimed_ttl
        self.release_base_delay = RELEASE_BASE_DELAY if release_base_delay is None else release_base_delay
        self.release_max_delay = RELEASE_MAX_DELAY if release_max_delay is None else release_max_delay
        self._routes: dict[str, list[_Sub]] = {}
        self.counts: dict[str, int] = dict.fromkeys(
            ("receives", "messages", "offered", "deleted", "released", "malformed", "expired", "finished"), 0
        )

    def describe(self) -> str:
        return self.key.queue_url

    # -- subscriptions -----------------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe_execution(
        self, arn: str
    ) -> AsyncIterator[asyncio.Queue[PipelineEvent | EventStreamError]]:
        """Every execution and step event of execution ``arn``, in arrival order, each event id once."""
        async with self._routed(_Sub(_arn_key(arn), self.wait_time_seconds)) as queue:
            yield queue

    @asynccontextmanager
    async def subscribe_pipeline(
        self, pipeline_name: str, statuses: Collection[str]
    ) -> AsyncIterator[asyncio.Queue[PipelineEvent | EventStreamError]]:
        """The execution events of pipeline ``pipeline_name`` (a name or ARN) whose status is in
        ``statuses``, whoever started the execution; each event id once."""
        route = _pipeline_route(as_pipeline_name(pipeline_name))
        async with self._routed(_Sub(route, self.wait_time_seconds, frozenset(statuses))) as queue:
            yield queue

    @asynccontextmanager
    async def _routed(self, sub: _Sub) -> AsyncIterator[asyncio.Queue[PipelineEvent | EventStreamError]]:
        """Subscribed for the block, and indexed by route (a batch finds its takers without a scan)."""
        routed = self._routes.setdefault(sub.route, [])
        routed.append(sub)
        try:
            async with self._subscribed(sub):
                yield sub.queue
        finally:
            routed.remove(sub)
            if not routed and self._routes.get(sub.route) is routed:
                del self._routes[sub.route]

    def _takers(self, event: PipelineEvent) -> list[_Sub]:
        """The subscriptions that want ``event``, in the order they subscribed."""
        candidates = self._routes.get(_arn_key(event.execution_arn), []) + self._routes.get(
            _pipeline_route(event.pipeline_name), []
        )
        return [sub for sub in candidates if sub.wants(event)]

    def finished(self, arn: str) -> None:
        """The wait on ``arn`` ended here: events of it received from now on are deleted at once."""
        with _FINISHED_LOCK:
            memory = _FINISHED.setdefault(self.key.queue_url, _Ids(FINISHED_MEMORY))
            memory.add(_arn_key(arn))

    def _is_finished(self, arn: str) -> bool:
        with _FINISHED_LOCK:
            memory = _FINISHED.get(self.key.queue_url)
            return memory is not None and _arn_key(arn) in memory

    # -- the loop ----------------------------------------------------------------------------------------

    async def _session(self) -> None:
        hook = self._hook_factory()
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(hook.async_client())
            try:
                await check_event_queue(hook, self.key.queue_url, client=client)
            except EventQueueError as err:
                self._fail_all(str(err))
                return
            await self._receive_while_subscribed(hook, client)

    async def _receive_while_subscribed(self, hook: SageMakerCallbackQueueHook, client: Any) -> None:
        errors = 0
        while self._waiting():
            self._wake.clear()
            try:
                raw = await hook.areceive(
                    client,
                    self.key.queue_url,
                    wait_time_seconds=int(self._interval(default=self.wait_time_seconds)),
                    visibility_timeout=INSPECT_VISIBILITY_TIMEOUT,
                    attributes=_SYSTEM_ATTRIBUTES,
                )
                self.counts["receives"] += 1
                if raw:
                    await self._handle(hook, client, raw)
                errors = 0
            except Exception as err:
                if not await self._still_readable(hook, client):
                    return
                log.warning(
                    "Reading pipeline events from %s failed (%s); trying again (waits poll meanwhile)",
                    self.key.queue_url,
                    _describe_error(err),
                )
                await self._pause(ERROR_POLICY.delay(errors, Retryable.TRANSIENT))
                errors += 1

    async def _still_readable(self, hook: SageMakerCallbackQueueHook, client: Any) -> bool:
        """After a failed receive: False (subscribers failed) when the queue is gone or access is denied;
        True for anything else (an outage: the caller tries again, the waits' safety polls go on)."""
        try:
            await check_event_queue(hook, self.key.queue_url, client=client)
        except EventQueueError as err:
            if error_code(err.__cause__ or err) in _MISSING_QUEUE_CODES | _ACCESS_CODES:
                self._fail_all(str(err))
                return False
        return True

    def _fail_all(self, message: str) -> None:
        log.error("%s", message)
        for sub in list(self._subscribers):
            sub.fail(message)

    def _fail(self, error: BaseException) -> None:
        self._fail_all(
            f"The pipeline event receiver for {self.key.queue_url} failed: {_describe_error(error)}"
        )

    async def _handle(
        self, hook: SageMakerCallbackQueueHook, client: Any, raw: Sequence[Mapping[str, Any]]
    ) -> None:
        """Apply the message policy to one received batch (module docstring).

        The queue is settled (releases, then deletes) before the subscribers hear of their events: one that
        ends its wait on an event may end the event loop (``dag.test``, a stopping triggerer) and so cancel
        this task, which must not leave other readers' messages hidden. The offers are made even when
        settling fails: an undeleted copy comes back and is not offered twice.
        """
        now = time.time()
        delete: list[str] = []
        release: dict[str, int] = {}
        offers: list[tuple[list[_Sub], PipelineEvent]] = []
        for message in raw:
            self.counts["messages"] += 1
            handle = str(message.get("ReceiptHandle"))
            try:
                event = parse_event(message.get("Body") or "")
            except MalformedEvent as err:
                self.counts["malformed"] += 1
                log.warning(
                    "Deleting message %s on %s: not a SageMaker pipeline event (%s)",
                    message.get("MessageId"),
                    self.key.queue_url,
                    err.reason,
                )
                delete.append(handle)
                continue
            takers = self._takers(event)
            if takers:
                offers.append((takers, event))
                delete.append(handle)
            elif self._is_finished(event.execution_arn):
                self.counts["finished"] += 1
                delete.append(handle)
            elif self._age(message, event, now) > self.unclaimed_ttl:
                self.counts["expired"] += 1
                delete.append(handle)
            else:
                release[handle] = self._release_delay(message)
        try:
            if release:
                await hook.achange_visibilities(client, self.key.queue_url, release)
                self.counts["released"] += len(release)
            if delete:
                self.counts["deleted"] += await hook.adelete_batch(client, self.key.queue_url, delete)
        finally:
            for takers, event in offers:
                for sub in takers:
                    if sub.offer(event):
                        self.counts["offered"] += 1

    def _release_delay(self, message: Mapping[str, Any]) -> int:
        count = _int_attribute(message, "ApproximateReceiveCount") or 1
        delay = self.release_base_delay * 2 ** min(max(count - 1, 0), 30)
        return round(min(self.release_max_delay, delay))

    @staticmethod
    def _age(message: Mapping[str, Any], event: PipelineEvent, now: float) -> float:
        """Seconds since SQS got the message (``SentTimestamp``; else the event's own time; else 0)."""
        sent = _int_attribute(message, "SentTimestamp")
        if sent is not None:
            return now - sent / 1000
        return now - event.time.timestamp() if event.time is not None else 0.0


def _int_attribute(message: Mapping[str, Any], name: str) -> int | None:
    try:
        return int((message.get("Attributes") or {})[name])
    except (KeyError, TypeError, ValueError):
        return None


def get_event_receiver(key: EventQueueKey, **kwargs: Any) -> PipelineEventReceiver:
    """The running event loop's receiver for ``key``, created on first use (call inside the loop);
    ``kwargs`` (see :class:`PipelineEventReceiver`) apply only when it is created."""
    return PipelineEventReceiver.shared(key, **kwargs)


# -- checking a queue ------------------------------------------------------------------------------------


def _describe_error(error: BaseException) -> str:
    code = error_code(error)
    return f"{code}: {error}" if code else f"{type(error).__name__}: {error}"


def queue_error_message(queue_url: str, error: BaseException) -> str:
    """What to tell the user when ``queue_url`` cannot be read as an events queue."""
    code = error_code(error)
    if code in _MISSING_QUEUE_CODES:
        return (
            f"The pipeline events queue {queue_url} does not exist ({_describe_error(error)}). Create it "
            "and the EventBridge rule that feeds it (docs/events.md), or fix event_queue_url."
        )
    if code in _ACCESS_CODES:
        return (
            f"The pipeline events queue {queue_url} cannot be read with this connection "
            f"({_describe_error(error)}); the role needs {QUEUE_PERMISSIONS} on it (docs/events.md)."
        )
    return f"The pipeline events queue {queue_url} cannot be read: {_describe_error(error)}"


def _validate_url(queue_url: Any) -> str:
    if not isinstance(queue_url, str) or not queue_url.strip():
        raise EventQueueError(f"event_queue_url must be an SQS queue URL, not {queue_url!r}")
    if queue_url.startswith("arn:"):
        raise EventQueueError(
            f"event_queue_url must be the queue's URL (https://sqs.<region>.amazonaws.com/<account>/<name>), "
            f"not its ARN {queue_url!r}"
        )
    return queue_url


async def check_event_queue(hook_or_client: Any, queue_url: str, *, client: Any = None) -> None:
    """Check that ``queue_url`` exists and can be read (GetQueueAttributes), as the receiver does first.

    ``hook_or_client``: a :class:`SageMakerCallbackQueueHook` (its own async client is opened unless
    ``client`` is given), another ``AwsBaseHook`` on SQS, or an aiobotocore SQS client.

    :raises EventQueueError: naming the queue and the AWS error (missing queue, access denied...).
    """
    _validate_url(queue_url)
    hook = hook_or_client if isinstance(hook_or_client, SageMakerCallbackQueueHook) else None
    try:
        async with AsyncExitStack() as stack:
            if client is None:
                if hook is not None:
                    client = await stack.enter_async_context(hook.async_client())
                elif isinstance(hook_or_client, AwsBaseHook):
                    client = await stack.enter_async_context(await hook_or_client.get_async_conn())
                else:
                    client = hook_or_client
            await (hook or _policy_hook()).aqueue_attributes(client, queue_url)
    except EventQueueError:
        raise
    except Exception as err:
        raise EventQueueError(queue_error_message(queue_url, err)) from err


def check_event_queue_sync(hook_or_client: Any, queue_url: str) -> None:
    """:func:`check_event_queue` for synchronous code: ``hook_or_client`` is an SQS hook or a boto3 SQS
    client. :raises EventQueueError: naming the queue and the AWS error."""
    _validate_url(queue_url)
    try:
        if isinstance(hook_or_client, SageMakerCallbackQueueHook):
            hook_or_client.queue_attributes(queue_url)
        else:
            client = hook_or_client.conn if isinstance(hook_or_client, AwsBaseHook) else hook_or_client
            _policy_hook().queue_attributes(queue_url, client=client)
    except Exception as err:
        raise EventQueueError(queue_error_message(queue_url, err)) from err


def _policy_hook() -> SageMakerCallbackQueueHook:
    """A hook used only for its call policy (backoff) around a client it did not open."""
    return SageMakerCallbackQueueHook(aws_conn_id=None)


__all__ = [
    "FINISHED_MEMORY",
    "QUEUE_PERMISSIONS",
    "RELEASE_BASE_DELAY",
    "RELEASE_MAX_DELAY",
    "UNCLAIMED_TTL",
    "WAIT_TIME_SECONDS",
    "EventQueueError",
    "EventQueueKey",
    "EventStreamError",
    "PipelineEventReceiver",
    "check_event_queue",
    "check_event_queue_sync",
    "get_event_receiver",
    "queue_error_message",
]
