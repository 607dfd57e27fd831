"""One scheduler thread over a heap of timed callbacks: the engine advances time without a thread per step.

Contract: :meth:`Scheduler.call_later` is called with the engine lock held; callbacks run on the
scheduler thread in due-time order (ties in call order) with that lock held; ``after_batch`` runs after
each batch with the lock released (side effects never run under the engine lock); the thread starts
lazily and again after :meth:`shutdown`; a callback that raises is logged.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

_BATCH = 512  # callbacks run per lock hold, so that API calls get the lock between batches


class Scheduler:
    def __init__(self, lock: threading.RLock, after_batch: Callable[[], None]) -> None:
        self._cond = threading.Condition(lock)
        self._after_batch = after_batch
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the scheduler thread after ``delay`` seconds (0 = as soon as possible)."""
        due = time.monotonic() + max(0.0, delay)
        entry = (due, next(self._sequence), callback)
        heapq.heappush(self._heap, entry)
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="sagemaker-pipelines-engine", daemon=True)
            self._thread.start()
        if self._heap[0] is entry:
            self._cond.notify()

    def clear(self) -> None:
        """Forget every pending callback (lock held)."""
        self._heap.clear()

    def pending(self) -> int:
        return len(self._heap)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the thread (idempotent); pending callbacks are dropped."""
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
            self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._stopping:
                    return
                now = time.monotonic()
                count = 0
                while self._heap and self._heap[0][0] <= now and count < _BATCH:
                    _, _, callback = heapq.heappop(self._heap)
                    count += 1
                    try:
                        callback()
                    except Exception:  # a bug in one step must not stop every execution
                        log.exception("engine callback failed")
            try:
                self._after_batch()
            except Exception:
                log.exception("engine side effects failed")
