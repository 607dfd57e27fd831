"""``docs/iam-policy.json`` grants what the provider calls, and no SageMaker or SQS action it never calls.

Every example DAG of ``dags/`` runs in-process against the local endpoint, once per session (the
``example_runs`` fixture, :mod:`tests.support.example_dags`, shared with ``test_no_secret_in_logs.py`` and
``tests/dags/test_example_dags.py``); the endpoint's call record gives the (service, action) of every AWS
call, mapped to IAM actions (:func:`iam_action`). The test fails when

- an action called is not allowed by the policy (for every service: SageMaker, SQS, Glue, ECS, ...);
- the policy grants a SageMaker or SQS action that is never called.

The green example runs never stop, retry or fail an execution, so the same test also drives the
provider's failure paths through its public operators and task groups (``run_failure_paths``): a
pipeline task killed by its ``execution_timeout`` (StopPipelineExecution), a failed execution resumed by
the task's retry (RetryPipelineExecution) and a ``callback_handler`` whose work raises
(SendPipelineExecutionStepFailure). "Called" is the union of the call records of all those runs; no
statement is exempt. The harness's own calls (creating pipelines and queues, starting the execution
SageMaker would start on a schedule) are cut out of the record by seq range; so are the calls of the
token error paths that run after the failure paths (``test_no_secret_in_logs.py``'s).

The ``EventWaits`` statement (the events queue, see docs/events.md) is exercised by ``retraining_chain``,
whose pipeline waits are given the seeded queue as ``event_queue_url``: the queue check and the triggers'
receiver call its actions.

``iam:PassRole`` is checked by the policy's own condition (``iam:PassedToService``), not from the call
record: it is authorised on the calls that pass a role (ECS RunTask with a task role, Glue StartJobRun
uses the job's role server-side and needs none).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.seed import EVENTS_QUEUE

from tests.support.example_dags import EXAMPLE_DAGS, ExampleRuns

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "docs" / "iam-policy.json"
# The IAM service prefix of each SigV4 signing name the call record holds.
IAM_PREFIX = {"sagemaker": "sagemaker", "sqs": "sqs", "glue": "glue", "ecs": "ecs", "events": "events"}
# SQS batch calls have no IAM action of their own: each is authorised by its single-message action.
SQS_BATCH_ACTIONS = {
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "DeleteMessageBatch": "DeleteMessage",
    "SendMessageBatch": "SendMessage",
}


# ------------------------------------------------------------------------------------------------------
# the policy


def iam_action(call: dict[str, Any]) -> str | None:
    """``service:Action`` for a recorded call; None for S3/REST calls and services the provider does not
    call (IAM, STS: only the test's own seeding)."""
    prefix = IAM_PREFIX.get(call["service"])
    if prefix is None or call["protocol"] == "rest" or " " in call["action"]:
        return None
    action = SQS_BATCH_ACTIONS.get(call["action"], call["action"]) if prefix == "sqs" else call["action"]
    return f"{prefix}:{action}"


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


def test_policy_document_is_well_formed() -> None:
    policy = load_policy()
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert statement.get("Sid"), statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action!r} is not least privilege"
        assert statement.get("Resource"), statement


def test_policy_matches_the_calls_of_the_example_dags_and_failure_paths(example_runs: ExampleRuns) -> None:
    for dag_id in EXAMPLE_DAGS:  # every example ran green
        assert str(example_runs.runs[dag_id].state) == "success", dag_id
    calls = example_runs.provider_calls(until=example_runs.failure_paths_end)
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

    # EventWaits is exercised on its own queue (the unused check below sees actions, not resources).
    on_events_queue = {
        a
        for c in calls
        if (a := iam_action(c))
        and str((c.get("args") or {}).get("QueueUrl", "")).endswith(f"/{EVENTS_QUEUE}")
    }
    for action in ("sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage"):
        assert action in on_events_queue, f"no example called {action} on the events queue"

    granted = {p for p in everything if p.split(":")[0] in ("sagemaker", "sqs")}
    unused = sorted(p for p in granted if not any(is_allowed(a, [p]) for a in called))
    assert not unused, f"the policy grants SageMaker/SQS actions the provider never called: {unused}"
