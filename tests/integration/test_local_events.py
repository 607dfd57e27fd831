"""The seeded events queue: SageMaker's status-change events reach ``sagemaker-pipeline-events`` through
the EventBridge rule, in AWS's envelope; the event-fault control drops and duplicates them, seeded.

Over real HTTP against the ``local_aws`` endpoint, with steps back to back (time scale 0). Waits are
bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.seed import EVENTS_QUEUE

from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

EXECUTION_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
STEP_EVENT = "SageMaker Model Building Pipeline Execution Step Status Change"
ENVELOPE_KEYS = {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}


@pytest.fixture
def seeded(local_aws: Any) -> dict[str, Any]:
    result = local_aws.seed()
    local_aws.controls.set_time_scale(0)
    return result


def run_features(local_aws: Any) -> tuple[str, int]:
    """Run the one-step ``features`` pipeline to its end; (execution ARN, events it emitted: the
    execution's Executing and Succeeded plus each step's Starting, Executing and Succeeded)."""
    sm = local_aws.client("sagemaker")
    arn = sm.start_pipeline_execution(PipelineName="features")["PipelineExecutionArn"]
    wait_until(
        lambda: (
            sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == "Succeeded"
        ),
        what=f"{arn} to succeed",
    )
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    return arn, 2 + 3 * len(steps)


def drain(local_aws: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now on the queue (received and deleted), oldest first."""
    sqs = local_aws.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def receive(local_aws: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` messages, then return them and whatever else is on the queue."""
    received: list[dict[str, Any]] = []

    def probe() -> bool:
        received.extend(drain(local_aws, queue_url))
        return len(received) >= count

    wait_until(probe, what=f"{count} messages on {queue_url}")
    return received + drain(local_aws, queue_url)


def decided(local_aws: Any, count: int) -> dict[str, int]:
    """Wait until the event faults decided ``count`` events (dropped or delivered); their counts."""

    def probe() -> dict[str, int] | None:
        counts: dict[str, int] = local_aws.controls.event_faults()["counts"]
        return counts if counts.get("dropped", 0) + counts.get("delivered", 0) >= count else None

    return wait_until(probe, what=f"{count} events decided")


def status(event: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    detail = event["detail"]
    if event["detail-type"] == EXECUTION_EVENT:
        return None, detail.get("previousPipelineExecutionStatus"), detail["currentPipelineExecutionStatus"]
    return detail["stepName"], detail.get("previousStepStatus"), detail["currentStepStatus"]


def test_status_changes_arrive_as_eventbridge_envelopes(local_aws: Any, seeded: dict[str, Any]) -> None:
    assert seeded["events_queue_url"].endswith(f"/{EVENTS_QUEUE}")
    arn, emitted = run_features(local_aws)
    events = receive(local_aws, seeded["events_queue_url"], emitted)

    assert len(events) == emitted == 5
    assert len({e["id"] for e in events}) == emitted
    for event in events:
        assert set(event) == ENVELOPE_KEYS
        assert event["version"] == "0" and event["source"] == "aws.sagemaker"
        assert event["account"] == "123456789012" and event["region"] == local_aws.region
        assert event["detail-type"] in (EXECUTION_EVENT, STEP_EVENT)
        assert event["detail"]["pipelineExecutionArn"] == arn
        assert event["resources"] == [event["detail"]["pipelineArn"], arn]
        time.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    assert [status(e) for e in events] == [
        (None, None, "Executing"),
        ("PrepareFeatures", None, "Starting"),
        ("PrepareFeatures", "Starting", "Executing"),
        ("PrepareFeatures", "Executing", "Succeeded"),
        (None, "Executing", "Succeeded"),
    ]
    last = events[-1]["detail"]
    assert last["pipelineArn"].endswith(":pipeline/features") and "executionEndTime" in last
    assert events[1]["detail"]["stepType"] == "Processing"


def test_drop_fraction_one_delivers_nothing(local_aws: Any, seeded: dict[str, Any]) -> None:
    local_aws.controls.set_event_faults(drop_rate=1.0)
    _, emitted = run_features(local_aws)
    assert decided(local_aws, emitted) == {"dropped": emitted}
    assert drain(local_aws, seeded["events_queue_url"]) == []


def test_duplicate_fraction_one_delivers_each_event_twice(local_aws: Any, seeded: dict[str, Any]) -> None:
    local_aws.controls.set_event_faults(duplicate_rate=1.0)
    _, emitted = run_features(local_aws)
    events = receive(local_aws, seeded["events_queue_url"], 2 * emitted)
    assert len(events) == 2 * emitted
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_id.setdefault(event["id"], []).append(event)
    assert len(by_id) == emitted
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in by_id.values())


def test_reorder_fraction_one_swaps_each_pair(local_aws: Any, seeded: dict[str, Any]) -> None:
    """Each event is held back behind the next one; the last, with nothing after it, comes on its own."""
    local_aws.controls.set_event_faults(reorder_rate=1.0)
    _, emitted = run_features(local_aws)
    events = receive(local_aws, seeded["events_queue_url"], emitted)
    assert [status(e) for e in events] == [
        ("PrepareFeatures", None, "Starting"),
        (None, None, "Executing"),
        ("PrepareFeatures", "Executing", "Succeeded"),
        ("PrepareFeatures", "Starting", "Executing"),
        (None, "Executing", "Succeeded"),
    ]
    assert local_aws.controls.event_faults()["counts"] == {"delivered": 5, "reordered": 5}


def test_the_same_seed_makes_the_same_choice(local_aws: Any, seeded: dict[str, Any]) -> None:
    def delivered_with_seed(seed: int) -> list[tuple[str | None, str | None, str | None]]:
        local_aws.controls.reset()
        queue_url = local_aws.seed()["events_queue_url"]
        local_aws.controls.set_time_scale(0)
        local_aws.controls.set_event_faults(drop_rate=0.5, seed=seed)
        _, emitted = run_features(local_aws)
        counts = decided(local_aws, emitted)
        events = receive(local_aws, queue_url, counts.get("delivered", 0))
        assert len(events) == counts.get("delivered", 0)
        return [status(e) for e in events]

    first = delivered_with_seed(20)
    assert 0 < len(first) < 5  # this seed drops some events and keeps others
    assert delivered_with_seed(20) == first


def test_a_queue_policy_without_the_rule_receives_nothing(local_aws: Any, seeded: dict[str, Any]) -> None:
    """As on AWS: EventBridge delivers only where the queue policy allows the rule (aws:SourceArn)."""
    sqs = local_aws.client("sqs")
    queue_url = seeded["events_queue_url"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] += "-other"
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    _, emitted = run_features(local_aws)
    assert decided(local_aws, emitted) == {"delivered": emitted}
    assert drain(local_aws, queue_url) == []


def test_event_fault_control_rejects_bad_input(local_aws: Any) -> None:
    from sagemaker_pipelines_provider.local.controls import LocalControlError

    with pytest.raises(LocalControlError, match="drop_rate must be between 0 and 1"):
        local_aws.controls.set_event_faults(drop_rate=1.5)
    with pytest.raises(LocalControlError, match="must not exceed 1"):
        local_aws.controls.set_event_faults(drop_rate=0.6, duplicate_rate=0.6)
    settings = local_aws.controls.set_event_faults(duplicate_rate=0.25, seed=3)
    assert settings == {
        "drop_rate": 0.0,
        "duplicate_rate": 0.25,
        "reorder_rate": 0.0,
        "seed": 3,
        "counts": {},
    }
    local_aws.controls.clear_event_faults()
    assert local_aws.controls.event_faults()["duplicate_rate"] == 0.0
