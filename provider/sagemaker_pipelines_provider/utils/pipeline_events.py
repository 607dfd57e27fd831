"""The one reader of SageMaker's pipeline status-change events (EventBridge, source ``aws.sagemaker``).

An event reaches a waiting trigger as the body of an SQS message: the EventBridge envelope (``id``,
``source``, ``detail-type``, ``time``, ``detail`` ...), as AWS and the local endpoint put it there.
:func:`parse_event` turns it into a :class:`PipelineEvent` or raises :class:`MalformedEvent` with the reason;
extra keys are tolerated (AWS may add fields). The event's ``metadata`` and ``cacheHitResult`` use
lowerCamelCase keys; they are converted back to the PascalCase keys of ListPipelineExecutionSteps
(:func:`pascal`), so that a step event reads like a listed step (:meth:`PipelineEvent.as_step_entry`).

Events are hints: AWS may deliver one more than once (same ``id``) or out of order, so a status is applied
only when it ranks higher (:func:`execution_rank`, :func:`step_rank`). Pure: no AWS call. See docs/events.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sagemaker_pipelines_provider.utils.arn import ExecutionArn
from sagemaker_pipelines_provider.utils.status import TERMINAL_STATUSES

#: The envelope ``source`` of SageMaker's events.
EVENT_SOURCE = "aws.sagemaker"
#: ``detail-type`` of an execution status change.
EXECUTION_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
#: ``detail-type`` of a step status change.
STEP_EVENT = "SageMaker Model Building Pipeline Execution Step Status Change"

#: Ranks of the documented statuses: a status is applied only over a lower one.
_EXECUTION_RANKS = {"Executing": 0, "Stopping": 1, **dict.fromkeys(TERMINAL_STATUSES, 2)}
_STEP_RANKS = {"Starting": 0, "Executing": 1, "Stopping": 2, **dict.fromkeys(TERMINAL_STATUSES, 3)}

#: PascalCase keys whose leading capitals are lowered together in events (``EMR`` -> ``emr``,
#: ``EMRServerless`` -> ``emrServerless``); every other key only has its first letter lowered.
ACRONYMS = ("EMR",)

EventKind = Literal["execution", "step"]


class MalformedEvent(ValueError):
    """A message that is not a SageMaker pipeline status-change event; ``reason`` says why."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


@dataclass(frozen=True)
class PipelineEvent:
    """One status change of a pipeline execution (``kind`` "execution") or of one of its steps ("step").

    ``event_id`` is the envelope's ``id``: copies of one event delivered twice share it. ``status`` is
    ``currentPipelineExecutionStatus`` or ``currentStepStatus``; ``metadata`` and ``cache_hit_result`` carry
    the API's PascalCase keys (``TrainingJob.Arn``, ``Callback.OutputParameters[].Name``...).
    """

    event_id: str
    kind: EventKind
    execution_arn: str
    pipeline_name: str
    status: str
    previous_status: str | None
    time: datetime | None
    display_name: str | None = None
    step_name: str | None = None
    step_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    failure_reason: str | None = None
    attempt_count: int | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    cache_hit_result: dict[str, Any] | None = None

    def as_step_entry(self) -> dict[str, Any]:
        """The step as a ListPipelineExecutionSteps entry (``StepName``, ``StepStatus``, ``Metadata`` and,
        when the event carries them, ``StartTime``, ``EndTime``, ``AttemptCount``, ``FailureReason``,
        ``CacheHitResult``). :class:`ValueError` for an execution event."""
        if self.kind != "step":
            raise ValueError(f"event {self.event_id} is an execution event, not a step event")
        entry: dict[str, Any] = {
            "StepName": self.step_name,
            "StepStatus": self.status,
            "Metadata": copy.deepcopy(self.metadata),  # a copy the caller may change
        }
        optional = {
            "StartTime": self.start_time,
            "EndTime": self.end_time,
            "AttemptCount": self.attempt_count,
            "FailureReason": self.failure_reason,
            "CacheHitResult": copy.deepcopy(self.cache_hit_result),
        }
        entry.update({key: value for key, value in optional.items() if value is not None})
        return entry


def execution_rank(status: str) -> int:
    """Order of execution statuses: Executing < Stopping < Succeeded = Failed = Stopped.
    :class:`ValueError` naming the documented statuses for any other."""
    return _rank(status, _EXECUTION_RANKS, "pipeline execution")


def step_rank(status: str) -> int:
    """Order of step statuses: Starting < Executing < Stopping < Succeeded = Failed = Stopped.
    :class:`ValueError` naming the documented statuses for any other."""
    return _rank(status, _STEP_RANKS, "step")


def _rank(status: str, ranks: Mapping[str, int], what: str) -> int:
    try:
        return ranks[status]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ranks))
        raise ValueError(f"Unknown {what} status {status!r}; SageMaker documents: {known}.") from None


def pascal(value: Any) -> Any:
    """lowerCamelCase keys -> PascalCase, recursively (``processingJob.arn`` -> ``ProcessingJob.Arn``,
    ``emr`` -> ``EMR``): the inverse of the engine's ``camel`` for every key of the API's step metadata.
    Keys already capitalised are kept; values are never changed."""
    if isinstance(value, Mapping):
        return {_pascal_key(k) if isinstance(k, str) else k: pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pascal(v) for v in value]
    return value


