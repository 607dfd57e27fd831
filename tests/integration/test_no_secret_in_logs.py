"""No task log of any example DAG contains the AWS credentials.

The credentials are set to recognisable canaries — in the environment (boto3, aiobotocore) and in the
``aws_default`` connection (login / password) the example DAGs use — and every example DAG runs once
against the local endpoint, then the provider's failure paths (a killed task, a failed execution
retried, a callback handler whose work raises), whose error messages and tracebacks are where
credentials would most likely leak: the session's ``example_runs`` (:mod:`tests.support.example_dags`,
shared with ``test_iam_policy.py``). Everything logged meanwhile is collected: the logging records (INFO
and above, the task log level), the process's stdout and stderr (``dag.test()`` prints task logs there)
and any log file under ``AIRFLOW_HOME``. The test fails if either canary appears in any of them.

Callback tokens are capabilities too (whoever holds one can decide a step's fate): no log line may hold a
full token. Besides the tokens the runs above answer, the answer operators' two error paths run as tasks
(``run_token_error_paths``): a token answered again (SageMaker refuses it as already answered) and a
token SageMaker does not know (the task fails). SageMaker's error messages quote the token, so these are
where a chained ``ClientError`` would print it. Every token answered during the test (from the endpoint's
call record) and the unknown one are searched for in everything logged.
"""

from __future__ import annotations

import pytest

from tests.support.example_dags import (
    ACCESS_KEY_ID,
    EXAMPLE_DAGS,
    SECRET_ACCESS_KEY,
    UNKNOWN_TOKEN,
    ExampleRuns,
)

pytestmark = pytest.mark.integration


def test_example_dag_logs_hold_no_credentials(example_runs: ExampleRuns) -> None:
    assert example_runs.credentials == (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    runs, failure_runs, logged = example_runs.runs, example_runs.failure_runs, example_runs.logged
    # Not vacuous: the task logs of every example DAG were captured.
    for dag_id in EXAMPLE_DAGS:
        assert dag_id in logged, f"no log of {dag_id} captured"
    assert set(runs) == set(EXAMPLE_DAGS)
    assert set(failure_runs) == {"retry", "answer_failure", "stop", "token_errors"}
    for run in failure_runs.values():
        assert run.dag_id in logged, f"no log of {run.dag_id} captured"
    for name, canary in (("secret access key", SECRET_ACCESS_KEY), ("access key id", ACCESS_KEY_ID)):
        lines = [line for line in logged.splitlines() if canary in line]
        assert not lines, f"the {name} appears in {len(lines)} logged line(s), e.g. {lines[0][:300]!r}"
    tokens = example_runs.answered_tokens() | {UNKNOWN_TOKEN}
    assert len(tokens) >= 3, tokens  # the example handler's, the failure path's, the unknown one
    for token in sorted(tokens):
        lines = [line for line in logged.splitlines() if token in line]
        assert not lines, (
            f"a full callback token appears in {len(lines)} logged line(s), e.g. {lines[0][:300]!r}"
        )
