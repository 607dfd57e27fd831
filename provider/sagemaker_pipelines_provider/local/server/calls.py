"""The call record: what the endpoint served, for ``GET /_local/calls``."""

from __future__ import annotations

import collections
import itertools
import threading
from typing import Any

__all__ = ["CallRecorder"]


class CallRecorder:
    """A bounded, thread-safe record of calls; each record has a strictly increasing ``seq``.

    ``since`` cursors stay valid across :meth:`clear` (sequence numbers are never reused).
    """

    def __init__(self, maxlen: int = 200_000) -> None:
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record["seq"] = next(self._seq)
            self._records.append(record)
        return record

    def query(
        self,
        *,
        since: int | None = None,
        action: str | None = None,
        service: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            records = list(self._records)
        selected = [
            r
            for r in records
            if (since is None or r["seq"] > since)
            and (action is None or r["action"] == action)
            and (service is None or r["service"] == service)
        ]
        return selected[:limit] if limit else selected

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
