"""Fault injection: throttles, 5xx errors and delays answered instead of (or after) serving a call."""

from __future__ import annotations

import collections
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from .identity import RequestInfo
from .wire import protocol_error

__all__ = ["MAX_FAULT_DELAY", "FaultInjector", "FaultRule", "fault_response"]

#: Upper bound of a fault rule's ``delay`` (seconds): a longer one would outlast botocore's read timeout.
MAX_FAULT_DELAY = 60.0


@dataclass
class FaultRule:
    """Answer a fraction of the calls to one action (or ``"*"``) with a throttle or a 5xx error, and hold
    the answer of every call it serves for ``delay`` seconds (the call takes effect first)."""

    action: str
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)
    delay: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "throttle_rate": self.throttle_rate,
            "error_rate": self.error_rate,
            "seed": self.seed,
            "delay": self.delay,
        }


class FaultInjector:
    """Per-action fault rules; a rule for the exact action wins over ``"*"``. Thread-safe and, with a
    seed, reproducible for a given order of calls."""

    def __init__(self) -> None:
        self._rules: dict[str, FaultRule] = {}
        self._lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()

    def set(
        self, action: str, throttle_rate: float, error_rate: float, seed: int | None, delay: float = 0.0
    ) -> FaultRule:
        for name, rate in (("throttle_rate", throttle_rate), ("error_rate", error_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if throttle_rate + error_rate > 1.0:
            raise ValueError(
                f"throttle_rate + error_rate must not exceed 1, got {throttle_rate + error_rate}"
            )
        if not 0.0 <= delay <= MAX_FAULT_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_FAULT_DELAY:g} seconds, got {delay}")
        rule = FaultRule(action, throttle_rate, error_rate, seed, random.Random(seed), delay)
        with self._lock:
            if throttle_rate == 0.0 and error_rate == 0.0 and delay == 0.0:
                self._rules.pop(action, None)
            else:
                self._rules[action] = rule
        return rule

    def clear(self, action: str | None = None) -> None:
        with self._lock:
            if action is None:
                self._rules.clear()
            else:
                self._rules.pop(action, None)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self._rules.values()]

    def decide(self, action: str) -> str | None:
        """None to serve the call, or "throttle", "error500" or "error503"."""
        with self._lock:
            rule = self._rules.get(action) or self._rules.get("*")
            if rule is None:
                return None
            draw = rule.rng.random()
            if draw < rule.throttle_rate:
                outcome = "throttle"
            elif draw < rule.throttle_rate + rule.error_rate:
                outcome = "error500" if rule.rng.random() < 0.5 else "error503"
            else:
                return None
            self.injected[outcome] += 1
            return outcome

    def delay(self, action: str) -> float:
        """Seconds to hold the answer of a served call to ``action`` (its rule's ``delay``, else 0)."""
        with self._lock:
            rule = self._rules.get(action) or self._rules.get("*")
            if rule is None or rule.delay <= 0.0:
                return 0.0
            self.injected["delay"] += 1
            return rule.delay


# fault -> (HTTP status, JSON-protocol code, query-protocol code, S3 status, S3 code, message)
_FAULTS: dict[str, tuple[int, str, str, int, str, str]] = {
    "throttle": (400, "ThrottlingException", "Throttling", 503, "SlowDown", "Rate exceeded"),
    "error500": (
        500,
        "InternalFailure",
        "InternalFailure",
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "error503": (
        503,
        "ServiceUnavailable",
        "ServiceUnavailable",
        503,
        "ServiceUnavailable",
        "Service is unable to handle request.",
    ),
}


def fault_response(info: RequestInfo, fault: str) -> tuple[int, dict[str, str], bytes, str]:
    """An injected fault (``throttle``, ``error500``, ``error503``) shaped for the request's protocol."""
    status, json_code, query_code, s3_status, s3_code, message = _FAULTS[fault]
    if info.service == "s3" and info.protocol != "query":
        return protocol_error(info, s3_status, s3_code, message)
    return protocol_error(info, status, json_code, message, query_code=query_code)
