"""The one check of a trigger's event when a deferred task resumes (every ``execute_complete``).

The event payloads are described on each trigger (:mod:`~sagemaker_pipelines_provider.triggers.pipeline`,
:mod:`~sagemaker_pipelines_provider.triggers.pipeline_step`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from airflow.sdk.exceptions import AirflowException, AirflowTaskTimeout

from sagemaker_pipelines_provider.results import ExecutionResult


def trigger_event(event: Mapping[str, Any] | None, trigger: str) -> Mapping[str, Any]:
    """``event`` once checked: :class:`AirflowException` when ``trigger`` fired without a payload or
    reported an ``error`` (its message says what could not be read)."""
    if not event:
        raise AirflowException(f"{trigger} fired without an event payload.")
    if event.get("status") == "error":
        raise AirflowException(event.get("message") or f"{trigger} reported an error: {dict(event)}")
    return event


def execution_event_result(event: Mapping[str, Any] | None) -> ExecutionResult:
    """Apply a ``SageMakerPipelineExecutionTrigger`` event: the result on ``success``;
    :class:`AirflowTaskTimeout` on ``timeout`` (the deadline passed); :class:`AirflowException` with the
    failure message otherwise."""
    event = trigger_event(event, "SageMakerPipelineExecutionTrigger")
    arn = event.get("pipeline_execution_arn")
    status = event.get("status")
    if status == "success":
        return cast(ExecutionResult, dict(event["result"]))
    if status == "timeout":
        raise AirflowTaskTimeout(event.get("message") or f"execution_timeout passed waiting for {arn}")
    raise AirflowException(event.get("message") or f"Waiting for {arn} failed: {dict(event)}")


__all__ = ["execution_event_result", "trigger_event"]
