"""The skeleton the triggerer's shared helpers have in common (SharedService, LentClient).

A small service built on it (an echo of a counter per round) shows the contract every poller and receiver
inherits: one instance per loop and key, a newcomer wakes the loop, the smallest interval wins, the last
leave ends it and takes it out of the registry, a subscriber that joins while a session's client closes is
served by the next session, and a failing session fails its subscribers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sagemaker_pipelines_provider.triggers.shared_service import LentClient, SharedService, UpdateSubscriber


class SlowClosingHook:
    """A hook whose client's exit awaits until ``close`` is set (as aiobotocore closes its session)."""

    def __init__(self) -> None:
        self.opened = 0
        self.closing = asyncio.Event()
        self.close = asyncio.Event()
        self.close.set()
        self.fail_open: Exception | None = None

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[Any]:
        if self.fail_open is not None:
            raise self.fail_open
        self.opened += 1
        try:
            yield f"client-{self.opened}"
        finally:
            self.closing.set()
            await self.close.wait()


class Counter(SharedService[str, UpdateSubscriber[tuple[str, int]]]):
    """Offers (client, round) to every subscriber each round."""

    task_name = "test-counter"

    def __init__(self, key: str, hook: SlowClosingHook) -> None:
        super().__init__(key)
        self.lent = LentClient(hook)
        self.rounds = 0
        self.intervals: list[float] = []

    @asynccontextmanager
    async def subscribe(self, interval: float) -> AsyncIterator[asyncio.Queue[tuple[str, int]]]:
        async with self._subscribed(UpdateSubscriber[tuple[str, int]](interval)) as subscriber:
            yield subscriber.queue

    async def _session(self) -> None:
        async with self.lent.session() as client:
            while self._subscribers:
                self.rounds += 1
                for subscriber in list(self._subscribers):
                    subscriber.offer((client, self.rounds))
                self._wake.clear()
                self.intervals.append(self._interval(default=99.0))
                await self._pause(self.intervals[-1])

    def _fail(self, error: BaseException) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(("error", -1))


def test_one_instance_per_loop_and_key_leaving_the_registry_when_the_last_subscriber_leaves() -> None:
    hook = SlowClosingHook()

    async def main() -> None:
        counter = Counter.shared("a", hook=hook)
        assert Counter.shared("a", hook=hook) is counter
        assert Counter.shared("b", hook=hook) is not counter
        async with counter.subscribe(60.0) as first:
            assert await first.get() == ("client-1", 1)
            async with counter.subscribe(0.01) as second:  # a newcomer wakes the loop: no 60 s sleep
                assert await asyncio.wait_for(second.get(), 5) == ("client-1", 2)
                assert counter.intervals[-1] == 0.01  # the smallest interval asked for
                await asyncio.wait_for(second.get(), 5)  # the next round comes at that interval
        assert counter._task is not None
        await asyncio.wait_for(counter._task, 5)  # the last leave woke it: it ended
        assert set(Counter.active()) == {"b"}  # "a" left the registry; "b" never started
        assert counter.intervals[0] == 60.0

    asyncio.run(main())


def test_a_subscriber_joining_while_the_client_closes_is_served_by_a_new_session() -> None:
    hook = SlowClosingHook()

    async def main() -> tuple[str, int]:
        counter = Counter.shared("a", hook=hook)
        async with counter.subscribe(0.01) as updates:
            await updates.get()
        hook.close.clear()
        hook.closing.clear()
        await asyncio.wait_for(hook.closing.wait(), 5)  # nobody left: the session's client is closing
        async with counter.subscribe(0.01) as updates:
            hook.close.set()
            return await asyncio.wait_for(updates.get(), 5)

    client, _ = asyncio.run(main())
    assert client == "client-2" and hook.opened == 2


def test_a_failing_session_fails_its_subscribers_and_leaves_the_registry() -> None:
    hook = SlowClosingHook()
    hook.fail_open = RuntimeError("no credentials")

    async def main() -> tuple[str, int]:
        counter = Counter.shared("a", hook=hook)
        async with counter.subscribe(0.01) as updates:
            update = await asyncio.wait_for(updates.get(), 5)
            assert Counter.active() == {}
            return update

    assert asyncio.run(main()) == ("error", -1)


def test_a_borrower_gets_the_lent_client_or_opens_its_own() -> None:
    hook = SlowClosingHook()
    lent = LentClient(hook)

    async def main() -> list[str]:
        got: list[str] = []
        async with lent.session(), lent.borrow() as client:
            got.append(client)
        async with lent.borrow() as client:  # no session any more: a client of the borrower's own
            got.append(client)
        return got

    assert asyncio.run(main()) == ["client-1", "client-2"]


@pytest.mark.parametrize("default", [30.0, 99.0])
def test_the_interval_is_the_default_without_waiting_subscribers(default: float) -> None:
    async def main() -> float:
        return Counter("k", SlowClosingHook())._interval(default)

    assert asyncio.run(main()) == default
