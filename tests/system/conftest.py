"""Fixtures of the system tests: the whole stack of ``make stack``, driven as a user drives it.

Every test that uses ``airflow_stack`` (directly or through another fixture here) is marked ``system``;
``make test`` runs them in a second pytest run after the rest (``make test SYSTEM=0`` leaves them out,
outside CI only). A missing piece (PostgreSQL or Redis that cannot be installed, a service that never
becomes healthy) fails them: they never skip.

``airflow_stack`` (session)
    A started :class:`stack.Stack`: its own state folder under pytest's temporary folder, every port free
    (``AIRFLOW_API_PORT``, ``SMP_LOCAL_PORT`` and the internal ones), so it never meets a user's
    ``make stack``. The example DAGs poll every :data:`POLL_INTERVAL` s (the provider's option
    ``[sagemaker_pipelines] default_poll_interval``) and the endpoint's simulated steps take
    :data:`STEP_SECONDS` s. :data:`FAULT_SETTINGS` shorten the times after which Airflow gives a dead
    triggerer's triggers to another one and reschedules the tasks of a dead worker, and lift
    ``historical_retraining``'s own per-task cap above the pool (tests b and c: the pool and the
    endpoint's cap are the limits under test). Stopped at the end of the session whatever
    happened; its logs stay (the path is printed). Use ``.api()`` (REST), ``.airflow(*args)`` (CLI),
    ``.kill(name, sig)`` / ``.restart(name)`` (faults; names in ``stack.AIRFLOW_SERVICES``),
    ``.records`` (pids), ``.api_url``, ``.endpoint_url``, ``.logs_dir``.
``airflow_api`` (session)
    ``airflow_stack.api()``: :class:`stack.AirflowApi` logged in as ``airflow``/``airflow`` —
    ``trigger(dag_id, logical_date=None)`` (unpauses, no logical date unless given), ``wait_for_run``,
    ``task_instances``, ``task_instance``, ``xcom``, ``clear_task_instances``, ``asset_events``,
    ``alive_jobs``, ``get``/``post``/``patch``.
``stack_aws`` (function)
    The stack's local endpoint, reset and re-seeded before the test (call record, executions, faults
    and caps forgotten): a :class:`StackAws` with ``.controls`` (:class:`LocalControls`: ``calls()``,
    ``set_faults()``, ``set_step_behaviour()``, ``peak_concurrency()`` ...), ``.client(service)``,
    ``.executions(pipeline)`` and ``.steps(execution_arn)``.
``artifacts_dir`` (function)
    A folder for the test's artifacts (``$SYSTEM_TEST_ARTIFACTS``, default ``.stack-artifacts/``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack import AirflowApi, Stack, free_port

POLL_INTERVAL = "1"
STEP_SECONDS = "0.2"
#: Added to the stack's environment for the fault tests (c) and the backfill (b); the defaults in brackets.
FAULT_SETTINGS = {
    # A triggerer whose heartbeat is older than the threshold is dead: another one takes its triggers
    # (its next loop after that). [5 s, 30 s]
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    # A running task instance whose worker stopped heartbeating is failed (and retried) after this long;
    # workers heartbeat every 5 s ([workers] min_heartbeat_interval). [300 s, checked every 10 s]
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # historical_retraining's max_active_runs and max_active_tis_per_dag [4].
    "SMP_MAX_CONCURRENT": "32",
}


#: pytest-timeout for a system test without a timeout mark of its own: the first one also starts the
#: stack (about a minute, more when PostgreSQL and Redis get installed) and the last one stops it.
SYSTEM_TEST_TIMEOUT = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "airflow_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.system)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SYSTEM_TEST_TIMEOUT))


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("stack")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def report(line: str) -> None:  # straight to the terminal: the start-up figures are wanted in CI logs
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            for part in line.splitlines():
                reporter.write_line(f"[stack] {part}")

    stack = Stack(
        state_dir,
        # Only these variables: the developer's .env or AWS settings never reach the test stack.
        variables={"AIRFLOW_API_PORT": str(free_port()), "SMP_LOCAL_PORT": str(free_port())},
        extra_env={"AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL": POLL_INTERVAL, **FAULT_SETTINGS},
        endpoint_args=["--default-step-duration", STEP_SECONDS],
        report=report,
    )
    report(f"logs: {stack.logs_dir}")
    try:
        stack.up()
        yield stack
    finally:
        stack.down(remove_data=True)
        report(f"stopped; logs kept in {stack.logs_dir}")


@pytest.fixture(scope="session")
def airflow_api(airflow_stack: Stack) -> AirflowApi:
    return airflow_stack.api()


class StackAws:
    """The stack's local endpoint, as the system tests read it."""

    def __init__(self, url: str, region: str = "us-east-1") -> None:
        from sagemaker_pipelines_provider.local.controls import LocalControls

        self.url = url
        self.region = region
        self.controls = LocalControls(url)
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(  # type: ignore[call-overload]
                service,
                endpoint_url=self.url,
                region_name=self.region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._clients[service]

    def seed(self) -> dict[str, Any]:
        from sagemaker_pipelines_provider.local.seed import seed

        return seed(self.url, region=self.region)

    def executions(self, pipeline: str) -> list[dict[str, Any]]:
        """Every execution of ``pipeline`` (ListPipelineExecutions summaries), oldest first."""
        paginator = self.client("sagemaker").get_paginator("list_pipeline_executions")
        pages = paginator.paginate(PipelineName=pipeline, SortOrder="Ascending")
        return [summary for page in pages for summary in page["PipelineExecutionSummaries"]]

    def steps(self, execution_arn: str) -> list[dict[str, Any]]:
        """ListPipelineExecutionSteps of one execution."""
        paginator = self.client("sagemaker").get_paginator("list_pipeline_execution_steps")
        pages = paginator.paginate(PipelineExecutionArn=execution_arn)
        return [step for page in pages for step in page["PipelineExecutionSteps"]]


@pytest.fixture
def stack_aws(airflow_stack: Stack) -> StackAws:
    """The endpoint, reset and re-seeded (as ``serve --seed`` left it) before the test."""
    aws = StackAws(airflow_stack.endpoint_url)
    aws.controls.reset()
    aws.seed()
    return aws


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for this test's artifacts (screenshots ...): ``$SYSTEM_TEST_ARTIFACTS`` (default
    ``.stack-artifacts/`` in the repository), then the test's name. Tests print it."""
    root = Path(
        os.environ.get("SYSTEM_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".stack-artifacts"
    )
    folder = root / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
