"""The one process-level registry of shared triggerer helpers (pollers, queue receivers), per event loop.

Triggers share a poller or a receiver when they wait on the same thing. Those helpers hold aiobotocore
clients and tasks bound to one event loop, so the registry keeps a separate map per running loop (a
loop that goes away takes its map with it) and hands out instances lazily, from inside the loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LoopRegistry(Generic[K, V]):
    """``key -> instance`` per running event loop; instances are created on first use."""

    def __init__(self) -> None:
        self._maps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, V]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, key: K, create: Callable[[], V]) -> V:
        """The running loop's instance for ``key``, made by ``create()`` if missing (call in the loop)."""
        instances = self._maps.setdefault(asyncio.get_running_loop(), {})
        instance = instances.get(key)
        if instance is None:
            instance = instances[key] = create()
        return instance

    def active(self) -> dict[K, V]:
        """A copy of the running loop's instances (diagnostics and tests)."""
        return dict(self._maps.get(asyncio.get_running_loop(), {}))

    def forget(self, key: K, instance: V) -> None:
        """Drop ``instance`` if it is still the running loop's one for ``key``; no-op outside a loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        instances = self._maps.get(loop)
        if instances is not None and instances.get(key) is instance:
            del instances[key]
