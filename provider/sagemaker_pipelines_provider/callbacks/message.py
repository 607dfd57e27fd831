"""Callback messages: parsing an SQS message body, routing it to a waiter, describing it for logs.

The one place that decides what a callback message is (:func:`parse_message`) and which waiter it
belongs to (:meth:`CallbackRoute.matches`). Everything in a message is untrusted: never evaluated, never
logged in full. See ``docs/callbacks.md``."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sagemaker_pipelines_provider.utils.arn import ExecutionArn, as_pipeline_name
from sagemaker_pipelines_provider.utils.tokens import idempotency_token

#: CallbackToken in the botocore model: exactly 10 characters, ``[a-zA-Z0-9]+``.
TOKEN_RE = re.compile(r"^[A-Za-z0-9]{10}$")
#: The ``status`` SageMaker puts on the message it sends when an execution is stopped while the callback
#: step waits. The handler must still answer the token: the execution ends Stopped only after that.
STOPPING = "Stopping"
#: Longest preview of a message's arguments written to a log line.
LOG_PREVIEW_CHARS = 200


class MalformedMessage(ValueError):
    """An SQS message that is not a callback message (not JSON, not an object, no valid token...).

    Such a message is never deleted by this provider and never answered: it is logged once per process and
    left to the queue's redrive policy (dead-letter queue).
    """

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


@dataclass(frozen=True)
class CallbackMessage:
    """One received callback message, with what is needed to answer its token and delete it.

    ``receipt_handle`` is the handle of *this* reception; SQS gives a new one each time a message is
    received again, and only the latest deletes it (the answer operators therefore also sweep the queue
    for other copies of the token after answering).
    """

    token: str
    pipeline_execution_arn: str | None
    arguments: dict[str, Any]
    status: str | None
    message_id: str
    receipt_handle: str
    queue_url: str
    receive_count: int = 1
    extra_keys: tuple[str, ...] = field(default=())
    #: Other copies of this token seen in the batch it was claimed from (duplicates, or the original of a
    #: Stopping message); they were made visible again and the answer sweeps them.
    copies_seen: int = 0

    @property
    def is_stopping(self) -> bool:
        """True for the message SageMaker sends when the execution is stopped while the callback waits."""
        return (self.status or "").lower() == STOPPING.lower()

    @property
    def pipeline_name(self) -> str | None:
        """The pipeline name read from the execution ARN (SageMaker writes it lower-case there)."""
        return pipeline_name_of(self.pipeline_execution_arn)

    def to_result(self, *, visibility_timeout: int | None = None) -> dict[str, Any]:
        """The JSON-serialisable dict the sensor returns (its XCom) and a trigger event carries.

        Keys: ``token``, ``pipeline_execution_arn``, ``arguments``, ``status``, ``message_id`` (the issue's
        contract) plus ``queue_url``, ``receipt_handle`` and ``visibility_timeout`` so that the tasks after
        the sensor can keep the message hidden and delete it once its token is answered, and
        ``receive_count`` / ``copies_seen`` (delivery facts the answer uses to decide whether to sweep).
        """
        return {
            "token": self.token,
            "pipeline_execution_arn": self.pipeline_execution_arn,
            "arguments": self.arguments,
            "status": self.status,
            "message_id": self.message_id,
            "queue_url": self.queue_url,
            "receipt_handle": self.receipt_handle,
            "receive_count": self.receive_count,
            "copies_seen": self.copies_seen,
            "visibility_timeout": visibility_timeout,
        }


def parse_message(sqs_message: Mapping[str, Any], queue_url: str) -> CallbackMessage:
    """Read one message as returned by ``ReceiveMessage``.

    :raises MalformedMessage: the body is not a JSON object, has no valid ``token`` (10 letters/digits),
        or its ``arguments``/``pipelineExecutionArn``/``status`` are of the wrong JSON type.
    """
    message_id = str(sqs_message.get("MessageId") or "")
    body = sqs_message.get("Body")
    if not isinstance(body, str):
        raise MalformedMessage("the message has no body", message_id)
    try:
        document = json.loads(body)
    except ValueError:
        raise MalformedMessage(f"the body is not JSON ({len(body)} characters)", message_id) from None
    if not isinstance(document, dict):
        raise MalformedMessage(f"the body is JSON but not an object ({type(document).__name__})", message_id)
    token = document.get("token")
    if not isinstance(token, str) or not token:
        raise MalformedMessage("the body has no 'token'", message_id)
    if not TOKEN_RE.match(token):
        raise MalformedMessage(
            f"the 'token' is not a SageMaker callback token (10 letters or digits; got {len(token)} "
            "characters)",
            message_id,
        )
    arn = document.get("pipelineExecutionArn")
    if arn is not None and not isinstance(arn, str):
        raise MalformedMessage("'pipelineExecutionArn' is not a string", message_id)
    arguments = document.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise MalformedMessage("'arguments' is not an object", message_id)
    status = document.get("status")
    if status is not None and not isinstance(status, str):
        raise MalformedMessage("'status' is not a string", message_id)
    receive_count = _int((sqs_message.get("Attributes") or {}).get("ApproximateReceiveCount"), default=1)
    known = {"token", "pipelineExecutionArn", "arguments", "status"}
    return CallbackMessage(
        token=token,
        pipeline_execution_arn=arn or None,
        arguments=arguments,
        status=status,
        message_id=message_id,
        receipt_handle=str(sqs_message.get("ReceiptHandle") or ""),
        queue_url=queue_url,
        receive_count=receive_count,
        extra_keys=tuple(sorted(k for k in document if k not in known)),
    )


def pipeline_name_of(pipeline_execution_arn: str | None) -> str | None:
    """``my-pipeline`` from ``arn:aws:sagemaker:<region>:<account>:pipeline/my-pipeline/execution/<id>``."""
    arn = ExecutionArn.parse_or_none(pipeline_execution_arn)
    return arn.pipeline_name if arn else None


def _int(value: Any, *, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def value_text(value: Any) -> str | None:
    """The text form used to compare a scalar argument with a ``match_arguments`` value.

    Bools are ``"true"``/``"false"`` (how SageMaker renders Boolean parameters), numbers their ``repr``;
    containers have no text form (``None``) and are compared by equality only.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return None


