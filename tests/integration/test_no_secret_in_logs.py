"""No task log of any example DAG contains the AWS credentials.

The credentials are set to recognisable canaries — in the environment (boto3, aiobotocore) and in the
``aws_default`` connection (login / password) the example DAGs use — and every example DAG runs once
against the local endpoint (:func:`test_iam_policy.run_example_dags`), then the provider's failure paths
(:func:`test_iam_policy.run_failure_paths`: a killed task, a failed execution retried, a callback
handler whose work raises), whose error messages and tracebacks are where credentials would most likely
leak. Everything logged meanwhile is
collected: the logging records (``caplog``, INFO and above, the task log level), the process's stdout
and stderr (``capfd``: ``dag.test()`` prints task logs there) and any log file under ``AIRFLOW_HOME``.
The test fails if either canary appears in any of them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from test_iam_policy import EXAMPLE_DAGS, run_example_dags, run_failure_paths

pytestmark = pytest.mark.integration

ACCESS_KEY_ID = "AKIACANARY7Q3X9Z2W4P"
SECRET_ACCESS_KEY = "canarySecret+DoNotLog/8f3a1c9e7b2d4f6a0c1e3b5d7f9a2c4e"


def use_canary_credentials(monkeypatch: pytest.MonkeyPatch, endpoint_url: str) -> None:
    connection = {
        "conn_type": "aws",
        "login": ACCESS_KEY_ID,
        "password": SECRET_ACCESS_KEY,
        "extra": {"region_name": "us-east-1", "endpoint_url": endpoint_url},
    }
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))


def log_files() -> str:
    home = Path(os.environ["AIRFLOW_HOME"])
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*.log") if p.is_file())


def test_example_dag_logs_hold_no_credentials(
    local_aws: Any,
    dag_runner: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    use_canary_credentials(monkeypatch, local_aws.url)
    credentials = AwsBaseHook(aws_conn_id="aws_default").get_credentials()
    assert (credentials.access_key, credentials.secret_key) == (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    caplog.set_level(logging.INFO)

    runs, own = run_example_dags(local_aws, dag_runner, monkeypatch)
    failure_runs = run_failure_paths(local_aws, dag_runner, own)

    captured = capfd.readouterr()
    logged = "\n".join([caplog.text, captured.out, captured.err, log_files()])
    # Not vacuous: the task logs of every example DAG were captured.
    for dag_id in EXAMPLE_DAGS:
        assert dag_id in logged, f"no log of {dag_id} captured"
    assert set(runs) == set(EXAMPLE_DAGS)
    for run in failure_runs.values():
        assert run.dag_id in logged, f"no log of {run.dag_id} captured"
    for name, canary in (("secret access key", SECRET_ACCESS_KEY), ("access key id", ACCESS_KEY_ID)):
        lines = [line for line in logged.splitlines() if canary in line]
        assert not lines, f"the {name} appears in {len(lines)} logged line(s), e.g. {lines[0][:300]!r}"
