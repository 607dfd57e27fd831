"""The execution result every waiting task returns, and the verdict it is judged by.

Pure functions from SageMaker's answers (DescribePipelineExecution, ListPipelineExecutionSteps,
ListPipelineParametersForExecution) to the result dict and the failure message; the schema is
documented in ``docs/result-schema.md``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypedDict

from sagemaker_pipelines_provider.links.pipeline import execution_console_url
from sagemaker_pipelines_provider.utils.arn import ExecutionArn
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome

#: ListPipelineExecutionSteps metadata key -> the definition's step ``Type``.
_METADATA_STEP_TYPES = {
    "TrainingJob": "Training",
    "ProcessingJob": "Processing",
    "TransformJob": "Transform",
    "TuningJob": "Tuning",
    "AutoMLJob": "AutoML",
}
#: Metadata key -> the output name under which its ``Arn`` is reported in a result's ``outputs``.
_ARN_OUTPUT_NAMES = {"RegisterModel": "ModelPackageArn"}
_EPOCH = dt.datetime.min.replace(tzinfo=dt.UTC)


class StepResult(TypedDict):
    """One step of an :class:`ExecutionResult`: its latest attempt (times are ISO-8601 strings)."""

    type: str | None
    status: str | None
    start: str | None
    end: str | None
    attempts: int | None
    failure_reason: str | None
    metadata: dict[str, Any]


class StepTaskResult(StepResult):
    """What a step task of the mirror returns: the step's :class:`StepResult` plus its name and outputs."""

    name: str
    outputs: dict[str, Any]


class ExecutionResult(TypedDict):
    """What the operator, the sensor and the trigger return for one execution (JSON-serialisable)."""

    pipeline_execution_arn: str
    pipeline_name: str | None
    status: str | None
    failure_reason: str | None
    display_name: str | None
    parameters: dict[str, str]
    steps: dict[str, StepResult]
    outputs: dict[str, dict[str, Any]]


class ExecutionVerdict(NamedTuple):
    """An execution's outcome under the status policy, its result, and why it failed (None unless FAILURE)."""

    outcome: Outcome
    result: ExecutionResult
    message: str | None


# -------------------------------------------------------------------------------------------------------
# the latest attempt of a step


def attempt_order(entry: Mapping[str, Any]) -> tuple[int, dt.datetime]:
    """Sort key of a step's ListPipelineExecutionSteps entries: the greatest is its latest attempt.

    Highest ``AttemptCount`` first, then latest ``StartTime``: the count is SageMaker's own numbering of a
    step's runs and only grows, while start times tie (the same second) or are missing (an attempt not yet
    started), and entries come newest first, so "latest start wins" can pick an older attempt.
    """
    started = entry.get("StartTime")
    if isinstance(started, dt.datetime):
        started = started if started.tzinfo else started.replace(tzinfo=dt.UTC)
    else:
        started = _EPOCH
    return int(entry.get("AttemptCount") or 1), started


