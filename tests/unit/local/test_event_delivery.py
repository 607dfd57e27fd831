"""The local endpoint's event faults (drop, duplicate, reorder draws) and its queue-policy check."""

from __future__ import annotations

from typing import Any

import pytest
from sagemaker_pipelines_provider.local.seed import events_queue_policy
from sagemaker_pipelines_provider.local.server.event_delivery import policy_allows
from sagemaker_pipelines_provider.local.server.event_faults import EventFaults

QUEUE = "arn:aws:sqs:us-east-1:123456789012:sagemaker-pipeline-events"
RULE = "arn:aws:events:us-east-1:123456789012:rule/sagemaker-pipeline-status-changes"


def draws(faults: EventFaults, n: int = 200) -> list[tuple[int, bool]]:
    return [faults.decide() for _ in range(n)]


def test_default_delivers_every_event_once_in_order() -> None:
    faults = EventFaults()
    assert set(draws(faults)) == {(1, False)}
    assert faults.settings()["counts"] == {"delivered": 200}


def test_rates_of_one_and_the_same_seed() -> None:
    faults = EventFaults()
    faults.set(drop_rate=1.0)
    assert set(draws(faults)) == {(0, False)}
    faults.set(duplicate_rate=1.0)
    assert set(draws(faults)) == {(2, False)}
    faults.set(drop_rate=0.3, duplicate_rate=0.3, reorder_rate=0.5, seed=5)
    first = draws(faults)
    assert {copies for copies, _ in first} == {0, 1, 2} and {hold for _, hold in first} == {False, True}
    assert not any(hold for copies, hold in first if copies == 0)  # a dropped event is not held
    faults.set(drop_rate=0.3, duplicate_rate=0.3, reorder_rate=0.5, seed=5)
    assert draws(faults) == first
    faults.set(drop_rate=0.3, duplicate_rate=0.3, reorder_rate=0.5, seed=6)
    assert draws(faults) != first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_rate": -0.1}, "drop_rate must be between 0 and 1"),
        ({"reorder_rate": 2.0}, "reorder_rate must be between 0 and 1"),
        ({"drop_rate": 0.7, "duplicate_rate": 0.4}, "must not exceed 1"),
    ],
)
def test_bad_rates_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventFaults().set(**kwargs)


def test_the_seeded_policy_allows_its_rule_only() -> None:
    policy = events_queue_policy(QUEUE, RULE)
    assert policy_allows(policy, QUEUE, RULE)
    assert not policy_allows(policy, QUEUE, RULE + "-other")
    assert not policy_allows(policy, QUEUE.replace("events", "other"), RULE)
    assert not policy_allows(None, QUEUE, RULE)


def test_policy_variants() -> None:
    statement = {"Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com"]}, "Action": ["sqs:*"]}
    assert policy_allows({"Statement": [{**statement, "Resource": "*"}]}, QUEUE, RULE)  # no condition
    like = {"ArnLike": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/*"}}
    assert policy_allows({"Statement": {**statement, "Resource": QUEUE, "Condition": like}}, QUEUE, RULE)
    other_principal = {**statement, "Principal": {"Service": "sns.amazonaws.com"}, "Resource": "*"}
    assert not policy_allows({"Statement": [other_principal]}, QUEUE, RULE)
    receive_only = {**statement, "Action": "sqs:ReceiveMessage", "Resource": "*"}
    assert not policy_allows({"Statement": [receive_only]}, QUEUE, RULE)
    assert not policy_allows({"Statement": [{**statement, "Effect": "Deny", "Resource": "*"}]}, QUEUE, RULE)
