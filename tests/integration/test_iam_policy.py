"""``docs/iam-policy.json`` grants what the provider calls, and no SageMaker or SQS action it never calls.

Every example DAG of ``dags/`` runs in-process against the local endpoint (:func:`run_example_dags`,
also used by ``test_no_secret_in_logs.py``); the endpoint's call record gives the (service, action) of
every AWS call, mapped to IAM actions (:func:`iam_action`). The test fails when

- an action called is not allowed by the policy (for every service: SageMaker, SQS, Glue, ECS, ...);
- the policy grants a SageMaker or SQS action that is never called — except the statement
  ``ProviderFailurePaths``: stop, retry and failure answers, which the provider's hook sends only when a
  task is killed, retried or its callback work fails (paths the green example runs do not take); each of
  those must still be a call the provider's hook makes (checked in its source), so nothing is granted
  that nothing calls.

``iam:PassRole`` is checked by the policy's own condition (``iam:PassedToService``), not from the call
record: it is authorised on the calls that pass a role (ECS RunTask with a task role, Glue StartJobRun
uses the job's role server-side and needs none).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
POLICY = REPO / "docs" / "iam-policy.json"
HOOKS = REPO / "provider" / "sagemaker_pipelines_provider" / "hooks"
EXAMPLE_DAGS = (
    "retraining_chain",
    "retraining_consumer",
    "historical_retraining",
    "mirror_pipeline",
    "callback_handler_dag",
)
FAST_ENV = {"SMP_POLL_INTERVAL": "0.2", "SMP_CAPACITY_BACKOFF": "0.1"}
POOL = "sagemaker_pipelines"
STEP_SECONDS = 0.05
FAILURE_PATHS_SID = "ProviderFailurePaths"
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


def is_allowed(action: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def hook_actions() -> set[str]:
    """SageMaker actions the provider's hooks name: every quoted SageMaker operation name in their
    source (``_call("StopPipelineExecution", ...)``, ``_answer_callback("SendPipelineExecutionStep...``)."""
    import botocore.session

    operations = set(botocore.session.get_session().get_service_model("sagemaker").operation_names)
    source = "\n".join(p.read_text() for p in HOOKS.glob("*.py"))
    return {f"sagemaker:{name}" for name in re.findall(r"\"([A-Z][A-Za-z]+)\"", source) if name in operations}


def test_policy_document_is_well_formed() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert statement.get("Sid"), statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action!r} is not least privilege"
        assert statement.get("Resource"), statement


def test_policy_matches_the_calls_of_the_example_dags(
    local_aws: Any, dag_runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = last_seq(local_aws)
    _, own = run_example_dags(local_aws, dag_runner, monkeypatch)
    calls = [c for c in local_aws.controls.calls(since=cursor) if not any(a < c["seq"] <= b for a, b in own)]
    called = {a for c in calls if (a := iam_action(c))}
    print("IAM actions called by the example DAGs:", sorted(called))
    patterns = allowed_patterns(load_policy())
    everything = [p for ps in patterns.values() for p in ps]

    missing = sorted(a for a in called if not is_allowed(a, everything))
    assert not missing, f"the policy lacks actions the example DAGs call: {missing}"

    failure_paths = set(patterns.get(FAILURE_PATHS_SID, []))
    granted = {p for p in everything if p.split(":")[0] in ("sagemaker", "sqs")}
    unused = sorted(p for p in granted - failure_paths if not any(is_allowed(a, [p]) for a in called))
    assert not unused, f"the policy grants SageMaker/SQS actions no example DAG calls: {unused}"
    uncalled_failure_paths = sorted(failure_paths - hook_actions())
    assert not uncalled_failure_paths, (
        f"{FAILURE_PATHS_SID} grants actions the provider's hooks never call: {uncalled_failure_paths}"
    )