def _pascal_key(key: str) -> str:
    if not key or not key[0].islower():
        return key
    for acronym in ACRONYMS:
        lowered = acronym.lower()
        if key == lowered or (key.startswith(lowered) and key[len(lowered)].isupper()):
            return acronym + key[len(lowered) :]
    return key[0].upper() + key[1:]


def parse_event(body: str | bytes | Mapping[str, Any]) -> PipelineEvent:
    """Read one EventBridge envelope (an SQS message body, or its decoded JSON).

    Requires ``source`` ``aws.sagemaker``, ``detail-type`` :data:`EXECUTION_EVENT` or :data:`STEP_EVENT`, an
    ``id``, and a ``detail`` object with a ``pipelineExecutionArn`` that is an execution ARN and a documented
    current status (plus ``stepName`` for a step event). Other keys are ignored.

    :raises MalformedEvent: saying what is missing or wrong.
    """
    envelope = _decode(body)
    raw_id = envelope.get("id")
    event_id = raw_id if isinstance(raw_id, str) and raw_id else None
    try:
        return _parse(envelope, event_id)
    except MalformedEvent as err:
        err.event_id = event_id
        raise


def _decode(body: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    if not isinstance(body, str | bytes | bytearray):
        raise MalformedEvent(f"an event body must be JSON text or a mapping, not {type(body).__name__}")
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedEvent(f"the body is not JSON ({err})") from None
    if not isinstance(decoded, Mapping):
        raise MalformedEvent(f"the body is JSON {type(decoded).__name__}, not an EventBridge event object")
    return decoded


def _parse(envelope: Mapping[str, Any], event_id: str | None) -> PipelineEvent:
    if envelope.get("source") != EVENT_SOURCE:
        raise MalformedEvent(f"source is {envelope.get('source')!r}, not {EVENT_SOURCE!r}")
    detail_type = envelope.get("detail-type")
    if detail_type not in (EXECUTION_EVENT, STEP_EVENT):
        raise MalformedEvent(f"detail-type {detail_type!r} is neither {EXECUTION_EVENT!r} nor {STEP_EVENT!r}")
    if event_id is None:
        raise MalformedEvent("the envelope has no id")
    detail = envelope.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedEvent("the envelope has no detail object")
    try:
        arn = ExecutionArn.parse(detail.get("pipelineExecutionArn"))  # type: ignore[arg-type]
    except ValueError as err:
        raise MalformedEvent(f"detail.pipelineExecutionArn: {err}") from None
    common: dict[str, Any] = {
        "event_id": event_id,
        "execution_arn": str(arn),
        "pipeline_name": arn.pipeline_name,
        "time": _time(envelope, "time"),
        "failure_reason": _text(detail, "failureReason"),
    }
    if detail_type == EXECUTION_EVENT:
        return PipelineEvent(
            kind="execution",
            status=_status(detail, "currentPipelineExecutionStatus", execution_rank),
            previous_status=_text(detail, "previousPipelineExecutionStatus"),
            display_name=_text(detail, "pipelineExecutionDisplayName"),
            start_time=_time(detail, "executionStartTime"),
            end_time=_time(detail, "executionEndTime"),
            **common,
        )
    status = _status(detail, "currentStepStatus", step_rank)
    step_name = _text(detail, "stepName")
    if not step_name:
        raise MalformedEvent("a step event needs detail.stepName")
    attempts = detail.get("attemptCount")
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int)):
        raise MalformedEvent(f"detail.attemptCount is {attempts!r}, not an integer")
    cache_hit = _object(detail, "cacheHitResult")
    return PipelineEvent(
        kind="step",
        status=status,
        previous_status=_text(detail, "previousStepStatus"),
        step_name=step_name,
        step_type=_text(detail, "stepType"),
        metadata=pascal(_object(detail, "metadata") or {}),
        attempt_count=attempts,
        start_time=_time(detail, "stepStartTime"),
        end_time=_time(detail, "stepEndTime"),
        cache_hit_result=pascal(cache_hit) if cache_hit is not None else None,
        **common,
    )


def _object(fields: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"detail.{key} is {type(value).__name__}, not an object")
    return dict(value)


def _text(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"{key} is {value!r}, not a string")
    return value


def _status(detail: Mapping[str, Any], key: str, rank: Any) -> str:
    status = detail.get(key)
    if status is None:
        raise MalformedEvent(f"detail.{key} is missing")
    try:
        rank(status)
    except ValueError as err:
        raise MalformedEvent(f"detail.{key}: {err}") from None
    return str(status)


def _time(fields: Mapping[str, Any], key: str) -> datetime | None:
    value = fields.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise MalformedEvent(f"{key} is {value!r}, not an ISO-8601 time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = [
    "ACRONYMS",
    "EVENT_SOURCE",
    "EXECUTION_EVENT",
    "STEP_EVENT",
    "EventKind",
    "MalformedEvent",
    "PipelineEvent",
    "execution_rank",
    "parse_event",
    "pascal",
    "step_rank",
]
