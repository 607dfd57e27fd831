"""The one policy that maps one *step* of a pipeline execution to the state of the Airflow task mirroring it.

Used by the step sensor (poke / reschedule), its trigger (deferred) and the task group, so a step can never
be a success in one mode and a skip in another; the rules are :func:`step_verdict`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sagemaker_pipelines_provider.results import latest_entry
from sagemaker_pipelines_provider.utils.status import is_terminal

StepState = Literal["running", "success", "failed", "skipped"]

#: StepStatus values after which a step attempt never changes again.
FINISHED_STEP_STATUSES = frozenset({"Succeeded", "Failed", "Stopped"})


@dataclass(frozen=True)
class BranchRef:
    """The step sits in the ``IfSteps`` (``outcome`` True) or ``ElseSteps`` of Condition ``condition``."""

    condition: str
    outcome: bool


@dataclass(frozen=True)
class StepVerdict:
    """What the task mirroring one step should do; ``entry`` is the step's latest listed entry, if any."""

    state: StepState
    reason: str = ""
    entry: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def attempts(self) -> int:
        """The entry's ``AttemptCount`` (1 when SageMaker did not report one, 0 when not listed)."""
        if self.entry is None:
            return 0
        return int(self.entry.get("AttemptCount") or 1)


def condition_outcome(steps: Iterable[Mapping[str, Any]], condition: str) -> bool | None:
    """The outcome of Condition step ``condition`` once it has Succeeded (None while undecided)."""
    entry = latest_entry(steps, condition)
    if entry is None or entry.get("StepStatus") != "Succeeded":
        return None
    outcome = ((entry.get("Metadata") or {}).get("Condition") or {}).get("Outcome")
    if outcome is None:
        return None
    return str(outcome).lower() == "true"


def step_verdict(
    step_name: str,
    *,
    execution_status: str | None,
    steps: Sequence[Mapping[str, Any]],
    branch_chain: Sequence[BranchRef] = (),
    resumed_attempt: int | None = None,
) -> StepVerdict:
    """Judge one step of an execution: what the task mirroring it should do.

    Rules, in order (``entry`` is the step's latest attempt by
    :func:`~sagemaker_pipelines_provider.results.attempt_order`, the one the execution result reports):

    - **listed, Succeeded** -> ``success``;
    - **listed, Failed or Stopped** -> ``failed`` with the step's ``FailureReason`` — unless the caller
      resumed the execution from this very attempt (``resumed_attempt`` >= the entry's ``AttemptCount``):
      the entry is the previous attempt, shown until the re-run starts, so -> ``running``; if the execution
      then ended Succeeded or Stopped without re-running the step, -> ``failed``;
    - **listed, Starting / Executing / Stopping** -> ``running``;
    - **not listed, in a Condition branch the Condition did not take** (the Condition's entry is Succeeded and
      its ``Metadata.Condition.Outcome`` differs from the branch, at any nesting level) -> ``skipped``;
    - **not listed, execution terminal** (Succeeded, Failed, Stopped) -> ``skipped``: the step did not run in
      this execution (a branch not taken, or SageMaker stopped scheduling new steps after a failure);
    - **not listed, execution running** -> ``running`` (the step has not started yet).
    """
    entry = latest_entry(steps, step_name)
    if entry is not None:
        status = str(entry.get("StepStatus"))
        attempts = int(entry.get("AttemptCount") or 1)
        if status in ("Failed", "Stopped") and resumed_attempt is not None and attempts <= resumed_attempt:
            if execution_status in ("Succeeded", "Stopped"):
                return StepVerdict(
                    "failed",
                    f"step {step_name} was not re-run after the resume; the execution ended "
                    f"{execution_status} with the step {status}: {entry.get('FailureReason') or 'no reason'}",
                    entry,
                )
            return StepVerdict("running", f"resumed from attempt {attempts}; waiting for the re-run", entry)
        if status == "Succeeded":
            return StepVerdict("success", "step succeeded", entry)
        if status in ("Failed", "Stopped"):
            reason = entry.get("FailureReason") or f"step {status.lower()} (SageMaker gave no reason)"
            return StepVerdict("failed", str(reason), entry)
        return StepVerdict("running", f"step is {status}", entry)
    for branch in branch_chain:
        outcome = condition_outcome(steps, branch.condition)
        if outcome is not None and outcome != branch.outcome:
            taken = "IfSteps" if outcome else "ElseSteps"
            return StepVerdict(
                "skipped",
                f"Condition {branch.condition} took its {taken}; step {step_name} is in the other branch",
            )
    if execution_status is not None and is_terminal(execution_status):
        return StepVerdict("skipped", f"step {step_name} did not run; the execution ended {execution_status}")
    return StepVerdict("running", "step has not started yet")


def is_finished(verdict: StepVerdict) -> bool:
    """True when the verdict is final for the waiting task (anything but ``running``)."""
    return verdict.state != "running"


__all__ = [
    "FINISHED_STEP_STATUSES",
    "BranchRef",
    "StepState",
    "StepVerdict",
    "condition_outcome",
    "is_finished",
    "latest_entry",
    "step_verdict",
]