def values_equal(actual: Any, expected: Any) -> bool:
    """Equality of an argument with a routing value: equal as JSON values, or equal as text (``5`` = ``"5"``).

    Bools only equal bools or their text (``True`` = ``"true"``, never ``1``).
    """
    if isinstance(actual, bool) or isinstance(expected, bool):
        return value_text(actual) == value_text(expected)
    if actual == expected:
        return True
    actual_text, expected_text = value_text(actual), value_text(expected)
    return actual_text is not None and expected_text is not None and actual_text == expected_text


@dataclass(frozen=True)
class CallbackRoute:
    """Which callback messages a waiter takes; every condition given must hold (none given: any message).

    :param pipeline_execution_arn: the execution that sent the message (compared case-insensitively).
    :param pipeline_name: the pipeline (name or pipeline ARN) of that execution, read from the message's
        execution ARN (compared case-insensitively: SageMaker lower-cases names inside ARNs).
    :param match_arguments: a dict that must be a subset of the message's ``arguments`` (values compared
        by :func:`values_equal`). A ``Stopping`` message that carries no ``arguments`` at all is matched on
        the other conditions only, so a stop is never left unanswered because its message is shorter.
    """

    pipeline_execution_arn: str | None = None
    pipeline_name: str | None = None
    match_arguments: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.match_arguments is not None and not isinstance(self.match_arguments, Mapping):
            raise TypeError(
                f"match_arguments must be a dict of argument name -> value, got "
                f"{type(self.match_arguments).__name__}: {self.match_arguments!r}"
            )

    @classmethod
    def from_fields(
        cls,
        pipeline_execution_arn: str | None = None,
        pipeline_name: str | None = None,
        match_arguments: Mapping[str, Any] | None = None,
    ) -> CallbackRoute:
        """Build a route from (rendered) operator fields; empty strings count as "not given"."""
        return cls(
            pipeline_execution_arn=(pipeline_execution_arn or "").strip() or None,
            pipeline_name=as_pipeline_name((pipeline_name or "").strip()) or None,
            match_arguments=dict(match_arguments) if match_arguments else None,
        )

    @property
    def is_catch_all(self) -> bool:
        """True when no condition is set: the waiter takes any callback message on its queue."""
        return not (self.pipeline_execution_arn or self.pipeline_name or self.match_arguments)

    def matches(self, message: CallbackMessage) -> bool:
        """Whether ``message`` belongs to the waiter holding this route."""
        if self.pipeline_execution_arn is not None:
            arn = message.pipeline_execution_arn
            if arn is None or arn.casefold() != self.pipeline_execution_arn.casefold():
                return False
        if self.pipeline_name is not None:
            name = message.pipeline_name
            if name is None or name.casefold() != self.pipeline_name.casefold():
                return False
        if self.match_arguments:
            if message.is_stopping and not message.arguments:
                return True
            for key, expected in self.match_arguments.items():
                if key not in message.arguments or not values_equal(message.arguments[key], expected):
                    return False
        return True

    def describe(self) -> str:
        """A short text for log lines and error messages."""
        parts = []
        if self.pipeline_execution_arn:
            parts.append(f"execution {self.pipeline_execution_arn}")
        if self.pipeline_name:
            parts.append(f"pipeline {self.pipeline_name}")
        if self.match_arguments:
            parts.append(f"arguments matching {sorted(self.match_arguments)}")
        return ", ".join(parts) if parts else "any callback message"

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form (trigger kwargs)."""
        return {
            "pipeline_execution_arn": self.pipeline_execution_arn,
            "pipeline_name": self.pipeline_name,
            "match_arguments": dict(self.match_arguments) if self.match_arguments else None,
        }


#: First part of every callback-answer ClientRequestToken (keeps them apart from start/stop tokens).
ANSWER_TOKEN_PURPOSE = "sagemaker-callback-answer"


def answer_request_token(callback_token: str, kind: str, content: Mapping[str, Any] | None = None) -> str:
    """The ClientRequestToken of the ``kind`` (``"success"``/``"failure"``) answer to ``callback_token``
    whose ``content`` is the rest of the request as sent (``{"OutputParameters": [...]}`` or
    ``{"FailureReason": "..."}``), derived by the project's one derivation
    (:func:`~sagemaker_pipelines_provider.utils.tokens.idempotency_token`).

    One token, one request: AWS does not document what SageMaker does with a ClientRequestToken reused
    with other parameters, so the content is part of the derivation. The same answer sent again — a task
    retry, a re-run after a crash, the reconciler run again — is the same request (the answerers keep their
    texts free of try numbers and clocks for that); two answers that differ — the handler's failure reason
    and the reconciler's, a Stopping answer and a success — are two requests, and SageMaker refuses the
    later one as already answered: a token never gets a second, different answer.
    """
    digest = hashlib.sha256(
        json.dumps(dict(content or {}), sort_keys=True, separators=(",", ":")).encode("utf-8")
    ).hexdigest()
    return idempotency_token(ANSWER_TOKEN_PURPOSE, callback_token, kind, digest)


def mask_token(token: str | None) -> str:
    """A callback token as logs show it: enough to correlate, not enough to answer it (``Ab3…``)."""
    if not token:
        return "<none>"
    return f"{token[:3]}…"


def redact_token(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` masked (:func:`mask_token`): for error messages that
    quote it (SageMaker's do) before they reach a log line or a traceback."""
    if not token:
        return text
    return text.replace(token, mask_token(token))


