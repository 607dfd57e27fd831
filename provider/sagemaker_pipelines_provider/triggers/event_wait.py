"""The asyncio plumbing of the waits that read events: several queues read as one.

A wait given an ``event_queue_url`` reads two queues, its subscription to the queue receiver
(:mod:`~.event_receiver`) and its subscription to the shared poller (the safety poll): :func:`merged` forwards
both, in arrival order, into one. What the items mean is the caller's (the execution trigger merges them in
an :class:`~sagemaker_pipelines_provider.utils.execution_picture.ExecutionPicture`; the steps poller takes
events as wake-ups).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def merged(*queues: asyncio.Queue[Any]) -> AsyncIterator[asyncio.Queue[Any]]:
    """One queue receiving every item of ``queues`` as it arrives, for the block.

    Each item is taken off its source only when it is put on the merged queue (a source's item is never
    lost in between); the forwarding stops when the block exits.
    """
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def forward(source: asyncio.Queue[Any]) -> None:
        while True:
            inbox.put_nowait(await source.get())

    tasks = [asyncio.ensure_future(forward(source)) for source in queues]
    try:
        yield inbox
    finally:
        for task in tasks:
            task.cancel()


async def next_item(queue: asyncio.Queue[Any], timeout: float | None) -> Any | None:
    """The queue's next item, or None when ``timeout`` seconds (None: no limit) pass first."""
    if timeout is None:
        return await queue.get()
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that arrives as the
        # item does, and the trigger would then outlive its cancellation.
        async with asyncio.timeout(timeout):
            return await queue.get()
    except TimeoutError:
        return None


__all__ = ["merged", "next_item"]
