"""The visibility lease: keep one claimed callback message hidden while this process works on it.

A daemon thread pushes the message's deadline forward every third of ``visibility_timeout`` (never past
``max_seconds``), so the message comes back at most ``visibility_timeout`` after the process stops.
Leases are per process, keyed by (queue URL, receipt handle). The no-loss rule: ``docs/callbacks.md``."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from sagemaker_pipelines_provider.callbacks.message import mask_token
from sagemaker_pipelines_provider.utils.backoff import DEFAULT_POLICY, BackoffPolicy

log = logging.getLogger(__name__)

#: Default cap on one lease: SQS never keeps a received message hidden longer than 12 hours.
DEFAULT_MAX_SECONDS = 12 * 3600.0

_leases: dict[tuple[str, str], VisibilityLease] = {}
_leases_lock = threading.Lock()


class VisibilityLease:
    """A daemon thread extending one message's visibility until it is gone, stopped, or too old.

    :param hook: a :class:`~sagemaker_pipelines_provider.hooks.callback_queue.SageMakerCallbackQueueHook`; its
        client is created in the calling thread before the lease thread starts.
    :param visibility_timeout: seconds the message stays hidden after each extension (≥ 1).
    :param max_seconds: the lease ends this long after it started, whatever happens.
    :param label: how log lines name the message (never the full token).
    """

    def __init__(
        self,
        hook: Any,
        queue_url: str,
        receipt_handle: str,
        visibility_timeout: int,
        *,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        label: str = "",
    ) -> None:
        self.hook = hook
        self.queue_url = queue_url
        self.receipt_handle = receipt_handle
        self.visibility_timeout = max(1, int(visibility_timeout))
        self.interval = max(0.5, self.visibility_timeout / 3)
        self.max_seconds = max_seconds
        self.label = label or "callback message"
        self.extensions = 0
        self.gone = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> VisibilityLease:
        """Extend once now (in the caller's thread), then keep extending in a daemon thread."""
        self._started = time.monotonic()
        _ = self.hook.conn  # resolve connection and client here, not in the thread
        if not self._extend():
            return self
        self._thread = threading.Thread(target=self._run, name=f"visibility-lease-{self.label}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop extending (the message then returns after its current visibility timeout)."""
        self._stop.set()

    def _extend(self) -> bool:
        try:
            alive = bool(
                self.hook.change_visibility(self.queue_url, self.receipt_handle, self.visibility_timeout)
            )
        except Exception as err:  # keep the lease alive through an outage: the next tick tries again
            log.warning("Could not extend the visibility of %s (%s); will try again", self.label, err)
            return True
        if not alive:
            self.gone = True
            log.info("%s is gone from the queue (answered and deleted); lease ended", self.label)
            return False
        self.extensions += 1
        return True

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if time.monotonic() - self._started > self.max_seconds:
                    log.warning(
                        "Lease on %s reached its %.0fs cap; the message returns to the queue",
                        self.label,
                        self.max_seconds,
                    )
                    return
                if not self._extend():
                    return
        finally:
            with _leases_lock:
                key = (self.queue_url, self.receipt_handle)
                if _leases.get(key) is self:
                    del _leases[key]


def hold(
    hook: Any,
    queue_url: str,
    receipt_handle: str,
    visibility_timeout: int,
    *,
    token: str | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> VisibilityLease:
    """Start (or reuse) this process's lease on one message (contract: ``docs/callbacks.md``)."""
    key = (queue_url, receipt_handle)
    with _leases_lock:
        existing = _leases.get(key)
        if existing is not None and existing.running:
            return existing
        lease = VisibilityLease(
            hook,
            queue_url,
            receipt_handle,
            visibility_timeout,
            max_seconds=max_seconds,
            label=f"callback message of token {mask_token(token)}",
        )
        _leases[key] = lease
    lease.start()
    if not lease.running:
        with _leases_lock:
            if _leases.get(key) is lease:
                del _leases[key]
    return lease


def forget(queue_url: str, receipt_handle: str) -> None:
    """Stop this process's lease on one message, if any (called once the message is deleted)."""
    with _leases_lock:
        lease = _leases.pop((queue_url, receipt_handle), None)
    if lease is not None:
        lease.stop()


def lease_policy(visibility_timeout: int) -> BackoffPolicy:
    """The retry bounds of one lease tick: it must finish well before the message's visibility ends."""
    return replace(DEFAULT_POLICY, max_attempts=4, budget_seconds=max(1.0, visibility_timeout / 3))


def release_all() -> None:
    """Stop every lease of this process (tests; a worker shutting down cleanly)."""
    with _leases_lock:
        leases = list(_leases.values())
        _leases.clear()
    for lease in leases:
        lease.stop()


__all__ = ["DEFAULT_MAX_SECONDS", "VisibilityLease", "forget", "hold", "lease_policy", "release_all"]
