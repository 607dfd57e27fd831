"""The example DAGs of ``dags/`` against the local endpoint, and their one green run per test session.

:func:`run_examples` (the session fixture ``example_runs`` of ``tests/conftest.py``) runs every example
DAG once, green, then the provider's failure paths (:func:`run_failure_paths`: a failed execution
resumed by the task's retry, a callback handler whose work raises, a task killed by its
``execution_timeout``) and the callback answer operators' token error paths
(:func:`run_token_error_paths`), with canary AWS credentials. It keeps what the checks read afterwards:
the runs, the endpoint's call record, the seq ranges of the harness's own calls, the executions after each
example, everything logged. ``tests/dags/test_example_dags.py``, ``tests/integration/test_iam_policy.py``
and ``tests/integration/test_no_secret_in_logs.py`` assert on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.seed import DEMO_PIPELINES

from tests.support.endpoint import executions

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"
FAST_ENV = {"AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL": "0.2", "SMP_CAPACITY_BACKOFF": "0.1"}
POOL = "sagemaker_pipelines"
STEP_SECONDS = 0.05
KILLED_STEP_SECONDS = 60.0  # the killed task's execution must still be running when it is killed
#: The order the examples run in: the consumer after both producers (its manual run reads their events).
EXAMPLE_DAGS = (
    "retraining_chain",
    "historical_retraining",
    "retraining_consumer",
    "mirror_pipeline",
    "callback_handler_dag",
    "on_pipeline_succeeded",
)
CHAIN_DATE = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
HISTORICAL_DATE = dt.datetime(2025, 6, 2, tzinfo=dt.UTC)
ANSWER_ACTIONS = ("SendPipelineExecutionStepSuccess", "SendPipelineExecutionStepFailure")
#: Canary credentials: in the environment and the ``aws_default`` connection during the runs.
ACCESS_KEY_ID = "AKIACANARY7Q3X9Z2W4P"
SECRET_ACCESS_KEY = "canarySecret+DoNotLog/8f3a1c9e7b2d4f6a0c1e3b5d7f9a2c4e"
#: A well-formed callback token the endpoint never issued (its answer is refused as not found).
UNKNOWN_TOKEN = "Unknwn7Tkn"


def load_dag(dag_id: str) -> Any:
    """Parse the example file of ``dag_id`` now (so the environment of the moment applies)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def prepare(local_aws: Any, *, pool_slots: int = 8) -> dict[str, Any]:
    """Seed the demo resources, make steps fast, create the pool the examples use."""
    from airflow.models.pool import Pool

    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(STEP_SECONDS)
    seeded = local_aws.seed()
    Pool.create_or_update_pool(
        POOL, slots=pool_slots, description="SageMaker pipelines", include_deferred=True
    )
    return seeded


def last_seq(local_aws: Any) -> int:
    calls = local_aws.controls.calls()
    return int(calls[-1]["seq"]) if calls else 0


@contextlib.contextmanager
def harness_calls(local_aws: Any, own: list[tuple[int, int]]) -> Iterator[None]:
    """Calls made inside are the harness's own (set-up, what SageMaker does), not the provider's."""
    before = last_seq(local_aws)
    try:
        yield
    finally:
        own.append((before, last_seq(local_aws)))


@dataclass
class ExampleRuns:
    """What one session's run of the examples and failure paths left (module doc)."""

    runs: dict[str, Any] = field(default_factory=dict)  # dag_id -> DagRun
    failure_runs: dict[str, Any] = field(default_factory=dict)  # path -> DagRun
    executions: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # dag_id -> ...
    callback: dict[str, Any] = field(default_factory=dict)  # the callback_handler_dag's asset event path
    outcome: dict[str, Any] = field(default_factory=dict)  # on_pipeline_succeeded's asset event path
    calls: list[dict[str, Any]] = field(default_factory=list)  # the endpoint's call record, all of it
    own: list[tuple[int, int]] = field(default_factory=list)  # (after, up to] seq: the harness's calls
    failure_paths_end: int = 0  # the last seq of the failure paths (the token error paths come after)
    credentials: tuple[str | None, str | None] = (None, None)  # AwsBaseHook's for aws_default meanwhile
    logged: str = ""  # logging records, stdout / stderr, log files under AIRFLOW_HOME

    def provider_calls(self, until: int | None = None) -> list[dict[str, Any]]:
        """The recorded calls (up to seq ``until``) that are not the harness's own."""
        return [
            c
            for c in self.calls
            if (until is None or c["seq"] <= until) and not any(a < c["seq"] <= b for a, b in self.own)
        ]

    def answered_tokens(self) -> set[str]:
        """Every callback token an answer call carried."""
        return {
            str(c["args"]["CallbackToken"])
            for c in self.calls
            if c["action"] in ANSWER_ACTIONS and (c.get("args") or {}).get("CallbackToken")
        }


