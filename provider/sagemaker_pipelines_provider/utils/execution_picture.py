"""What a wait with events knows of one execution: its status and its steps, merged from events and reads.

A wait given an ``event_queue_url`` hears of its execution twice over: SageMaker's status-change events
(hints: duplicated, out of order, sometimes lost) and the shared poller's safety reads (the truth, but
late). :class:`ExecutionPicture` merges both without ever going backwards:

- the execution's status is applied only when it ranks higher
  (:func:`~sagemaker_pipelines_provider.utils.pipeline_events.execution_rank`), or when SageMaker's own
  answer refutes it (:meth:`ExecutionPicture.correct`: a late ``Failed`` event of an execution resumed with
  RetryPipelineExecution since);
- each step keeps its latest attempt: an entry replaces the one held only with a higher
  ``(AttemptCount, step rank)``; fields the newer entry of the same attempt lacks are kept;
- each step status change gives one log line (the polling wait's format,
  :func:`~sagemaker_pipelines_provider.results.step_transitions`), as it happens.

At the end, :meth:`ExecutionPicture.result_steps` gives the steps for the result when the picture is
provably complete, else None (the wait then lists the steps once). Pure: no AWS call, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagemaker_pipelines_provider.results import describe_fields, step_transitions
from sagemaker_pipelines_provider.utils.pipeline_events import execution_rank, step_rank


def _step_order(entry: Mapping[str, Any]) -> tuple[int, int]:
    return int(entry.get("AttemptCount") or 1), step_rank(str(entry.get("StepStatus")))


class ExecutionPicture:
    """The merged status and steps of one execution (see the module docstring).

    :param step_types: step name -> Type, from the pipeline's definition: the log lines' step types, and
        the steps a Succeeded execution must show for the picture to be complete.
    """

    def __init__(self, pipeline_execution_arn: str, step_types: Mapping[str, str] | None = None) -> None:
        self.pipeline_execution_arn = pipeline_execution_arn
        self.step_types = dict(step_types or {})
        self.status: str | None = None
        self.failure_reason: str | None = None
        self.display_name: str | None = None
        self.steps: dict[str, dict[str, Any]] = {}
        #: step name -> the status last logged (the log lines' memory, shared with a final listing).
        self.logged: dict[str, str] = {}

    # -- the execution ------------------------------------------------------------------------------------

    def apply_status(
        self, status: str, *, failure_reason: str | None = None, display_name: str | None = None
    ) -> bool:
        """Apply an execution status (read or announced); True when it moved the status forward.

        :raises ValueError: for a status SageMaker does not document.
        """
        rank = execution_rank(status)
        self.display_name = display_name or self.display_name
        if self.status is not None and rank <= execution_rank(self.status):
            if status == self.status:
                self.failure_reason = self.failure_reason or failure_reason
            return False
        self.status, self.failure_reason = status, failure_reason
        return True

    def correct(self, describe: Mapping[str, Any]) -> None:
        """Take SageMaker's DescribePipelineExecution answer as the status, whatever it ranks."""
        self.status = str(describe.get("PipelineExecutionStatus"))
        self.failure_reason = describe.get("FailureReason")
        self.display_name = describe.get("PipelineExecutionDisplayName") or self.display_name

    def as_describe(self) -> dict[str, Any]:
        """The DescribePipelineExecution fields a result needs, from the picture."""
        return describe_fields(
            self.pipeline_execution_arn, self.status, self.failure_reason, self.display_name
        )

    # -- the steps ----------------------------------------------------------------------------------------

    def apply_step(self, entry: Mapping[str, Any]) -> list[str]:
        """Apply one step's entry (a step event's :meth:`~.pipeline_events.PipelineEvent.as_step_entry`);
        the log lines of the change (none when it did not move the step forward).

        :raises ValueError: for a step status SageMaker does not document.
        """
        name = str(entry.get("StepName"))
        held = self.steps.get(name)
        if held is not None:
            if _step_order(entry) <= _step_order(held):
                return []
            if int(entry.get("AttemptCount") or 1) == int(held.get("AttemptCount") or 1):
                # the same attempt: keep what only the earlier event carried
                entry = {**held, **{k: v for k, v in entry.items() if v not in (None, {}, [])}}
        self.steps[name] = dict(entry)
        self.logged, lines = step_transitions(self.logged, [self.steps[name]], self.step_types)
        return lines

    def result_steps(self) -> list[dict[str, Any]] | None:
        """The steps for the result, or None when the picture cannot be shown complete.

        Complete only for a Succeeded execution whose every step of ``step_types`` (which must be known)
        was seen Succeeded: a step whose events were all lost, or that ended before the wait subscribed,
        would otherwise be missing. A Failed or Stopped execution cannot tell the steps that never ran
        from those whose events were lost, so its steps are always listed.
        """
        if self.status != "Succeeded" or not self.step_types:
            return None
        if not set(self.step_types) <= self.steps.keys():
            return None
        if any(entry.get("StepStatus") != "Succeeded" for entry in self.steps.values()):
            return None
        return [dict(entry) for entry in self.steps.values()]


__all__ = ["ExecutionPicture"]
