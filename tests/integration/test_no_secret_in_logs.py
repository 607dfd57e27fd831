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

Callback tokens are capabilities too (whoever holds one can decide a step's fate): no log line may hold a
full token. Besides the tokens the runs above answer, the answer operators' two error paths run as tasks
(:func:`run_token_error_paths`): a token answered again (SageMaker refuses it as already answered) and a
token SageMaker does not know (the task fails). SageMaker's error messages quote the token, so these are
where a chained ``ClientError`` would print it. Every token answered during the test (from the endpoint's
call record) and the unknown one are searched for in everything logged.
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
    failure_runs["token_errors"] = run_token_error_paths(local_aws, dag_runner)

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
    tokens = answered_tokens(local_aws) | {UNKNOWN_TOKEN}
    assert len(tokens) >= 3, tokens  # the example handler's, the failure path's, the unknown one
    for token in sorted(tokens):
        lines = [line for line in logged.splitlines() if token in line]
        assert not lines, (
            f"a full callback token appears in {len(lines)} logged line(s), e.g. {lines[0][:300]!r}"
        )


#: A well-formed callback token the endpoint never issued (its answer is refused as not found).
UNKNOWN_TOKEN = "Unknwn7Tkn"


def answered_tokens(local_aws: Any) -> set[str]:
    """Every callback token an answer call carried (the endpoint's call record)."""
    from test_callback_helpers import answer_calls

    return {
        str(c["args"]["CallbackToken"])
        for c in answer_calls(local_aws)
        if c.get("args", {}).get("CallbackToken")
    }


def run_token_error_paths(local_aws: Any, dag_runner: Any) -> Any:
    """Answer an already answered token (refused by SageMaker, the task succeeds) and an unknown one (the
    task fails): the two paths on which SageMaker's error message, which quotes the token, is handled."""
    from sagemaker_pipelines_provider.operators.callback import (
        SageMakerCallbackFailureOperator,
        SageMakerCallbackSuccessOperator,
    )
    from test_callback_helpers import answer_calls, dag

    failed = local_aws.controls.calls(action="SendPipelineExecutionStepFailure")
    answered = sorted({str(c["args"]["CallbackToken"]) for c in failed if c.get("status") == 200})
    assert answered, "the failure paths answered no callback token with failure"
    token = answered[0]  # answered with failure: a success answer is refused as already answered
    with dag("token-error-paths") as d:
        SageMakerCallbackSuccessOperator(task_id="already_answered", token=token, outputs={"passed": True})
        SageMakerCallbackFailureOperator(task_id="unknown_token", token=UNKNOWN_TOKEN, reason="no such token")
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states == {"already_answered": "success", "unknown_token": "failed"}, states
    refused = [c for c in answer_calls(local_aws, token) if c.get("error_code")]
    assert refused, "the second answer was not refused as already answered"
    assert [c["error_code"] for c in answer_calls(local_aws, UNKNOWN_TOKEN)] == ["ResourceNotFound"]
    return run
