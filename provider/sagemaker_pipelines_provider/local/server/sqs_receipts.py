"""Outdated SQS receipt handles, answered as AWS documents them (moto accepts any handle a message had):
:class:`OutdatedReceipts` answers ``DeleteMessage`` and ``ChangeMessageVisibility`` with a handle that is
no longer the latest; everything else goes to moto. The answers and the choice behind
them: docs/local-endpoint.md.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OutdatedReceipts"]

#: An answer: (HTTP status, headers, body, error code or None).
Answer = tuple[int, dict[str, str], bytes, str | None]

OUTDATED_VISIBILITY_MESSAGE = (
    "Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not "
    "available for visibility timeout change."
)


class OutdatedReceipts:
    """Answers SQS calls made with an outdated receipt handle (see the module docstring)."""

    ACTIONS = frozenset({"DeleteMessage", "ChangeMessageVisibility"})

    def answer(self, action: str, region: str, body: bytes | None) -> Answer | None:
        """The answer for a JSON-protocol SQS ``action`` with an outdated handle; None: let moto serve it."""
        if action not in self.ACTIONS or not body:
            return None
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(request, dict):
            return None
        handle, queue_url = request.get("ReceiptHandle"), request.get("QueueUrl")
        if not isinstance(handle, str) or not isinstance(queue_url, str):
            return None
        if not _outdated(queue_url, region, handle):
            return None
        request_id = str(uuid.uuid4())
        if action == "DeleteMessage":
            headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}
            return 200, headers, b"{}", None
        code = "InvalidParameterValue"
        error = {
            "__type": f"com.amazonaws.sqs#{code}",
            "message": OUTDATED_VISIBILITY_MESSAGE.format(handle=handle),
        }
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-RequestId": request_id,
            "x-amzn-query-error": f"{code};Sender",
        }
        return 400, headers, json.dumps(error).encode(), code


def _outdated(queue_url: str, region: str, handle: str) -> bool:
    """True when a message of the queue had ``handle`` but was received again since."""
    from moto.backends import get_backend

    segments = [s for s in urlsplit(queue_url).path.split("/") if s]
    if len(segments) < 2:
        return False
    account, name = segments[-2], segments[-1]
    try:
        queue: Any = get_backend("sqs")[account][region].queues.get(name)  # type: ignore[call-overload]
    except KeyError:
        return False
    if queue is None:
        return False
    for message in list(queue._messages):
        if message.had_receipt_handle(handle):
            return bool(message.receipt_handle != handle)
    return False