def describe(message: CallbackMessage) -> str:
    """One log-safe line about ``message``: ids, execution, status and a bounded preview of its arguments."""
    text = json.dumps(message.arguments, sort_keys=True, default=str)
    preview = text if len(text) <= LOG_PREVIEW_CHARS else f"{text[:LOG_PREVIEW_CHARS]}… ({len(text)} chars)"
    status = f" status={message.status}" if message.status else ""
    return (
        f"callback message {message.message_id} token={mask_token(message.token)} "
        f"execution={message.pipeline_execution_arn}{status} receive_count={message.receive_count} "
        f"arguments={preview}"
    )


def prefer(messages: list[CallbackMessage]) -> CallbackMessage:
    """Of several received copies for one token, the one to hand over: the ``Stopping`` one if any.

    A stop arriving while the original message is also visible must reach the handler, which then answers
    without doing the work.
    """
    for message in messages:
        if message.is_stopping:
            return message
    return messages[0]


@dataclass
class BatchPlan:
    """What to do with one batch of received messages (see :func:`plan_batch`).

    ``claims``: ``(waiter index, message to hand over, other copies of its token in the batch)``;
    ``release``: valid messages no waiter takes, and the other copies of claimed tokens — made visible again
    at once so other consumers (and the answer's sweep) see them; ``settled``: every message of a token
    known to be answered already — to delete; ``malformed``: left as received.
    """

    claims: list[tuple[int, CallbackMessage, list[CallbackMessage]]] = field(default_factory=list)
    release: list[CallbackMessage] = field(default_factory=list)
    settled: list[CallbackMessage] = field(default_factory=list)
    malformed: list[MalformedMessage] = field(default_factory=list)


