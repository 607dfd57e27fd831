"""Helpers shared by the benchmark scripts: the local endpoint in a child process, tables, machine facts.

The endpoint runs in its own process (``sagemaker-pipelines-local serve``) so that the CPU time and RSS a
benchmark reports for the watching side are the watcher's alone, not the simulated AWS's; the endpoint's
own CPU time is reported beside them (``psutil`` on the child).
"""

from __future__ import annotations

import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent


def isolate_airflow_home() -> None:
    """Point Airflow at a throwaway home (no ``~/airflow`` side effects, no example DAGs) before import."""
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-airflow-home-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


class EndpointProcess:
    """The local AWS endpoint in a child process; ``url``, ``environ``, ``controls``, ``cpu_seconds()``."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, environ: dict[str, str]) -> None:
        self.proc = proc
        self.url = url
        self.environ = environ
        self._ps = psutil.Process(proc.pid)
        from sagemaker_pipelines_provider.local.controls import LocalControls

        self.controls = LocalControls(url, timeout=120)

    def cpu_seconds(self) -> float:
        times = self._ps.cpu_times()
        return float(times.user + times.system)


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


@contextmanager
def endpoint_process(timeout: float = 60.0) -> Iterator[EndpointProcess]:
    """Start ``sagemaker-pipelines-local serve --port 0`` and export its environment in this process."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    env_file = workdir / "env.sh"
    log_file = (workdir / "endpoint.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "sagemaker_pipelines_provider.local.cli",
        "serve",
        "--port",
        "0",
        "--env-file",
        str(env_file),
    ]
    proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    # A SIGTERM to the benchmark unwinds through the finally below, so the endpoint never outlives it.
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        deadline = time.monotonic() + timeout
        while not env_file.exists() or not env_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local endpoint did not start; see {workdir / 'endpoint.log'}")
            time.sleep(0.1)
        environ = _read_env_file(env_file)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            os.environ.pop(name, None)
        os.environ.update(environ)
        endpoint = EndpointProcess(proc, environ["AWS_ENDPOINT_URL"], environ)
        endpoint.controls.wait_until_healthy()
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A fixed-width, markdown-compatible table (``| a | b |``), so it pastes into bench/README.md."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def machine() -> dict[str, str]:
    """What the figures ran on: CPUs, memory, Python, OS and the load average at the time."""
    load = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load average (1/5/15 min)": " / ".join(f"{v:.2f}" for v in load),
    }