def latest_attempts(steps: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One entry per step name (its latest attempt, :func:`attempt_order`), ordered by start time."""
    latest: dict[str, Mapping[str, Any]] = {}
    for entry in steps:
        name = str(entry.get("StepName"))
        if name not in latest or attempt_order(entry) > attempt_order(latest[name]):
            latest[name] = entry
    return sorted(latest.values(), key=lambda e: (attempt_order(e)[1], str(e.get("StepName"))))


def latest_entry(steps: Iterable[Mapping[str, Any]], step_name: str) -> Mapping[str, Any] | None:
    """The latest attempt of ``step_name`` (:func:`attempt_order`), or None when it is not listed."""
    found = [s for s in steps if s.get("StepName") == step_name]
    return max(found, key=attempt_order) if found else None


# -------------------------------------------------------------------------------------------------------
# shaping


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return _iso(value)
    return value


def step_type(step: Mapping[str, Any], step_types: Mapping[str, str] | None = None) -> str | None:
    """A listed step's Type: from the definition when known, else from its metadata key."""
    name = str(step.get("StepName"))
    if step_types and name in step_types:
        return step_types[name]
    for key in step.get("Metadata") or {}:
        return _METADATA_STEP_TYPES.get(key, key)
    return None


def step_outputs(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a downstream task templates from one step's metadata.

    Callback / Lambda: their output parameters ``{name: value}``; RegisterModel: ``ModelPackageArn``; job
    steps: ``<Kind>Arn`` (``TrainingJobArn``, ``ProcessingJobArn``, ``ModelArn``...); Condition: ``Outcome``;
    Fail: ``ErrorMessage``; others: their scalar metadata fields.
    """
    outputs: dict[str, Any] = {}
    for kind, body in metadata.items():
        if not isinstance(body, Mapping):
            continue
        if kind in ("Callback", "Lambda"):
            for parameter in body.get("OutputParameters") or []:
                outputs[str(parameter.get("Name"))] = parameter.get("Value")
            continue
        for field, value in body.items():
            if field == "Arn":
                outputs[_ARN_OUTPUT_NAMES.get(kind, f"{kind}Arn")] = value
            elif isinstance(value, str | int | float | bool):
                outputs[field] = value
    return outputs


def step_result(entry: Mapping[str, Any], step_types: Mapping[str, str] | None = None) -> StepResult:
    """One ListPipelineExecutionSteps entry as a result's step (JSON-serialisable)."""
    return {
        "type": step_type(entry, step_types),
        "status": entry.get("StepStatus"),
        "start": _iso(entry.get("StartTime")),
        "end": _iso(entry.get("EndTime")),
        "attempts": entry.get("AttemptCount"),
        "failure_reason": entry.get("FailureReason"),
        "metadata": _jsonable(entry.get("Metadata") or {}),
    }


def step_task_result(entry: Mapping[str, Any], step_name: str, step_type: str | None) -> StepTaskResult:
    """What the step task mirroring ``step_name`` returns for its latest ``entry``."""
    step = step_result(entry, {step_name: step_type} if step_type else None)
    return {**step, "name": step_name, "outputs": step_outputs(step["metadata"])}


def describe_fields(
    arn: str, status: str | None, failure_reason: str | None, display_name: str | None
) -> dict[str, Any]:
    """The DescribePipelineExecution fields a result needs (:func:`build_execution_result`), from an
    execution's status known otherwise (a list page, events): the end then costs no Describe call."""
    return {
        "PipelineExecutionArn": arn,
        "PipelineExecutionStatus": status,
        "FailureReason": failure_reason,
        "PipelineExecutionDisplayName": display_name,
    }


def build_execution_result(
    describe: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    parameters: Mapping[str, str] | Sequence[Mapping[str, str]],
    *,
    step_types: Mapping[str, str] | None = None,
) -> ExecutionResult:
    """The value a task returns (and pushes to XCom) for one execution (``docs/result-schema.md``).

    A step listed several times (retries) is reported by its latest attempt (:func:`attempt_order`).
    """
    if not isinstance(parameters, Mapping):
        parameters = {str(p["Name"]): str(p.get("Value", "")) for p in parameters}
    arn = str(describe.get("PipelineExecutionArn", ""))
    parsed = ExecutionArn.parse_or_none(arn)
    result_steps: dict[str, StepResult] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for entry in latest_attempts(steps):
        name = str(entry.get("StepName"))
        result_steps[name] = step_result(entry, step_types)
        produced = step_outputs(result_steps[name]["metadata"])
        if produced:
            outputs[name] = produced
    return {
        "pipeline_execution_arn": arn,
        "pipeline_name": parsed.pipeline_name if parsed else None,
        "status": describe.get("PipelineExecutionStatus"),
        "failure_reason": describe.get("FailureReason"),
        "display_name": describe.get("PipelineExecutionDisplayName"),
        "parameters": dict(parameters),
        "steps": result_steps,
        "outputs": outputs,
    }


# -------------------------------------------------------------------------------------------------------
# verdict, message and log lines


def execution_verdict(
    describe: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    parameters: Mapping[str, str] | Sequence[Mapping[str, str]],
    *,
    allow_stopped: bool = False,
    step_types: Mapping[str, str] | None = None,
) -> ExecutionVerdict:
    """Judge one look at an execution: the status policy's outcome
    (:func:`~sagemaker_pipelines_provider.utils.status.execution_outcome`), the result, and the failure
    message when the outcome is FAILURE. The sync wait, the sensor and the trigger all end here.

    :raises ValueError: for a status SageMaker does not document (the policy's rule).
    """
    result = build_execution_result(describe, steps, parameters, step_types=step_types)
    outcome = execution_outcome(str(result["status"]), allow_stopped=allow_stopped)
    message = failure_message(result) if outcome is Outcome.FAILURE else None
    return ExecutionVerdict(outcome, result, message)


def _job_arn(metadata: Mapping[str, Any]) -> str | None:
    for kind, body in metadata.items():
        if isinstance(body, Mapping) and kind != "Callback" and body.get("Arn"):
            return str(body["Arn"])
    return None


def failure_message(result: Mapping[str, Any], *, allow_stopped_hint: bool = True) -> str:
    """Why an execution did not succeed: status, reason, failed steps (reason, job ARN), console link."""
    arn = str(result.get("pipeline_execution_arn"))
    status = result.get("status")
    lines = [f"SageMaker pipeline execution {arn} ended {status}."]
    if result.get("failure_reason"):
        lines.append(f"Reason: {result['failure_reason']}")
    failed = {n: s for n, s in (result.get("steps") or {}).items() if s.get("status") == "Failed"}
    if failed:
        lines.append("Failed step(s):")
        for name, step in failed.items():
            entry = f"  - {name} ({step.get('type') or 'unknown type'})"
            if step.get("failure_reason"):
                entry += f": {step['failure_reason']}"
            job = _job_arn(step.get("metadata") or {})
            if job:
                entry += f" [job: {job}]"
            lines.append(entry)
    if status == "Stopped" and allow_stopped_hint:
        lines.append("Pass allow_stopped=True to treat a stopped execution as a success.")
    url = execution_console_url(arn)
    if url:
        lines.append(f"Console: {url}")
    return "\n".join(lines)


def step_transitions(
    previous: Mapping[str, str],
    steps: Sequence[Mapping[str, Any]],
    step_types: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Compare listed steps with the statuses seen before; return the new statuses and one line per change.

    A line reads ``Step Train (Training): Succeeded after 12.3s`` (duration once the step has ended,
    failure reason when it failed). Steps whose status did not change produce no line.
    """
    seen = dict(previous)
    lines: list[str] = []
    for step in latest_attempts(steps):
        name = str(step.get("StepName"))
        status = str(step.get("StepStatus"))
        if seen.get(name) == status:
            continue
        seen[name] = status
        line = f"Step {name} ({step_type(step, step_types) or 'unknown type'}): {status}"
        start, end = step.get("StartTime"), step.get("EndTime")
        if isinstance(start, dt.datetime) and isinstance(end, dt.datetime):
            line += f" after {(end - start).total_seconds():.1f}s"
        if step.get("AttemptCount") and int(step["AttemptCount"]) > 1:
            line += f" (attempt {step['AttemptCount']})"
        if step.get("FailureReason"):
            line += f": {step['FailureReason']}"
        lines.append(line)
    return seen, lines


__all__ = [
    "ExecutionResult",
    "ExecutionVerdict",
    "StepResult",
    "StepTaskResult",
    "attempt_order",
    "build_execution_result",
    "describe_fields",
    "execution_verdict",
    "failure_message",
    "latest_attempts",
    "latest_entry",
    "step_outputs",
    "step_result",
    "step_task_result",
    "step_transitions",
    "step_type",
]
