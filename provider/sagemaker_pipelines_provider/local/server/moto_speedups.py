"""A cost of moto's SQS that real SQS does not have, removed without changing any answer.

moto 5.2.5's ``ReceiveMessage`` checks every message it returns against the queue's retention period by
building *all* the queue's attributes (three times per message), and each build counts every message in
the queue. A receive of 10 from a queue holding 100 messages then costs about 0.3 s of the endpoint's CPU,
so a burst of callbacks is received ten times slower than SQS would. :func:`install` makes that check read
the one attribute it needs (the queue's ``MessageRetentionPeriod``, the same value). Installed once per
process by the endpoint when it first loads moto.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["install"]

_installed = False
_lock = threading.Lock()


def install() -> None:
    """Replace ``SQSBackend.is_message_valid_based_on_retention_period`` by its O(1) equal (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from moto.core.utils import unix_time
        from moto.sqs.models import SQSBackend

        def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
            retention_period = int(self.get_queue(queue_name).message_retention_period)
            return bool(retention_period + message.sent_timestamp / 1000 > unix_time())

        SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
        _installed = True
