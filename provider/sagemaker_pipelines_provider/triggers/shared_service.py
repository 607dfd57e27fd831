"""The one skeleton of the helpers that triggers share inside the triggerer (pollers, queue receivers).

A :class:`SharedService` serves the triggers of one event loop waiting on the same thing (a pipeline's
executions, an execution's steps, a queue). It gives each of them what the execution poller, the step
poller and the callback receiver used to restate:

- one instance per (event loop, service class, key), created lazily from inside the loop
  (:meth:`SharedService.shared`, on :class:`~sagemaker_pipelines_provider.utils.loop_registry.LoopRegistry`);
- subscribers: joining starts the service's task and wakes it (a newcomer does not wait for the end of the
  current sleep); the last one leaving wakes it too, so that it ends; the service leaves the registry when
  its task ends;
- the poll interval is the smallest one any subscriber still waiting asked for;
- sessions (one client's life, :meth:`SharedService._session`) repeat while there is work: the check is
  made again after a session's client has closed, since a subscriber may join while that close awaits;
- a session that fails fails the subscribers (:meth:`SharedService._fail`), never leaves them waiting;
- :class:`LentClient`: the client a session opens, lent to subscribers that make calls of their own.

See docs/triggerer.md for what this means for a triggerer's AWS calls.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager, suppress
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

from sagemaker_pipelines_provider.utils.loop_registry import LoopRegistry

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound="Subscriber")
U = TypeVar("U")


class Subscriber:
    """One party waiting on a shared service, wanting to hear every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    @property
    def waiting(self) -> bool:
        """False once the subscriber needs nothing more (it is only left to unregister)."""
        return True


class UpdateSubscriber(Subscriber, Generic[U]):
    """A subscriber whose updates arrive on a queue, each only when it differs from the previous one."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        self.queue: asyncio.Queue[U] = asyncio.Queue()
        self.last: U | None = None

    def offer(self, update: U) -> None:
        if update != self.last:
            self.last = update
            self.queue.put_nowait(update)


class LentClient:
    """The aiobotocore client of a service's current session, lent to its subscribers meanwhile."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self._client: Any = None
        self._in_session = False
        self._ready = asyncio.Event()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """Open the hook's client for the block and lend it; borrowers waiting when it ends get None."""
        self._in_session = True
        try:
            async with self.hook.async_client() as client:
                self._client = client
                self._ready.set()
                yield client
        finally:
            self._client, self._in_session = None, False
            self._ready.set()  # waiters get None and open a client of their own
            self._ready = asyncio.Event()

    async def get(self) -> Any:
        """The session's client (waiting while it is being opened); None outside a session."""
        if not self._in_session:
            return None
        await self._ready.wait()
        return self._client

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[Any]:
        """The lent client, or (none being open) a client of the caller's own for the block."""
        client = await self.get()
        if client is not None:
            yield client
            return
        async with self.hook.async_client() as own:
            yield own


_SERVICES: LoopRegistry[tuple[type, Hashable], Any] = LoopRegistry()


class SharedService(ABC, Generic[K, S]):
    """A per-event-loop helper that triggers waiting on the same ``key`` share (see the module docstring).

    Subclasses implement :meth:`_session` (one client's life: serve while :meth:`_has_work`) and
    :meth:`_fail` (tell the subscribers a session failed); they may widen :meth:`_has_work`.
    """

    #: The name of the service's asyncio task (with the key's description appended).
    task_name: ClassVar[str] = "sagemaker-shared-service"

    def __init__(self, key: K) -> None:
        self.key = key
        self._subscribers: set[S] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the registry -------------------------------------------------------------------------------------

    @classmethod
    def shared(cls, key: K, **kwargs: Any) -> Self:
        """The running loop's instance for ``key``, made as ``cls(key, **kwargs)`` on first use."""
        return cast(Self, _SERVICES.get((cls, key), lambda: cls(key, **kwargs)))

    @classmethod
    def active(cls) -> dict[Any, Self]:
        """This class's instances in the running loop, by key (diagnostics and tests)."""
        return {key: service for (kind, key), service in _SERVICES.active().items() if kind is cls}

    # -- subscribers --------------------------------------------------------------------------------------

    def _join(self, subscriber: S) -> None:
        self._subscribers.add(subscriber)
        self._wake.set()  # a newcomer does not wait for the end of the current sleep
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self.task_name}:{self.describe()}"
            )

    def _leave(self, subscriber: S) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers:
            self._wake.set()  # let the loop see that nobody is left

    @asynccontextmanager
    async def _subscribed(self, subscriber: S) -> AsyncIterator[S]:
        """Join for the block; leaving is exiting it (a cancelled trigger leaves that way)."""
        self._join(subscriber)
        try:
            yield subscriber
        finally:
            self._leave(subscriber)

    def _waiting(self) -> list[S]:
        """The subscribers that still wait for something."""
        return [s for s in self._subscribers if s.waiting]

    def _interval(self, default: float) -> float:
        """The smallest interval a waiting subscriber asked for (``default`` when none waits)."""
        return min((s.interval for s in self._waiting()), default=default)

    async def _poll_while_subscribed(self, poll: Callable[[], Awaitable[None]], default: float) -> None:
        """``poll()`` now, then after each interval (a join cuts the sleep short) while anyone subscribes."""
        while self._subscribers:
            await poll()
            if not self._subscribers:
                return
            self._wake.clear()
            await self._pause(self._interval(default))

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken (a join, the last leave) since the wake was cleared."""
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for, which can lose a cancellation on 3.11
                await self._wake.wait()
            return True
        return False

    # -- the loop -----------------------------------------------------------------------------------------

    def describe(self) -> str:
        """What the service serves, for task names and logs."""
        return str(self.key)

    def _has_work(self) -> bool:
        return bool(self._waiting())

    async def _run(self) -> None:
        try:
            # Checked again after each session: a subscriber may join while the session's client closes
            # (an await), and this task is still running then, so _join did not start another one.
            while self._has_work():
                await self._session()
        except Exception as err:  # never leave subscribers waiting on a dead service
            log.exception("%s for %s failed", type(self).__name__, self.describe())
            self._fail(err)
        finally:
            # No await between the last _has_work check and this: nobody can join in between.
            _SERVICES.forget((type(self), self.key), self)

    @abstractmethod
    async def _session(self) -> None:
        """Serve the subscribers (typically with one client) until :meth:`_has_work` turns False."""

    @abstractmethod
    def _fail(self, error: BaseException) -> None:
        """Tell every subscriber that the service failed with ``error``."""


__all__ = ["LentClient", "SharedService", "Subscriber", "UpdateSubscriber"]
