"""The reconciler: find callback steps waiting past a deadline and answer them with failure.

Found without SQS (ListPipelineExecutions, then ListPipelineExecutionSteps of the running executions);
answers are idempotent per token and reason; ``dry_run`` answers nothing. See ``docs/callbacks.md``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sagemaker_pipelines_provider.callbacks.liveness import WAITING_STEP_STATUSES
from sagemaker_pipelines_provider.callbacks.message import mask_token

log = logging.getLogger(__name__)

#: Execution statuses that can hold a waiting callback.
RUNNING_EXECUTION_STATUSES = frozenset({"Executing", "Stopping"})
#: How old a running execution can be: AWS stops an execution after 672 hours (28 days). One more day of
#: margin (clock skew, a quota documented per account) costs one more day of listing, nothing else; the
#: exact value is not documented beyond the 672 hours.
MAX_EXECUTION_AGE = dt.timedelta(hours=672) + dt.timedelta(days=1)


@dataclass(frozen=True)
class OverdueCallback:
    """A callback step that has waited longer than the deadline."""

    pipeline_execution_arn: str
    step_name: str
    token: str
    queue_url: str | None
    started: str | None
    waited_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, the token masked (it is a capability to answer the step)."""
        data = asdict(self)
        data["token"] = mask_token(self.token)
        return data


def _aware(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def find_overdue_callbacks(
    hook: Any,
    pipeline_name: str,
    *,
    older_than: dt.timedelta,
    now: dt.datetime | None = None,
    max_execution_age: dt.timedelta = MAX_EXECUTION_AGE,
) -> list[OverdueCallback]:
    """Callback steps of running executions of ``pipeline_name`` waiting longer than ``older_than``.

    Every execution that can hold such a step is looked at, however many newer ones there are: all pages
    of ListPipelineExecutions for the executions created between ``now - max_execution_age`` and
    ``now - older_than`` (a step waiting longer than ``older_than`` belongs to an execution created
    before that; an execution older than ``max_execution_age`` has timed out). ListPipelineExecutions
    cannot filter on status, so the time window is what bounds the listing: one call per 100 executions
    of the window, one ListPipelineExecutionSteps per running one.

    :param hook: a :class:`~sagemaker_pipelines_provider.hooks.pipeline.SageMakerPipelineHook`.
    :param max_execution_age: the oldest an execution can be and still run (AWS: 28 days).
    """
    now = now or dt.datetime.now(dt.UTC)
    found: list[OverdueCallback] = []
    next_token: str | None = None
    while True:
        summaries, next_token = hook.list_pipeline_executions(
            pipeline_name,
            next_token=next_token,
            created_after=now - max_execution_age,
            created_before=now - older_than,
        )
        for summary in summaries:
            if summary.get("PipelineExecutionStatus") not in RUNNING_EXECUTION_STATUSES:
                continue
            arn = str(summary["PipelineExecutionArn"])
            for step in hook.list_pipeline_execution_steps(arn):
                callback = (step.get("Metadata") or {}).get("Callback") or {}
                token = callback.get("CallbackToken")
                if not token or step.get("StepStatus") not in WAITING_STEP_STATUSES:
                    continue
                started = _aware(step.get("StartTime"))
                waited = (now - started).total_seconds() if started else 0.0
                if started is None or waited < older_than.total_seconds():
                    continue
                found.append(
                    OverdueCallback(
                        pipeline_execution_arn=arn,
                        step_name=str(step.get("StepName")),
                        token=str(token),
                        queue_url=callback.get("SqsQueueUrl"),
                        started=started.isoformat(),
                        waited_seconds=round(waited, 3),
                    )
                )
        if not next_token:
            break
    return found


def answer_overdue_callbacks(
    hook: Any,
    pipeline_name: str,
    *,
    older_than: dt.timedelta,
    reason: str | None = None,
    dry_run: bool = False,
    queue_hook_factory: Callable[[], Any] | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Answer every overdue callback of ``pipeline_name`` with failure; return one report dict per step.

    :param reason: failure reason; default says how long the step waited. Cut to 256 characters.
    :param queue_hook_factory: builds a ``SageMakerCallbackQueueHook`` to sweep the answered messages
        (None: no sweep).
    """
    reports: list[dict[str, Any]] = []
    for overdue in find_overdue_callbacks(hook, pipeline_name, older_than=older_than, now=now):
        report = overdue.to_dict()
        # no clock in the text: the reconciler run again sends the same request (see answer_request_token)
        text = reason or (
            f"Callback step {overdue.step_name} not answered within {older_than}; failed by the callback "
            "reconciler"
        )
        if dry_run:
            report.update(answered=False, already_answered=False, copies_deleted=0)
            reports.append(report)
            continue
        answer = hook.send_step_failure(overdue.token, text)
        copies = 0
        if overdue.queue_url and queue_hook_factory is not None:
            try:
                copies = queue_hook_factory().delete_token_copies(overdue.queue_url, overdue.token)
            except Exception as err:  # the answer is what matters; the message is settled later
                log.warning(
                    "Could not sweep %s for %s: %s", overdue.queue_url, mask_token(overdue.token), err
                )
        log.info(
            "Reconciler answered %s of %s with failure (%s)",
            overdue.step_name,
            overdue.pipeline_execution_arn,
            "already answered" if answer.already_answered else "accepted",
        )
        report.update(answered=True, already_answered=answer.already_answered, copies_deleted=copies)
        reports.append(report)
    return reports


__all__ = ["MAX_EXECUTION_AGE", "OverdueCallback", "answer_overdue_callbacks", "find_overdue_callbacks"]
