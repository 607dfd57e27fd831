"""The local tools never read the user's AWS profile, config files or credentials.

Each check runs in a fresh process whose environment names an AWS profile that does not exist and points
``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` at files that do not exist (``user_env``): what
breaks every boto3 session that reads them (``ProfileNotFound``). The ``local_aws`` fixture (the endpoint
created in the test's process, then the code under test), ``serve --seed`` and ``seed`` must all work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.output_lines import OutputLines
from tests.support.user_env import VENV_BIN, run_pytest, user_environ

pytestmark = pytest.mark.integration

USER_TEST = """
import boto3


def test_the_fixture_and_the_code_under_test(local_aws):
    seeded = local_aws.seed()
    assert "retraining" in seeded["pipelines"]
    sagemaker = local_aws.client("sagemaker")
    arn = sagemaker.start_pipeline_execution(PipelineName="features")["PipelineExecutionArn"]
    local_aws.controls.set_default_step_duration(0.05)
    # the code under test builds its own clients: the fixture's environment reaches the endpoint
    sqs = boto3.client("sqs")
    assert any(url.endswith("/sagemaker-callbacks") for url in sqs.list_queues()["QueueUrls"])
    assert boto3.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=arn)


def test_an_endpoint_created_by_hand():
    from sagemaker_pipelines_provider.local import LocalEndpoint
    from sagemaker_pipelines_provider.local.seed import seed

    with LocalEndpoint() as endpoint:
        assert "features" in seed(endpoint.url)["pipelines"]
        assert endpoint.controls.calls(action="CreatePipeline")
"""


def test_local_aws_fixture_with_a_missing_profile(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TEST)
    output = run_pytest(tmp_path, tmp_path)
    assert "2 passed" in output, output[-3000:]


def test_serve_and_seed_with_a_missing_profile(tmp_path: Path) -> None:
    env = user_environ(tmp_path)
    command = VENV_BIN / "sagemaker-pipelines-local"
    process = subprocess.Popen(
        [str(command), "serve", "--port", "0", "--seed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = OutputLines(process.stdout)
        deadline = time.monotonic() + 60
        seeded = json.loads(lines.next("# seeded: ", deadline).removeprefix("# seeded: "))
        assert "retraining" in seeded["pipelines"]
        unset = lines.next("unset ", deadline)
        assert "AWS_PROFILE" in unset.split()
        url = lines.next("export AWS_ENDPOINT_URL=", deadline).split("=", 1)[1]

        seed = subprocess.run(
            [str(command), "seed", "--endpoint-url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert seed.returncode == 0, seed.stdout + seed.stderr
        assert json.loads(seed.stdout)["pipelines"] == seeded["pipelines"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
