"""The ``sagemaker-pipelines-local`` command: ``serve`` in a child process, ``seed`` in process."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

import boto3
import pytest
from sagemaker_pipelines_provider.local.cli import main
from sagemaker_pipelines_provider.local.seed import DEMO_PIPELINES

pytestmark = pytest.mark.integration


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """Lines of ``stream`` as a queue fed by a reader thread (None at end of stream)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: queue.Queue[str | None], prefix: str, deadline: float) -> str:
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"the server exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line


def test_serve_prints_exports_seeds_and_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_pipelines_provider.local.cli", "serve", "--port", "0", "--seed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        deadline = time.monotonic() + 30
        seeded = json.loads(_next_line(lines, "# seeded: ", deadline).removeprefix("# seeded: "))
        url = _next_line(lines, "export AWS_ENDPOINT_URL=", deadline).split("=", 1)[1]
        connection = _next_line(lines, "export AIRFLOW_CONN_AWS_DEFAULT=", deadline)
        assert "region_name" in connection and url in connection
        assert set(seeded["pipelines"]) == set(DEMO_PIPELINES)

        sm: Any = boto3.client(
            "sagemaker",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        assert len(sm.list_pipelines()["PipelineSummaries"]) == len(DEMO_PIPELINES)

        assert main(["seed", "--endpoint-url", url]) == 0  # idempotent on a seeded endpoint
        assert json.loads(capsys.readouterr().out)["pipelines"] == seeded["pipelines"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        _next_line(lines, "# local AWS endpoint stopped", time.monotonic() + 5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
