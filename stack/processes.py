"""Detached service processes: start one, remember exactly which process it is, stop exactly that.

Each service runs in its own session (so its own process group), with stdin closed and stdout/stderr
appended to its log file, so ``make stack`` returns while the services keep running. A
:class:`ProcessRecord` keeps the pid together with the process's start time: a pid the system has since
given to another process is never signalled. Stopping signals the service's process group and any
descendant that left it, waits, then kills what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    stop_signal: int = int(signal.SIGTERM)
    env: dict[str, str] = field(default_factory=dict)  # the per-process variables (not the whole env)

    def process(self) -> psutil.Process | None:
        """The live process this record started, or None (exited, a zombie, or the pid was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(**data)


def spawn(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    cwd: Path,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
    record_env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` detached (own session), output appended to ``log``; as ``user`` when given."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    create_time = psutil.Process(proc.pid).create_time()
    record = ProcessRecord(
        name, proc.pid, create_time, list(argv), str(log), int(stop_signal), dict(record_env or {})
    )
    return proc, record


def _family(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _signal(record: ProcessRecord, family: list[psutil.Process], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)  # the service's own process group (it leads its session)
    for member in family:  # descendants that moved to another group
        with contextlib.suppress(psutil.Error):
            member.send_signal(sig)


def stop(records: Sequence[ProcessRecord], timeout: float = 30.0) -> list[str]:
    """Stop the recorded processes (and their descendants) together; the names that were running."""
    families: dict[str, list[psutil.Process]] = {}
    for record in records:
        proc = record.process()
        if proc is None:
            continue
        families[record.name] = _family(proc)
        _signal(record, families[record.name], record.stop_signal)
    everyone = [p for family in families.values() for p in family]
    _, alive = psutil.wait_procs(everyone, timeout=timeout)
    for straggler in alive:  # psutil checks that each is still the same process before signalling
        with contextlib.suppress(psutil.Error):
            straggler.kill()
    psutil.wait_procs(alive, timeout=10)
    return list(families)
