"""SageMakerPipelineStepTrigger: wait, in the triggerer, until one step of a pipeline execution is decided.

Serialisable arguments plus a run loop: the status comes from the execution's shared
:class:`~.step_poller.ExecutionStepsPoller`, the verdict from
:func:`~sagemaker_pipelines_provider.utils.step_status.step_verdict`. The trigger never changes the
execution. Its events are in docs/triggerer.md. ``PipelineStepTrigger`` is a deprecated alias.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sagemaker_pipelines_provider.hooks.pipeline import pipeline_name_from_arn
from sagemaker_pipelines_provider.results import StepTaskResult, step_task_result
from sagemaker_pipelines_provider.triggers.poller import PollerKey
from sagemaker_pipelines_provider.triggers.step_poller import StepsPollerKey, get_steps_poller
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs, WithAwsConnection
from sagemaker_pipelines_provider.utils.deprecation import renamed
from sagemaker_pipelines_provider.utils.poll_interval import event_safety_poll_interval
from sagemaker_pipelines_provider.utils.status import is_terminal
from sagemaker_pipelines_provider.utils.step_status import BranchRef, StepVerdict, step_verdict

CLASSPATH = "sagemaker_pipelines_provider.triggers.pipeline_step.SageMakerPipelineStepTrigger"


def step_payload(verdict: StepVerdict, *, step_name: str, step_type: str | None) -> StepTaskResult | None:
    """What the step's task returns for the verdict's entry (None when the step was never listed)."""
    return None if verdict.entry is None else step_task_result(verdict.entry, step_name, step_type)


def branch_refs(chain: Sequence[Any]) -> tuple[BranchRef, ...]:
    """``[[condition, outcome], ...]`` (the serialised form) or BranchRefs -> a tuple of BranchRefs."""
    refs = []
    for item in chain:
        if isinstance(item, BranchRef):
            refs.append(item)
        elif isinstance(item, Mapping):
            refs.append(BranchRef(str(item["condition"]), bool(item["outcome"])))
        else:
            condition, outcome = item
            refs.append(BranchRef(str(condition), bool(outcome)))
    return tuple(refs)


class SageMakerPipelineStepTrigger(WithAwsConnection, BaseTrigger):
    """Fire once when step ``step_name`` of an execution succeeded, failed or will not run.

    :param pipeline_execution_arn: the execution.
    :param step_name: the step (its ``Name`` in the definition).
    :param step_type: the step's ``Type`` (for the event's step payload).
    :param branch_chain: the Condition branches enclosing the step, innermost first, as
        ``[[condition_step, outcome], ...]`` (outcome True for ``IfSteps``).
    :param resumed_attempt: the waiting task resumed the execution from this attempt of the step: a
        Failed entry with this attempt count or lower is the old attempt, not the verdict.
    :param wait_for_execution_end: hold back a ``failed`` verdict until the execution is terminal.
    :param poll_interval: seconds between polls (the shared pollers use the smallest interval asked).
    :param aws_conn_id: Airflow AWS connection; ``region_name``, ``verify`` and ``botocore_config`` as on
        the Amazon provider's hooks.
    :param event_queue_url: an SQS queue that SageMaker's status-change events reach (docs/events.md): an
        event that can decide a step makes the execution's steps poller list the steps at once; it polls
        only every ``safety_poll_interval`` seconds otherwise (``poll_interval`` is then unused).
    :param safety_poll_interval: seconds between the safety polls of a wait with ``event_queue_url``
        (default ``[sagemaker_pipelines] event_safety_poll_interval``, 600).
    """

    def __init__(
        self,
        pipeline_execution_arn: str,
        step_name: str,
        *,
        step_type: str | None = None,
        branch_chain: Sequence[Any] = (),
        resumed_attempt: int | None = None,
        wait_for_execution_end: bool = False,
        poll_interval: float = 30.0,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        event_queue_url: str | None = None,
        safety_poll_interval: float | None = None,
    ) -> None:
        super().__init__()
        self.pipeline_execution_arn = pipeline_execution_arn
        self.step_name = step_name
        self.step_type = step_type
        self.branch_chain = [[b.condition, b.outcome] for b in branch_refs(branch_chain)]
        self.resumed_attempt = None if resumed_attempt is None else int(resumed_attempt)
        self.wait_for_execution_end = bool(wait_for_execution_end)
        self.poll_interval = float(poll_interval)
        self.aws = AwsConnectionArgs.of(aws_conn_id, region_name, verify, botocore_config)
        self.event_queue_url = event_queue_url or None
        self.safety_poll_interval = float(
            event_safety_poll_interval() if safety_poll_interval is None else safety_poll_interval
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "pipeline_execution_arn": self.pipeline_execution_arn,
                "step_name": self.step_name,
                "step_type": self.step_type,
                "branch_chain": self.branch_chain,
                "resumed_attempt": self.resumed_attempt,
                "wait_for_execution_end": self.wait_for_execution_end,
                "poll_interval": self.poll_interval,
                **self.aws.to_kwargs(),
                "event_queue_url": self.event_queue_url,
                "safety_poll_interval": self.safety_poll_interval,
            },
        )

    def _key(self) -> StepsPollerKey:
        pipeline = pipeline_name_from_arn(self.pipeline_execution_arn)
        if not pipeline:
            raise ValueError(f"{self.pipeline_execution_arn!r} is not a SageMaker pipeline execution ARN")
        return StepsPollerKey(
            PollerKey(pipeline, self.aws), self.pipeline_execution_arn, self.event_queue_url
        )

    def _event(self, status: str, execution_status: str | None, **extra: Any) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "pipeline_execution_arn": self.pipeline_execution_arn,
                "step_name": self.step_name,
                "execution_status": execution_status,
                **extra,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The event is yielded after the subscription is left: the shared pollers never wait on a
        # trigger that has already fired and is only waiting to be closed.
        yield await self._wait()

    async def _wait(self) -> TriggerEvent:
        try:
            key = self._key()
        except ValueError as err:
            return self._event("error", None, message=str(err))
        branches = branch_refs(self.branch_chain)
        last_reason: str | None = None
        poller = get_steps_poller(key)
        # No await between get_steps_poller and subscribe: the poller cannot end in between.
        interval = self.safety_poll_interval if self.event_queue_url else self.poll_interval
        async with poller.subscribe(interval) as snapshots:
            while True:
                snapshot = await snapshots.get()
                if snapshot.error is not None:
                    message = (
                        f"Could not read step {self.step_name} of {self.pipeline_execution_arn}: "
                        f"{snapshot.error}"
                    )
                    return self._event("error", None, message=message)
                verdict = step_verdict(
                    self.step_name,
                    execution_status=snapshot.execution_status,
                    steps=snapshot.steps,
                    branch_chain=branches,
                    resumed_attempt=self.resumed_attempt,
                )
                if verdict.reason != last_reason:
                    last_reason = verdict.reason
                    self.log.info("Step %s: %s", self.step_name, verdict.reason)
                if verdict.state == "running":
                    continue
                if (
                    verdict.state == "failed"
                    and self.wait_for_execution_end
                    and not (snapshot.execution_status and is_terminal(snapshot.execution_status))
                ):
                    continue
                return self._event(
                    verdict.state,
                    snapshot.execution_status,
                    reason=verdict.reason,
                    step=step_payload(verdict, step_name=self.step_name, step_type=self.step_type),
                )

    async def cleanup(self) -> None:
        """Nothing to release beyond the subscription, which is left by exiting ``run``."""


__getattr__ = renamed(
    __name__,
    globals(),
    {
        "PipelineStepTrigger": "SageMakerPipelineStepTrigger",
    },
)
