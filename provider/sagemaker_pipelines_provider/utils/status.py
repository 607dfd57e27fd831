"""The one terminal-status policy for SageMaker pipeline executions.

Operator (deferrable, synchronous, fire-and-forget re-attach), sensor (poke, reschedule, deferrable) and
trigger all ask :func:`execution_outcome` what a ``PipelineExecutionStatus`` means, so the same status can
never be a success in one mode and a failure in another.
"""

from __future__ import annotations

import enum

#: Statuses after which an execution never changes again (unless RetryPipelineExecution is called on a
#: Failed one).
TERMINAL_STATUSES = frozenset({"Succeeded", "Failed", "Stopped"})
#: Statuses of an execution that is still going.
RUNNING_STATUSES = frozenset({"Executing", "Stopping"})


class Outcome(enum.StrEnum):
    """What a pipeline execution status means for the Airflow task waiting on it."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"


def execution_outcome(status: str, *, allow_stopped: bool = False) -> Outcome:
    """Map a ``PipelineExecutionStatus`` to the waiting task's outcome.

    - ``Executing`` and ``Stopping`` are :attr:`Outcome.RUNNING` (a stopping execution may still end
      ``Succeeded`` or ``Failed``; only its final status counts);
    - ``Succeeded`` is :attr:`Outcome.SUCCESS`;
    - ``Failed`` is :attr:`Outcome.FAILURE`;
    - ``Stopped`` is :attr:`Outcome.FAILURE`, or :attr:`Outcome.SUCCESS` when ``allow_stopped`` is true.

    :raises ValueError: for a status SageMaker does not document: waiting forever on it or guessing a
        result would both be wrong, so the caller fails loudly instead.
    """
    if status in RUNNING_STATUSES:
        return Outcome.RUNNING
    if status == "Succeeded":
        return Outcome.SUCCESS
    if status == "Failed":
        return Outcome.FAILURE
    if status == "Stopped":
        return Outcome.SUCCESS if allow_stopped else Outcome.FAILURE
    known = ", ".join(sorted(RUNNING_STATUSES | TERMINAL_STATUSES))
    raise ValueError(f"Unknown pipeline execution status {status!r}; SageMaker documents: {known}.")


def is_terminal(status: str) -> bool:
    """True when ``status`` is one an execution does not leave on its own."""
    return status in TERMINAL_STATUSES