def _asset_triggered_run(dag: Any, asset: Any, payloads: list[Any]) -> tuple[str, int]:
    """What the triggerer and the scheduler do with a watcher's events: each payload registered on
    ``asset`` (as ``Trigger.submit_event`` does), then one asset-triggered run of ``dag`` consuming them.
    Returns the run's id and how many runs of ``dag`` the events had queued meanwhile."""
    from airflow.assets.manager import AssetManager
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.sdk import timezone
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    with create_session() as session:
        model = session.query(AssetModel).filter(AssetModel.name == asset.name).one()
        asset_events = [
            AssetManager.register_asset_change(
                asset=model, extra={"from_trigger": True, "payload": payload}, session=session
            )
            for payload in payloads
        ]
        queued = session.query(AssetDagRunQueue).filter_by(target_dag_id=dag.dag_id).count()
        scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        now = timezone.utcnow()
        run = scheduler_dag.create_dagrun(
            run_id=f"asset_triggered__{now.isoformat()}",
            logical_date=None,
            data_interval=None,
            run_after=now,
            run_type=DagRunType.ASSET_TRIGGERED,
            triggered_by=DagRunTriggeredByType.ASSET,
            state=DagRunState.QUEUED,
            session=session,
        )
        run.consumed_asset_events.extend(asset_events)
        return str(run.run_id), queued


def _callback_handler_run(local_aws: Any, dag: Any, found: ExampleRuns) -> Any:
    """The triggerer's path of the event-driven example: SageMaker (here boto3) starts
    ``scheduled-training``; its callback message fires the DAG's AssetWatcher trigger; the event is
    registered on the asset, the scheduler creates an asset-triggered run consuming it, which is driven
    by :mod:`.scheduler_loop` to the end."""
    from sagemaker_pipelines_provider.callbacks import lease
    from sagemaker_pipelines_provider.local.dag_runs import sync_dag
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackEventTrigger

    from tests.support import scheduler_loop
    from tests.support.waiting import wait_until

    sync_dag(dag)
    scheduler_loop.unpause(dag.dag_id)
    sm = local_aws.client("sagemaker")
    with harness_calls(local_aws, found.own):  # SageMaker's part, not the provider's
        arn = sm.start_pipeline_execution(
            PipelineName="scheduled-training",
            PipelineExecutionDisplayName="scheduled-training-event",
            ClientRequestToken="event-driven-test-token-0123456789abcdef",
        )["PipelineExecutionArn"]
    condition = dag.timetable.asset_condition
    asset = condition.objects[0] if hasattr(condition, "objects") else condition
    watcher_trigger = asset.watchers[0].trigger
    trigger = SageMakerCallbackEventTrigger(**{**watcher_trigger.serialize()[1], "wait_time_seconds": 1})

    async def first_event() -> Any:
        async for event in trigger.run():
            return event
        return None

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=30))
    run_id, queued = _asset_triggered_run(dag, asset, [event.payload])
    try:
        (final,) = scheduler_loop.run_dag_runs(dag, [run_id], timeout=90)
    finally:
        lease.release_all()
    with harness_calls(local_aws, found.own):
        described = wait_until(
            lambda: (
                (d := sm.describe_pipeline_execution(PipelineExecutionArn=arn))["PipelineExecutionStatus"]
                != "Executing"
                and d
            ),
            timeout=10,
            what=f"{arn} to end",
        )
    found.callback = {
        "arn": arn,
        "payload": event.payload,
        "queued": queued,
        "status": described["PipelineExecutionStatus"],
        "described": described,
    }
    return final


