"""Health checks of the stack's services — the checks of ``docker-compose.yaml``'s healthchecks — and
the loop that waits for them. The table of checks: ``docs/stack.md``."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import StackError
from .processes import ProcessRecord

Check = Callable[[], bool]


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def command_ok(argv: list[str], env: Mapping[str, str] | None = None, timeout: float = 60.0) -> bool:
    try:
        return (
            subprocess.run(
                argv,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_healthy(
    checks: Mapping[str, Check],
    records: Mapping[str, ProcessRecord],
    timeout: float,
    report: Callable[[str], None] = print,
    interval: float = 0.5,
) -> dict[str, float]:
    """Run every check until it passes; the seconds each took. :class:`StackError` (with the end of the
    service's log) as soon as a service's process exits, or when ``timeout`` passes."""
    started = time.monotonic()
    pending = dict(checks)
    took: dict[str, float] = {}
    while pending:
        for name, check in list(pending.items()):
            record = records.get(name)
            if record is not None and not record.alive():
                raise StackError(
                    f"{name} exited before it was healthy; end of {record.log}:\n{log_tail(record.log)}"
                )
            if check():
                took[name] = time.monotonic() - started
                report(f"  {name:<16} healthy after {took[name]:5.1f}s")
                del pending[name]
        if pending and time.monotonic() - started > timeout:
            tails = "\n".join(
                f"--- end of {records[n].log}:\n{log_tail(records[n].log, 20)}"
                for n in pending
                if n in records
            )
            raise StackError(f"not healthy after {timeout:.0f}s: {', '.join(pending)}\n{tails}")
        if pending:
            time.sleep(interval)
    return took
