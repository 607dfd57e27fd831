"""EventBridge events of pipeline executions and steps (source ``aws.sagemaker``, the default bus).
Fields and modelling choices: docs/local-endpoint.md.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from sagemaker_pipelines_provider.utils.pipeline_events import EXECUTION_EVENT, STEP_EVENT

from .state import ACTIVE_EXECUTION, Execution, StepRun, iso

__all__ = ["EXECUTION_EVENT", "STEP_EVENT", "camel", "execution_event", "step_event"]

_LEADING_CAPS = re.compile(r"^([A-Z]+)(?=[A-Z][a-z]|$)|^[A-Z]")


def camel(value: Any) -> Any:
    """PascalCase keys -> lowerCamelCase (``ProcessingJob`` -> ``processingJob``, ``EMR`` -> ``emr``); the
    provider reads them back with :func:`sagemaker_pipelines_provider.utils.pipeline_events.pascal`."""
    if isinstance(value, Mapping):
        return {_LEADING_CAPS.sub(lambda m: m.group(0).lower(), k): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def execution_event(execution: Execution, previous: str | None) -> tuple[dict[str, Any], list[str]]:
    """(detail, resources) of an execution status change."""
    detail: dict[str, Any] = {
        "pipelineExecutionDisplayName": execution.display_name,
        "currentPipelineExecutionStatus": execution.status,
        "executionStartTime": iso(execution.creation_time),
        "pipelineArn": execution.pipeline.arn,
        "pipelineExecutionArn": execution.arn,
    }
    if previous is not None:
        detail["previousPipelineExecutionStatus"] = previous
    if execution.status not in ACTIVE_EXECUTION and execution.end_time is not None:
        detail["executionEndTime"] = iso(execution.end_time)
    return detail, [execution.pipeline.arn, execution.arn]


def step_event(execution: Execution, run: StepRun, previous: str | None) -> tuple[dict[str, Any], list[str]]:
    """(detail, resources) of a step status change."""
    detail: dict[str, Any] = {
        "stepName": run.name,
        "stepType": run.spec.type,
        "currentStepStatus": run.status,
        "metadata": camel(copy.deepcopy(run.metadata)),
        "attemptCount": run.attempt_count,
        "stepStartTime": iso(run.start_time),
        "pipelineArn": execution.pipeline.arn,
        "pipelineExecutionArn": execution.arn,
    }
    if previous is not None:
        detail["previousStepStatus"] = previous
    if run.end_time is not None and run.phase == "done":
        detail["stepEndTime"] = iso(run.end_time)
    if run.status == "Failed" and run.failure_reason is not None:
        detail["failureReason"] = run.failure_reason
    return detail, [execution.pipeline.arn, execution.arn]