def _on_pipeline_succeeded_run(local_aws: Any, dag: Any, found: ExampleRuns) -> Any:
    """The triggerer's path of the pipeline-outcome example: a ``retraining`` execution started outside
    Airflow (here boto3) succeeds; the DAG's watcher trigger, running as a triggerer runs it, fires for it
    (and for any earlier retraining on the queue: whoever started it); each event is registered on the
    asset as ``Trigger.submit_event`` does, and the asset-triggered run consuming them is driven to the
    end by :mod:`.scheduler_loop`."""
    from sagemaker_pipelines_provider.local.dag_runs import sync_dag
    from sagemaker_pipelines_provider.triggers.events import PipelineStatusEventTrigger

    from tests.support import scheduler_loop
    from tests.support.waiting import wait_until

    sync_dag(dag)
    scheduler_loop.unpause(dag.dag_id)
    (asset,) = dag.timetable.asset_condition.objects
    trigger = PipelineStatusEventTrigger(**asset.watchers[0].trigger.serialize()[1])
    sm = local_aws.client("sagemaker")
    with harness_calls(local_aws, found.own):  # SageMaker's part, not the provider's
        arn = sm.start_pipeline_execution(PipelineName="retraining")["PipelineExecutionArn"]

    async def events_until_ours() -> list[Any]:
        fired = []
        async for event in trigger.run():
            fired.append(event)
            if event.payload["pipeline_execution_arn"] == arn:
                return fired
        return fired

    events = asyncio.run(asyncio.wait_for(events_until_ours(), timeout=60))
    run_id, _ = _asset_triggered_run(dag, asset, [e.payload for e in events])
    (final,) = scheduler_loop.run_dag_runs(dag, [run_id], timeout=90)
    with harness_calls(local_aws, found.own):
        steps = wait_until(
            lambda: sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"],
            what=f"the steps of {arn}",
        )
    found.outcome = {
        "arn": arn,
        "payloads": [e.payload for e in events],
        "registered": [
            s["Metadata"]["RegisterModel"]["Arn"] for s in steps if "RegisterModel" in s["Metadata"]
        ],
    }
    return final


def _fast_polls(dag: Any) -> Any:
    """The mirror example polls every 5 s; here every 0.2 s."""
    for task in dag.tasks:
        for name in ("poke_interval", "poll_interval"):
            if hasattr(task, name):
                setattr(task, name, 0.2)
    return dag


def run_example_dags(local_aws: Any, dag_runner: Any, found: ExampleRuns) -> None:
    """Seed the local endpoint and run every example DAG once, green; record the runs and, after each,
    the executions of every demo pipeline."""
    with harness_calls(local_aws, found.own):
        prepare(local_aws)
    for dag_id in EXAMPLE_DAGS:
        dag = load_dag(dag_id)
        if dag_id == "callback_handler_dag":
            run = _callback_handler_run(local_aws, dag, found)
        elif dag_id == "on_pipeline_succeeded":
            run = _on_pipeline_succeeded_run(local_aws, dag, found)
        elif dag_id == "historical_retraining":
            run = dag_runner.run_dag(dag, logical_date=HISTORICAL_DATE)
        elif dag_id == "retraining_chain":
            run = dag_runner.run_dag(dag, logical_date=CHAIN_DATE)
        elif dag_id == "mirror_pipeline":
            run = dag_runner.run_dag(_fast_polls(dag))
        else:
            run = dag_runner.run_dag(dag, logical_date=None)
        found.runs[dag_id] = run
        with harness_calls(local_aws, found.own):
            found.executions[dag_id] = {p: executions(local_aws, p) for p in DEMO_PIPELINES}


def _pipeline_operator(**kwargs: Any) -> Any:
    from tests.support.pipelines import operator

    return operator(**kwargs)


def _failure_dag(name: str) -> Any:
    from airflow.sdk import DAG

    from tests.support.endpoint import START_DATE, unique

    return DAG(unique(name), schedule=None, start_date=START_DATE, catchup=False)


