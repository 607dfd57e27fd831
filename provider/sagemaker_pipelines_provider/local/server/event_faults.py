"""Event faults: drop, duplicate or reorder a fraction of the EventBridge events the engine emits
(``POST /_local/event-faults``), seeded for reproducible tests and benches. Default: every event once."""

from __future__ import annotations

import collections
import random
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REORDER_HOLD_SECONDS", "EventFaultSettings", "EventFaults"]

#: A reordered event is delivered right after the next event, or after this many seconds if none comes.
REORDER_HOLD_SECONDS = 1.0


@dataclass
class EventFaultSettings:
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "drop_rate": self.drop_rate,
            "duplicate_rate": self.duplicate_rate,
            "reorder_rate": self.reorder_rate,
            "seed": self.seed,
        }


class EventFaults:
    """Decides, event by event in emission order, how many times each is delivered and whether it is held
    back behind the next one. Thread-safe; with a seed the decisions repeat for the same order of events.

    One draw per event chooses drop (``< drop_rate``), duplicate (``< drop_rate + duplicate_rate``) or
    once; a second draw, for a delivered event, chooses whether it is reordered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = EventFaultSettings()
        self.counts: collections.Counter[str] = collections.Counter()

    def set(
        self,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        seed: int | None = None,
    ) -> EventFaultSettings:
        for name, rate in (
            ("drop_rate", drop_rate),
            ("duplicate_rate", duplicate_rate),
            ("reorder_rate", reorder_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if drop_rate + duplicate_rate > 1.0:
            raise ValueError(
                f"drop_rate + duplicate_rate must not exceed 1, got {drop_rate + duplicate_rate}"
            )
        settings = EventFaultSettings(drop_rate, duplicate_rate, reorder_rate, seed, random.Random(seed))
        with self._lock:
            self._settings = settings
            self.counts.clear()
        return settings

    def clear(self) -> None:
        """Back to the default: every event delivered once, in order; counts reset."""
        self.set()

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {**self._settings.as_dict(), "counts": dict(self.counts)}

    def decide(self) -> tuple[int, bool]:
        """(copies to deliver: 0, 1 or 2; hold it back behind the next event)."""
        with self._lock:
            s = self._settings
            if s.drop_rate == 0.0 and s.duplicate_rate == 0.0 and s.reorder_rate == 0.0:
                self.counts["delivered"] += 1
                return 1, False
            draw = s.rng.random()
            if draw < s.drop_rate:
                self.counts["dropped"] += 1
                return 0, False
            copies = 2 if draw < s.drop_rate + s.duplicate_rate else 1
            if copies == 2:
                self.counts["duplicated"] += 1
            hold = s.reorder_rate > 0.0 and s.rng.random() < s.reorder_rate
            if hold:
                self.counts["reordered"] += 1
            self.counts["delivered"] += 1
            return copies, hold
