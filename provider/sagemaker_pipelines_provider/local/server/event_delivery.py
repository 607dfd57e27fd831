"""EventBridge delivery of the engine's events to the rules and targets of moto's default bus, in AWS's
envelope. moto 5.2.5's own put_events delivers to SQS targets without the envelope's ``account`` field
and ignores rule state and queue policies, so plain (non-FIFO, untransformed) SQS targets are delivered
here; every other target goes through moto's own rule delivery. See docs/local-endpoint.md.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from .wire import json_default

__all__ = ["deliver", "envelope", "policy_allows"]

log = logging.getLogger(__name__)

_TRANSFORMING_KEYS = ("Input", "InputPath", "InputTransformer")


def envelope(
    account: str, region: str, source: str, detail_type: str, detail: dict[str, Any], resources: list[str]
) -> dict[str, Any]:
    """One event as EventBridge delivers it to a target (a new ``id``; ``time`` now, to the second)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": list(resources),
        "detail": json.loads(json.dumps(detail, default=json_default)),
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str) -> bool:
    return any(isinstance(p, str) and fnmatch.fnmatchcase(value, p) for p in _as_list(patterns))


def policy_allows(policy: str | dict[str, Any] | None, queue_arn: str, rule_arn: str) -> bool:
    """Whether a queue policy lets EventBridge (``events.amazonaws.com``) send this rule's events: an Allow
    statement for that principal (or ``*``), ``sqs:SendMessage`` (or a wildcard), the queue's ARN (or a
    matching wildcard) and, when present, an ``aws:SourceArn`` condition (ArnEquals/ArnLike/StringEquals/
    StringLike) matching the rule's ARN. Deny statements and other conditions are not evaluated."""
    if not policy:
        return False
    document = json.loads(policy) if isinstance(policy, str) else policy
    for statement in _as_list(document.get("Statement", [])):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        services = _as_list(principal.get("Service", [])) if isinstance(principal, dict) else [principal]
        if not ({"events.amazonaws.com", "*"} & {p for p in services if isinstance(p, str)}):
            continue
        if not _matches(statement.get("Action", []), "sqs:SendMessage"):
            continue
        if not _matches(statement.get("Resource", "*"), queue_arn):
            continue
        condition = statement.get("Condition", {})
        source_arns = [
            v
            for op, keys in condition.items()
            if op in ("ArnEquals", "ArnLike", "StringEquals", "StringLike") and isinstance(keys, dict)
            for k, v in keys.items()
            if k.lower() == "aws:sourcearn"
        ]
        if all(_matches(v, rule_arn) for v in source_arns):
            return True
    return False


def deliver(account: str, region: str, event: dict[str, Any]) -> int:
    """Deliver ``event`` (an :func:`envelope`) to the matching enabled rules of the default bus of that
    account and region; return how many SQS messages it became. Undeliverable targets (a missing queue, a
    queue policy that does not allow the rule) are skipped with a warning, as AWS drops them."""
    from moto.backends import get_backend

    from ..aws_session import isolate_moto

    isolate_moto()
    bus: Any = get_backend("events")[account][region].event_buses.get("default")  # type: ignore[call-overload]
    if bus is None:
        return 0
    sent = 0
    for rule in list(bus.rules.values()):
        if rule.state != "ENABLED" or not rule.event_pattern.matches_event(event):
            continue
        ours = [t for t in rule.targets if _is_plain_sqs(t)]
        others = [t for t in rule.targets if not _is_plain_sqs(t)]
        for target in ours:
            sent += _send_to_queue(target["Arn"], rule.arn, event)
        if others:
            delegate = copy.copy(rule)
            delegate.targets = others
            delegate.send_to_targets(
                {**copy.deepcopy(event), "ingestion-time": datetime.now(UTC).timestamp()}
            )
    return sent


def _is_plain_sqs(target: dict[str, Any]) -> bool:
    parts = str(target.get("Arn", "")).split(":", 5)
    return (
        len(parts) == 6
        and parts[0] == "arn"
        and parts[2] == "sqs"
        and not parts[5].endswith(".fifo")
        and not any(target.get(key) for key in _TRANSFORMING_KEYS)
    )


def _send_to_queue(queue_arn: str, rule_arn: str, event: dict[str, Any]) -> int:
    from moto.backends import get_backend

    _, _, _, region, account, name = queue_arn.split(":", 5)
    backend = get_backend("sqs")[account][region]  # type: ignore[call-overload]
    queue = backend.queues.get(name)
    if queue is None:
        log.warning("EventBridge rule %s: target queue %s does not exist; event dropped", rule_arn, queue_arn)
        return 0
    if not policy_allows(queue.policy, queue_arn, rule_arn):
        log.warning(
            "EventBridge rule %s: the policy of queue %s does not allow events.amazonaws.com to send this "
            "rule's events; event dropped (as on AWS)",
            rule_arn,
            queue_arn,
        )
        return 0
    backend.send_message(name, json.dumps(event))
    return 1
