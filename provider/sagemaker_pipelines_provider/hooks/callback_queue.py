"""SageMakerCallbackQueueHook: the SQS calls of callback handling (receive, hide, release, delete), also
made by the pipeline-event receiver (queue attributes, batch visibility changes and deletes).

Built on the Amazon provider's ``SqsHook``; every call goes through the provider's one backoff policy.
A message that is *gone* (deleted elsewhere, receipt handle superseded, queue deleted) is a ``False``
return, never an exception. See ``docs/callbacks.md``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from airflow.providers.amazon.aws.hooks.sqs import SqsHook
from botocore.config import Config
from botocore.exceptions import ClientError

from sagemaker_pipelines_provider.callbacks.message import MalformedMessage, mask_token, parse_message
from sagemaker_pipelines_provider.utils.backoff import (
    DEFAULT_POLICY,
    BackoffPolicy,
    acall_with_backoff,
    call_with_backoff,
    error_code,
)
from sagemaker_pipelines_provider.utils.deprecation import renamed

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQS limits.
MAX_BATCH = 10
MAX_WAIT_TIME_SECONDS = 20
MAX_VISIBILITY_TIMEOUT = 43_200  # 12 hours

#: Error codes meaning "this message (or its queue) is not there for this receipt handle any more".
GONE_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "InvalidParameterValue",  # "Message does not exist or is not available for visibility timeout change"
    }
)
#: The system attribute asked on every receive (how many times SQS delivered the message).
RECEIVE_ATTRIBUTES = ["ApproximateReceiveCount"]


def is_gone(error: BaseException) -> bool:
    """True when ``error`` says the message or its receipt handle is no longer valid."""
    return error_code(error) in GONE_CODES


def clamp_visibility(seconds: int | float) -> int:
    """A visibility timeout SQS accepts (0 to 12 hours)."""
    return max(0, min(MAX_VISIBILITY_TIMEOUT, int(seconds)))


class SageMakerCallbackQueueHook(SqsHook):
    """Receive, hide, release and delete callback messages on an SQS queue.

    :param backoff_policy: bounds of the retry loop; defaults to the project's
        :data:`~sagemaker_pipelines_provider.utils.backoff.DEFAULT_POLICY`.

    Other arguments are ``AwsBaseHook``'s (``aws_conn_id``, ``region_name``, ``verify``, ``config``).
    """

    def __init__(self, *args: Any, backoff_policy: BackoffPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.backoff_policy = backoff_policy or DEFAULT_POLICY

    @property
    def config(self) -> Config:
        """The connection's botocore config, with botocore's retries off unless configured explicitly."""
        config = super().config
        if getattr(config, "retries", None):
            return config
        return config.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))

    # ---------------------------------------------------------------------------------------------------
    # plumbing

    def _sqs(self) -> Any:
        """The boto3 SQS client (typed loosely: the Amazon provider's ``conn`` is not typed per service)."""
        return self.conn

    def _call(self, action: str, call: Callable[[], T]) -> T:
        return call_with_backoff(call, action=action, policy=self.backoff_policy)

    async def _acall(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        return await acall_with_backoff(call, action=action, policy=self.backoff_policy)

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[Any]:
        """An aiobotocore SQS client for the async methods; one per receiver, closed on exit."""
        async with await self.get_async_conn() as client:
            yield client

    @staticmethod
    def _receive_request(
        queue_url: str,
        max_messages: int,
        wait_time_seconds: int,
        visibility_timeout: int | None,
        attributes: Sequence[str] = RECEIVE_ATTRIBUTES,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": max(1, min(MAX_BATCH, int(max_messages))),
            "WaitTimeSeconds": max(0, min(MAX_WAIT_TIME_SECONDS, int(wait_time_seconds))),
            "MessageSystemAttributeNames": list(attributes),
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = clamp_visibility(visibility_timeout)
        return request

    # ---------------------------------------------------------------------------------------------------
    # synchronous

    def receive(
        self,
        queue_url: str,
        *,
        max_messages: int = MAX_BATCH,
        wait_time_seconds: int = MAX_WAIT_TIME_SECONDS,
        visibility_timeout: int | None = None,
    ) -> list[dict[str, Any]]:
        """ReceiveMessage (long polling up to ``wait_time_seconds``); the raw messages, possibly none."""
        request = self._receive_request(queue_url, max_messages, wait_time_seconds, visibility_timeout)
        response = self._call("ReceiveMessage", lambda: self._sqs().receive_message(**request))
        return list(response.get("Messages") or [])

    def change_visibility(self, queue_url: str, receipt_handle: str, visibility_timeout: int) -> bool:
        """ChangeMessageVisibility; False when the message is gone (``docs/callbacks.md``)."""
        try:
            self._call(
                "ChangeMessageVisibility",
                lambda: self._sqs().change_message_visibility(
                    QueueUrl=queue_url,
                    ReceiptHandle=receipt_handle,
                    VisibilityTimeout=clamp_visibility(visibility_timeout),
                ),
            )
        except ClientError as err:
            if is_gone(err):
                return False
            raise
        return True

    def release(self, queue_url: str, receipt_handles: Sequence[str]) -> None:
        """Make messages visible again at once (ChangeMessageVisibilityBatch to 0); gone ones are skipped."""
        for start in range(0, len(receipt_handles), MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(receipt_handles[start : start + MAX_BATCH])
            ]
            try:
                self._call(
                    "ChangeMessageVisibilityBatch",
                    lambda entries=entries: self._sqs().change_message_visibility_batch(  # type: ignore[misc]
                        QueueUrl=queue_url, Entries=entries
                    ),
                )
            except ClientError as err:
                if not is_gone(err):
                    raise

    def delete(self, queue_url: str, receipt_handle: str) -> bool:
        """DeleteMessage; False when the message was already gone."""
        try:
            self._call(
                "DeleteMessage",
                lambda: self._sqs().delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle),
            )
        except ClientError as err:
            if is_gone(err):
                return False
            raise
        return True

    def delete_token_copies(
        self, queue_url: str, token: str, *, rounds: int = 3, through_backlog: bool = False
    ) -> int:
        """Delete every copy of ``token``'s message visible now; make the other messages visible again.

        Called after ``token`` was answered (or reported already answered) when copies are likely: SQS may
        have delivered the callback message more than once, and a ``Stopping`` message carries the same
        token. Each round is one short-poll receive of up to 10 messages. Messages of other tokens are
        made visible again when the sweep ends (never deleted; hidden meanwhile, so each round sees new
        messages); malformed ones are left as received (their redrive policy decides). The sweep goes on
        only while a round finds a copy — or, with ``through_backlog`` (a copy is known to be left: the
        claim on it was lost), while a round receives anything at all — at most ``rounds`` rounds. Best
        effort: a copy in flight at another consumer is not seen here; it is deleted by the next receiver
        of this provider that gets it (the token is answered) or by whoever answers it next.

        :returns: how many copies were deleted.
        """
        deleted = 0
        others: list[str] = []
        try:
            for _ in range(max(1, rounds)):
                raw = self.receive(queue_url, wait_time_seconds=0, visibility_timeout=30)
                copies, round_others = _split_copies(raw, queue_url, token)
                others.extend(round_others)  # kept hidden until the sweep ends: each round sees new ones
                for handle in copies:
                    if self.delete(queue_url, handle):
                        deleted += 1
                if not (raw if through_backlog else copies):
                    break
        finally:
            if others:
                self.release(queue_url, others)
        if deleted:
            log.info("Deleted %d more copies of the message of token %s", deleted, mask_token(token))
        return deleted

    # ---------------------------------------------------------------------------------------------------
    # asynchronous (``client`` comes from :meth:`async_client`)

    async def areceive(
        self,
        client: Any,
        queue_url: str,
        *,
        max_messages: int = MAX_BATCH,
        wait_time_seconds: int = MAX_WAIT_TIME_SECONDS,
        visibility_timeout: int | None = None,
        attributes: Sequence[str] = RECEIVE_ATTRIBUTES,
    ) -> list[dict[str, Any]]:
        """ReceiveMessage (async); ``attributes`` are the system attributes asked for each message."""
        request = self._receive_request(
            queue_url, max_messages, wait_time_seconds, visibility_timeout, attributes
        )
        response = await self._acall("ReceiveMessage", lambda: client.receive_message(**request))
        return list(response.get("Messages") or [])

    async def achange_visibility(
        self, client: Any, queue_url: str, receipt_handle: str, visibility_timeout: int
    ) -> bool:
        """ChangeMessageVisibility (async); False when the message is gone."""
        try:
            await self._acall(
                "ChangeMessageVisibility",
                lambda: client.change_message_visibility(
                    QueueUrl=queue_url,
                    ReceiptHandle=receipt_handle,
                    VisibilityTimeout=clamp_visibility(visibility_timeout),
                ),
            )
        except ClientError as err:
            if is_gone(err):
                return False
            raise
        return True

    async def arelease(self, client: Any, queue_url: str, receipt_handles: Sequence[str]) -> None:
        """Make messages visible again at once (async); gone ones are skipped."""
        await self.achange_visibilities(client, queue_url, dict.fromkeys(receipt_handles, 0))

    async def achange_visibilities(self, client: Any, queue_url: str, timeouts: Mapping[str, int]) -> None:
        """ChangeMessageVisibilityBatch (async): hide each message (receipt handle) for its own number of
        seconds, 0 making it visible at once; gone ones are skipped."""
        await self._abatched(
            "ChangeMessageVisibilityBatch",
            client.change_message_visibility_batch,
            queue_url,
            [{"ReceiptHandle": h, "VisibilityTimeout": clamp_visibility(t)} for h, t in timeouts.items()],
        )

    async def _abatched(
        self,
        action: str,
        call: Callable[..., Awaitable[dict[str, Any]]],
        queue_url: str,
        entries: Sequence[dict[str, Any]],
    ) -> int:
        """Send ``entries`` to a batch action, 10 at a time; how many succeeded. An error saying the queue
        or a message is gone skips that batch; others are raised."""
        succeeded = 0
        for start in range(0, len(entries), MAX_BATCH):
            batch = [{"Id": str(i), **e} for i, e in enumerate(entries[start : start + MAX_BATCH])]
            try:
                response = await self._acall(
                    action,
                    lambda batch=batch: call(QueueUrl=queue_url, Entries=batch),  # type: ignore[misc]
                )
            except ClientError as err:
                if not is_gone(err):
                    raise
                continue
            succeeded += len(response.get("Successful") or [])
        return succeeded

    async def adelete(self, client: Any, queue_url: str, receipt_handle: str) -> bool:
        """DeleteMessage (async); False when the message was already gone."""
        try:
            await self._acall(
                "DeleteMessage",
                lambda: client.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt_handle),
            )
        except ClientError as err:
            if is_gone(err):
                return False
            raise
        return True

    async def adelete_batch(self, client: Any, queue_url: str, receipt_handles: Sequence[str]) -> int:
        """DeleteMessageBatch (async); how many were deleted (gone ones are not counted, never raised)."""
        return await self._abatched(
            "DeleteMessageBatch",
            client.delete_message_batch,
            queue_url,
            [{"ReceiptHandle": handle} for handle in receipt_handles],
        )

    # ---------------------------------------------------------------------------------------------------
    # the queue itself

    def queue_attributes(
        self, queue_url: str, names: Sequence[str] = ("QueueArn",), *, client: Any = None
    ) -> dict[str, str]:
        """GetQueueAttributes with ``client`` (a boto3 SQS client; the hook's own by default): raises the
        ClientError of a missing or unreadable queue."""
        sqs = client if client is not None else self._sqs()
        response = self._call(
            "GetQueueAttributes",
            lambda: sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(names)),
        )
        return dict(response.get("Attributes") or {})

    async def aqueue_attributes(
        self, client: Any, queue_url: str, names: Sequence[str] = ("QueueArn",)
    ) -> dict[str, str]:
        """GetQueueAttributes (async)."""
        response = await self._acall(
            "GetQueueAttributes",
            lambda: client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(names)),
        )
        return dict(response.get("Attributes") or {})


def _split_copies(raw: Sequence[dict[str, Any]], queue_url: str, token: str) -> tuple[list[str], list[str]]:
    """Receipt handles of ``token``'s copies and of other valid callback messages (malformed: neither)."""
    copies: list[str] = []
    others: list[str] = []
    for item in raw:
        try:
            message = parse_message(item, queue_url)
        except MalformedMessage:
            continue
        (copies if message.token == token else others).append(message.receipt_handle)
    return copies, others


__all__ = ["GONE_CODES", "SageMakerCallbackQueueHook", "clamp_visibility", "is_gone"]

# Former names (deprecated): importable from here, with a warning.
__getattr__ = renamed(
    __name__,
    globals(),
    {
        "CallbackQueueHook": "SageMakerCallbackQueueHook",
    },
)
