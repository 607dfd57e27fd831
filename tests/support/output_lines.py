"""The lines a child process prints, read by a thread so that waiting for one can time out."""

from __future__ import annotations

import queue
import threading
import time
from typing import IO


class OutputLines:
    """Lines of ``stream`` fed to a queue by a reader thread; :meth:`next` waits for one with a prefix."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, prefix: str, deadline: float) -> str:
        """The next line starting with ``prefix`` (``queue.Empty`` once ``deadline`` passes)."""
        while True:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                last = "\n".join(self.seen[-40:])
                raise AssertionError(f"the server exited before printing {prefix!r}:\n{last}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line