def run_failure_paths(local_aws: Any, dag_runner: Any, own: list[tuple[int, int]]) -> dict[str, Any]:
    """Drive the provider's stop, retry and failure-answer paths; returns the runs by path. Each path's
    outcome is asserted from the run's task states only (the call record is the caller's)."""
    from airflow.sdk import task
    from sagemaker_pipelines_provider.callbacks import lease
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    from tests.support.callbacks import FAST_SENSOR, VISIBILITY, callback_pipeline, create_queue
    from tests.support.pipelines import create_pipeline

    runs: dict[str, Any] = {}
    local_aws.controls.set_time_scale(1.0)

    # A failed execution, resumed by the task's retry: RetryPipelineExecution.
    local_aws.controls.set_default_step_duration(STEP_SECONDS)
    with harness_calls(local_aws, own):
        pipeline = create_pipeline(local_aws)
    local_aws.controls.set_step_behaviour(pipeline, "Train", fail="injected", fail_attempts=1)
    with _failure_dag("iam-retry") as d:
        _pipeline_operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
        )
    runs["retry"] = dag_runner.run_dag(d)
    assert dag_runner.task_states(runs["retry"]) == {"run": "success"}

    # A callback handler whose work fails: SendPipelineExecutionStepFailure.
    @task
    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("the model is broken")

    with harness_calls(local_aws, own):
        queue = create_queue(local_aws)
        pipeline = callback_pipeline(local_aws, queue)
    try:
        with _failure_dag("iam-answer-failure") as d:
            start = _pipeline_operator(task_id="start", pipeline_name=pipeline, wait_for_completion=False)
            handler = callback_handler(
                "validate",
                queue,
                pipeline_execution_arn="{{ ti.xcom_pull(task_ids='start', key='pipeline_execution_arn') }}",
                work=validate,
                visibility_timeout=VISIBILITY,
                sensor_kwargs={**FAST_SENSOR, "deferrable": True},
            )
            start >> handler
        runs["answer_failure"] = dag_runner.run_dag(d)
    finally:
        lease.release_all()
    states = dag_runner.task_states(runs["answer_failure"])
    assert states["validate.validate"] == "failed", states
    assert states["validate.answer_failure"] == "failed", states  # it answered, then failed the run

    # A pipeline task killed by its execution_timeout while the execution runs: StopPipelineExecution.
    local_aws.controls.set_default_step_duration(KILLED_STEP_SECONDS)
    try:
        with harness_calls(local_aws, own):
            pipeline = create_pipeline(local_aws)
        with _failure_dag("iam-stop") as d:
            _pipeline_operator(
                pipeline_name=pipeline, parameters={"RunDate": "x"}, execution_timeout=dt.timedelta(seconds=3)
            )
        runs["stop"] = dag_runner.run_dag(d)
    finally:
        local_aws.controls.set_default_step_duration(STEP_SECONDS)
    assert dag_runner.task_states(runs["stop"]) == {"run": "failed"}
    return runs


def run_token_error_paths(local_aws: Any, dag_runner: Any) -> Any:
    """Answer an already answered token (refused by SageMaker, the task succeeds) and an unknown one (the
    task fails): the two paths on which SageMaker's error message, which quotes the token, is handled."""
    from sagemaker_pipelines_provider.operators.callback import (
        SageMakerCallbackFailureOperator,
        SageMakerCallbackSuccessOperator,
    )

    from tests.support.callbacks import answer_calls, dag

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


@contextlib.contextmanager
def everything_logged() -> Iterator[list[str]]:
    """Collect what is logged inside: the logging records (INFO and above, the task log level) and what is
    written to stdout / stderr (Python's and file descriptors 1 and 2: ``dag.test()`` prints task logs
    there). The list yielded holds one text once the block ends."""
    collected: list[str] = []
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    with tempfile.TemporaryFile("w+b") as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fds = (os.dup(1), os.dup(2))
        saved_streams = (sys.stdout, sys.stderr)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        stream = open(os.dup(sink.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        sys.stdout = sys.stderr = stream
        try:
            yield collected
        finally:
            stream.flush()
            sys.stdout, sys.stderr = saved_streams
            stream.close()
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            root.removeHandler(handler)
            root.setLevel(level)
            sink.seek(0)
            collected.append(records.getvalue() + "\n" + sink.read().decode("utf-8", errors="replace"))


def run_examples(local_aws: Any, dag_runner: Any) -> ExampleRuns:
    """Run the examples, the failure paths and the token error paths once (module doc)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from sagemaker_pipelines_provider.callbacks import lease

    found = ExampleRuns()
    cursor = last_seq(local_aws)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in FAST_ENV.items():
            monkeypatch.setenv(name, value)
        use_canary_credentials(monkeypatch, local_aws.url)
        credentials = AwsBaseHook(aws_conn_id="aws_default").get_credentials()
        found.credentials = (credentials.access_key, credentials.secret_key)
        try:
            with everything_logged() as logged:
                run_example_dags(local_aws, dag_runner, found)
                found.failure_runs = run_failure_paths(local_aws, dag_runner, found.own)
                found.failure_paths_end = last_seq(local_aws)
                found.failure_runs["token_errors"] = run_token_error_paths(local_aws, dag_runner)
        finally:
            lease.release_all()
    found.calls = local_aws.controls.calls(since=cursor)
    found.logged = "\n".join([*logged, log_files()])
    return found
