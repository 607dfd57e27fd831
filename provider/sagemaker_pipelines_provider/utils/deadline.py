"""Deadlines carried through deferrals: an ISO-8601 instant (the task's ``execution_timeout`` end)."""

from __future__ import annotations

import datetime as dt


def parse_deadline(deadline: str) -> dt.datetime:
    """The instant of an ISO-8601 deadline (a deadline without a zone is UTC)."""
    moment = dt.datetime.fromisoformat(deadline)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def seconds_left(deadline: str | None) -> float | None:
    """Seconds until ``deadline`` (0.0 once passed); None when there is no deadline."""
    if not deadline:
        return None
    return max(0.0, (parse_deadline(deadline) - dt.datetime.now(dt.UTC)).total_seconds())
