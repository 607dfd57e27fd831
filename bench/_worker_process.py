"""A warm Airflow worker in a child process: the work of worker tasks, kept out of the measured process.

In Airflow the triggerer (deferred tasks' triggers, one event loop) and the workers (tasks' ``execute``)
are separate processes. A benchmark of a trigger runs the worker side here, so the worker's calls do not
share the trigger process's GIL (and its CPU time) with the event loop being measured.

:class:`WorkerProcess` starts one ``spawn`` child (nothing inherited but the environment, as a fresh worker)
with named thread pools (worker slots), e.g. ``{"start": 16, "answer": 16}``. ``call`` runs a module-level
function there and waits; ``submit`` returns a :class:`concurrent.futures.Future` of its result. Requests and
results go through two one-way pipes; the child exits when the parent closes its end (also when the parent
dies), so it never outlives the benchmark.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any


class WorkerError(RuntimeError):
    """A function run in the worker process raised; the message carries its traceback."""


class WorkerProcess:
    """One child process with named thread pools; see the module docstring. Use as a context manager."""

    def __init__(self, pools: Mapping[str, int], initializer: Callable[[], None] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        child_requests, self._requests = context.Pipe(duplex=False)
        self._results, child_results = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve,
            args=(child_requests, child_results, dict(pools), initializer),
            name="bench-worker",
            daemon=True,
        )
        self._process.start()
        child_requests.close()  # only the child holds these ends: it sees EOF when the parent goes
        child_results.close()
        self._send_lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read_results, name="bench-worker-results", daemon=True)
        self._reader.start()

    def submit(self, pool: str, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``function(*args)`` (module-level, picklable) on a thread of ``pool`` in the child."""
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # it runs in the child: cancelling it here cannot stop it
        request = next(self._ids)
        with self._pending_lock:
            self._pending[request] = future
        with self._send_lock:
            self._requests.send((request, pool, function, args))
        return future

    def call(self, pool: str, function: Callable[..., Any], *args: Any, timeout: float = 300.0) -> Any:
        """Run ``function(*args)`` on ``pool`` in the child and return its result (set-up, warm-up)."""
        return self.submit(pool, function, *args).result(timeout=timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Let the child finish what it runs, then stop it (killed after ``timeout`` seconds)."""
        with self._send_lock:
            self._requests.close()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._reader.join(5)
        self._fail_pending()

    def _fail_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    WorkerError(
                        f"the worker process stopped (exit code {self._process.exitcode}) before answering"
                    )
                )

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _read_results(self) -> None:
        while True:
            try:
                request, ok, value = self._results.recv()
            except (EOFError, OSError):  # the child stopped (or crashed): nothing more will come
                self._process.join(5)
                self._fail_pending()
                return
            with self._pending_lock:
                future = self._pending.pop(request, None)
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(WorkerError(value))


def _serve(
    requests: Connection,
    results: Connection,
    pools: dict[str, int],
    initializer: Callable[[], None] | None,
) -> None:
    """The child: run each request on its pool's threads, send each result back, stop at EOF."""
    if initializer is not None:
        initializer()
    executors = {name: ThreadPoolExecutor(size, thread_name_prefix=name) for name, size in pools.items()}
    lock = threading.Lock()

    def reply(outcome: tuple[int, bool, Any]) -> None:
        with lock, contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            results.send(outcome)

    def run(request: int, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            outcome: tuple[int, bool, Any] = (request, True, function(*args))
        except BaseException:  # reported to the caller, whatever it was
            outcome = (request, False, traceback.format_exc())
        reply(outcome)

    while True:
        try:
            request, pool, function, args = requests.recv()
        except (EOFError, OSError):
            break
        if pool not in executors:
            reply((request, False, f"no pool {pool!r} in the worker process (pools: {', '.join(executors)})"))
            continue
        executors[pool].submit(run, request, function, args)
    for executor in executors.values():
        executor.shutdown(wait=True)
    results.close()
