"""Outdated SQS receipt handles, answered as AWS documents them (moto accepts any handle a message had).

SQS gives a message a new receipt handle each time it is received. AWS documents for ``DeleteMessage``:
with a receipt handle other than the most recent one, "the request will succeed, but the message might
not be deleted". moto 5.2.5 deletes the message with any handle it ever had, and changes its visibility
with any of them, so on the local endpoint a consumer whose claim lapsed and was taken over elsewhere
would still delete (or hide) the message: the endpoint would hide a failure real SQS can produce.
:class:`OutdatedReceipts` answers those calls itself when the handle is outdated — the message is still
on the queue and was received again since:

* ``DeleteMessage``: ``200 {}`` and nothing is deleted (the strict reading of "might not be deleted");
* ``ChangeMessageVisibility``: ``400 InvalidParameterValue`` "Value ... for parameter ReceiptHandle is
  invalid. Reason: Message does not exist or is not available for visibility timeout change." AWS does
  not document this case; that error is what SQS is reported to answer for a receipt handle that no
  longer holds the message, so it is this endpoint's choice;
* anything else — the latest handle, the handle of a deleted message, an unknown handle, the batch calls
  (``DeleteMessageBatch``, ``ChangeMessageVisibilityBatch``), query-protocol requests — goes to moto
  unchanged.
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
