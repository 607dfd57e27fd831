"""``docs/iam-policy.json`` grants what the provider calls, and no SageMaker or SQS action it never calls.

Every example DAG of ``dags/`` runs in-process against the local endpoint (:func:`run_example_dags`,
also used by ``test_no_secret_in_logs.py``); the endpoint's call record gives the (service, action) of
every AWS call, mapped to IAM actions (:func:`iam_action`). The test fails when

- an action called is not allowed by the policy (for every service: SageMaker, SQS, Glue, ECS, ...);
- the policy grants a SageMaker or SQS action that is never called.

The green example runs never stop, retry or fail an execution, so the same test also drives the
provider's failure paths through its public operators and task groups (:func:`run_failure_paths`): a
pipeline task killed by its ``execution_timeout`` (StopPipelineExecution), a failed execution resumed by
the task's retry (RetryPipelineExecution) and a ``callback_handler`` whose work raises
(SendPipelineExecutionStepFailure). "Called" is the union of the call records of all those runs; no
statement is exempt. The harness's own calls (creating pipelines and queues, starting the execution
SageMaker would start on a schedule) are cut out of the record by seq range.

One statement is exempt from "never called", for as long as the feature it serves does not exist:
``EventWaits`` (the events queue, read only by waits given an ``event_queue_url``; see docs/events.md).
:func:`test_exempt_statements_serve_features_not_built_yet` fails once that feature exists, so that the
example DAGs then exercise it and the exemption goes.

``iam:PassRole`` is checked by the policy's own condition (``iam:PassedToService``), not from the call
record: it is authorised on the calls that pass a role (ECS RunTask with a task role, Glue StartJobRun
uses the job's role server-side and needs none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
POLICY = REPO / "docs" / "iam-policy.json"
EXAMPLE_DAGS = (
    "retraining_chain",
    "retraining_consumer",
    "historical_retraining",
    "mirror_pipeline",
    "callback_handler_dag",
)
FAST_ENV = {"AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL": "0.2", "SMP_CAPACITY_BACKOFF": "0.1"}
# Sid -> the operator argument whose feature needs it; exempt from "never called" while no operator has it.
NOT_YET_BUILT = {"EventWaits": "event_queue_url"}
POOL = "sagemaker_pipelines"
STEP_SECONDS = 0.05
KILLED_STEP_SECONDS = 60.0  # the killed task's execution must still be running when it is killed
# The IAM service prefix of each SigV4 signing name the call record holds.
IAM_PREFIX = {"sagemaker": "sagemaker", "sqs": "sqs", "glue": "glue", "ecs": "ecs", "events": "events"}


# ------------------------------------------------------------------------------------------------------
# running every example DAG


def load_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def last_seq(local_aws: Any) -> int:
    calls = local_aws.controls.calls()
    return int(calls[-1]["seq"]) if calls else 0


def _callback_handler_run(
    local_aws: Any, dag_runner: Any, monkeypatch: Any, dag: Any, own: list[tuple[int, int]]
) -> Any:
    """What the triggerer and scheduler do for the event-driven example: SageMaker (here: boto3) starts
    ``scheduled-training``; its callback message fires the DAG's AssetWatcher trigger; the asset event is
    recorded and a run consuming it is tested."""
    from test_callback_event_driven import record_asset_event, run_consuming
    from test_callback_helpers import waiting_token

    before = last_seq(local_aws)
    sm = local_aws.client("sagemaker")
    arn = sm.start_pipeline_execution(PipelineName="scheduled-training")["PipelineExecutionArn"]
    waiting_token(local_aws, arn)
    own.append((before, last_seq(local_aws)))  # SageMaker's part, not the provider's
    (asset,) = dag.timetable.asset_condition.objects
    trigger = asset.watchers[0].trigger
    trigger.wait_time_seconds = 1

    async def first() -> Any:
        return await anext(trigger.run())

    event = asyncio.run(asyncio.wait_for(first(), timeout=30))
    dag_runner.sync_dag(dag)
    event_id = record_asset_event(asset, event.payload)
    return run_consuming(dag_runner, dag, [event_id], monkeypatch)


def run_example_dags(
    local_aws: Any, dag_runner: Any, monkeypatch: Any
) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """Seed the local endpoint and run every example DAG once, green. Returns the runs by dag_id and the
    ``(after, up to)`` seq ranges of the call record that are the harness's own calls (seeding, and
    starting the execution SageMaker would start on a schedule), not the provider's."""
    from airflow.models.pool import Pool

    own: list[tuple[int, int]] = []
    before = last_seq(local_aws)

    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(STEP_SECONDS)
    local_aws.seed()
    Pool.create_or_update_pool(POOL, slots=8, description="SageMaker pipelines", include_deferred=True)
    own.append((before, last_seq(local_aws)))
    runs: dict[str, Any] = {}
    date = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    for dag_id in EXAMPLE_DAGS:
        dag = load_dag(dag_id)
        if dag_id == "callback_handler_dag":
            run = _callback_handler_run(local_aws, dag_runner, monkeypatch, dag, own)
        elif dag_id == "historical_retraining":
            run = dag_runner.run_dag(dag, logical_date=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
        elif dag_id == "retraining_chain":
            run = dag_runner.run_dag(dag, logical_date=date)
        else:
            run = dag_runner.run_dag(dag)
        states = dag_runner.task_states(run)
        assert run.state == "success", (dag_id, states)
        runs[dag_id] = run
    return runs, own


# ------------------------------------------------------------------------------------------------------
# the provider's failure paths


@contextmanager
def harness_calls(local_aws: Any, own: list[tuple[int, int]]) -> Iterator[None]:
    """Calls made inside are the test's own (set-up), not the provider's: cut out of the record."""
    before = last_seq(local_aws)
    try:
        yield
    finally:
        own.append((before, last_seq(local_aws)))


def _pipeline_operator(**kwargs: Any) -> Any:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
    from test_pipeline_operator_helpers import FAST_BACKOFF, POLL

    kwargs.setdefault("task_id", "run")
    kwargs.setdefault("poll_interval", POLL)
    kwargs.setdefault("backoff_policy", FAST_BACKOFF)
    return SageMakerPipelineOperator(**kwargs)


def _failure_dag(name: str) -> Any:
    from airflow.sdk import DAG
    from test_pipeline_operator_helpers import START_DATE, unique

    return DAG(unique(name), schedule=None, start_date=START_DATE, catchup=False)


def run_failure_paths(local_aws: Any, dag_runner: Any, own: list[tuple[int, int]]) -> dict[str, Any]:
    """Drive the provider's stop, retry and failure-answer paths; returns the runs by path. Each path's
    outcome is asserted from the run's task states only (the call record is the caller's)."""
    from airflow.sdk import task
    from sagemaker_pipelines_provider.callbacks import lease
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler
    from test_callback_helpers import FAST_SENSOR, VISIBILITY, callback_pipeline, create_queue
    from test_pipeline_operator_helpers import create_pipeline

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


# ------------------------------------------------------------------------------------------------------
# the policy


def iam_action(call: dict[str, Any]) -> str | None:
    """``service:Action`` for a recorded call; None for S3/REST calls and services the provider does not
    call (IAM, STS: only the test's own seeding)."""
    prefix = IAM_PREFIX.get(call["service"])
    if prefix is None or call["protocol"] == "rest" or " " in call["action"]:
        return None
    return f"{prefix}:{call['action']}"


def load_policy() -> dict[str, Any]:
    return json.loads(POLICY.read_text())  # type: ignore[no-any-return]


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allowed_patterns(policy: dict[str, Any]) -> dict[str, list[str]]:
    """Sid -> the action patterns its Allow statement grants."""
    return {
        s.get("Sid", str(i)): _as_list(s["Action"])
        for i, s in enumerate(policy["Statement"])
        if s["Effect"] == "Allow"
    }


def test_exempt_statements_serve_features_not_built_yet() -> None:
    import inspect

    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    sids = set(allowed_patterns(load_policy()))
    for sid, argument in NOT_YET_BUILT.items():
        assert sid in sids, f"{sid} is no longer in the policy: drop it from NOT_YET_BUILT"
        assert argument not in inspect.signature(SageMakerPipelineOperator).parameters, (
            f"{argument} exists now: exercise it in run_example_dags and drop {sid} from NOT_YET_BUILT"
        )


def is_allowed(action: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def test_policy_document_is_well_formed() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert statement.get("Sid"), statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action!r} is not least privilege"
        assert statement.get("Resource"), statement


def test_policy_matches_the_calls_of_the_example_dags_and_failure_paths(
    local_aws: Any, dag_runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = last_seq(local_aws)
    _, own = run_example_dags(local_aws, dag_runner, monkeypatch)
    run_failure_paths(local_aws, dag_runner, own)
    calls = [c for c in local_aws.controls.calls(since=cursor) if not any(a < c["seq"] <= b for a, b in own)]
    called = {a for c in calls if (a := iam_action(c))}
    print("IAM actions the provider called:", sorted(called))
    # Each failure path really took its AWS call (not just failed some other way).
    for action in (
        "sagemaker:RetryPipelineExecution",
        "sagemaker:SendPipelineExecutionStepFailure",
        "sagemaker:StopPipelineExecution",
    ):
        assert action in called, f"the failure paths never called {action}"
    everything = [p for ps in allowed_patterns(load_policy()).values() for p in ps]

    missing = sorted(a for a in called if not is_allowed(a, everything))
    assert not missing, f"the policy lacks actions the provider calls: {missing}"

    exercised = [
        p for sid, ps in allowed_patterns(load_policy()).items() if sid not in NOT_YET_BUILT for p in ps
    ]
    granted = {p for p in exercised if p.split(":")[0] in ("sagemaker", "sqs")}
    unused = sorted(p for p in granted if not any(is_allowed(a, [p]) for a in called))
    assert not unused, f"the policy grants SageMaker/SQS actions the provider never called: {unused}"