def plan_batch(
    raw_messages: Sequence[Mapping[str, Any]],
    queue_url: str,
    routes: Sequence[CallbackRoute | None],
    *,
    is_settled: Callable[[str], bool] | None = None,
) -> BatchPlan:
    """Route one received batch to waiters; the single routing decision of the provider.

    ``routes[i]`` is the route of waiter ``i`` (``None``: that waiter is already served). Waiters are
    served in order (first come, first served) and each takes at most one message; the copies of one token
    go to one waiter, which gets the ``Stopping`` copy if there is one (:func:`prefer`). Messages of a
    token for which ``is_settled`` is true go to no waiter (see :mod:`.liveness`).
    """
    plan = BatchPlan()
    by_token: dict[str, list[CallbackMessage]] = {}
    for raw in raw_messages:
        try:
            message = parse_message(raw, queue_url)
        except MalformedMessage as err:
            plan.malformed.append(err)
            continue
        by_token.setdefault(message.token, []).append(message)
    open_routes = list(routes)
    for token, copies in by_token.items():
        if is_settled is not None and is_settled(token):
            plan.settled.extend(copies)
            continue
        chosen_index: int | None = None
        matching: list[CallbackMessage] = []
        for index, route in enumerate(open_routes):
            if route is None:
                continue
            matching = [m for m in copies if route.matches(m)]
            if matching:
                chosen_index = index
                break
        if chosen_index is None:
            plan.release.extend(copies)
            continue
        chosen = prefer(matching)
        others = [m for m in copies if m is not chosen]
        plan.claims.append((chosen_index, replace(chosen, copies_seen=len(others)), others))
        plan.release.extend(others)
        open_routes[chosen_index] = None
    return plan


class MalformedLog:
    """Log each malformed message once per process (bounded memory: the most recent ids are kept)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, message_id: str | None) -> bool:
        """True the first time ``message_id`` is seen (always True for a message without id)."""
        if not message_id:
            return True
        with self._lock:
            if message_id in self._seen:
                self._seen.move_to_end(message_id)
                return False
            self._seen[message_id] = None
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return True

    def report(self, logger: logging.Logger, error: MalformedMessage, queue_url: str) -> None:
        """Warn once about a malformed message; it is left on the queue for its redrive policy."""
        if self.first_time(error.message_id):
            logger.warning(
                "Ignoring malformed message %s on %s: %s. It is not a SageMaker callback message; it is "
                "left on the queue (never deleted by this provider) for the queue's redrive policy.",
                error.message_id or "<no id>",
                queue_url,
                error.reason,
            )


#: The process-wide "logged once" memory of malformed messages.
MALFORMED_LOG = MalformedLog()


__all__ = [
    "ANSWER_TOKEN_PURPOSE",
    "MALFORMED_LOG",
    "STOPPING",
    "BatchPlan",
    "CallbackMessage",
    "CallbackRoute",
    "MalformedMessage",
    "answer_request_token",
    "describe",
    "mask_token",
    "parse_message",
    "pipeline_name_of",
    "plan_batch",
    "prefer",
    "redact_token",
    "values_equal",
]
