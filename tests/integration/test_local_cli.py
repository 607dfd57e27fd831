"""The ``sagemaker-pipelines-local`` command: ``serve`` in a child process, ``seed`` in process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest
from sagemaker_pipelines_provider.local.cli import main
from sagemaker_pipelines_provider.local.seed import DEMO_PIPELINES

from tests.support.output_lines import OutputLines

pytestmark = pytest.mark.integration


def test_serve_prints_exports_seeds_and_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_pipelines_provider.local.cli", "serve", "--port", "0", "--seed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = OutputLines(process.stdout)
        deadline = time.monotonic() + 30
        seeded = json.loads(lines.next("# seeded: ", deadline).removeprefix("# seeded: "))
        url = lines.next("export AWS_ENDPOINT_URL=", deadline).split("=", 1)[1]
        connection = lines.next("export AIRFLOW_CONN_AWS_DEFAULT=", deadline)
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
        lines.next("# local AWS endpoint stopped", time.monotonic() + 5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
