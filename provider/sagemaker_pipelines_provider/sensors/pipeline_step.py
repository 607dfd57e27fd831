"""SageMakerPipelineStepSensor: mirror one step of a pipeline execution as one Airflow task.

The step policy is :func:`~sagemaker_pipelines_provider.utils.step_status.step_verdict`; the task's end and
the resume on a new try are :class:`SageMakerPipelineStepSensor`'s contract; README "Mirror a pipeline's
steps in Airflow" shows the task group that uses it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowSkipException
from botocore.exceptions import ClientError

from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.links.pipeline import (
    EXECUTION_ARN_XCOM_KEY,
    SageMakerPipelineExecutionLink,
    execution_console_url,
)
from sagemaker_pipelines_provider.triggers.pipeline_step import (
    SageMakerPipelineStepTrigger,
    branch_refs,
    step_payload,
)
from sagemaker_pipelines_provider.utils.backoff import error_code
from sagemaker_pipelines_provider.utils.event_waits import (
    check_event_queue,
    checked_safety_poll_interval,
    event_trigger_kwargs,
    log_polling_wait,
)
from sagemaker_pipelines_provider.utils.events import trigger_event
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval
from sagemaker_pipelines_provider.utils.status import is_terminal
from sagemaker_pipelines_provider.utils.step_status import StepVerdict, step_verdict
from sagemaker_pipelines_provider.utils.tokens import idempotency_token

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions._internal.mixins import ResolveMixin

#: task_state_store key of the sensor's resume state (see :class:`ResumeState`).
STATE_KEY = "sagemaker_pipeline_step"


@dataclass
class ResumeState:
    """What survives between looks of one task instance (``task_state_store``).

    ``try_number``: the try the rest belongs to; ``resume_from``: this try means to resume the execution
    from that attempt of the step (pending until the execution has ended); ``resumed_attempt``: the
    execution was resumed from that attempt (Failed entries up to it are old attempts).
    """

    try_number: int = 0
    resume_from: int | None = None
    resumed_attempt: int | None = None

    @classmethod
    def load(cls, context: Context) -> ResumeState:
        store = context.get("task_state_store")
        value = store.get(STATE_KEY) if store is not None else None
        if not isinstance(value, Mapping):
            return cls()

        def number(name: str) -> int | None:
            raw = value.get(name)
            return None if raw is None else int(str(raw))

        return cls(
            try_number=number("try_number") or 0,
            resume_from=number("resume_from"),
            resumed_attempt=number("resumed_attempt"),
        )

    def save(self, context: Context) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, {k: v for k, v in asdict(self).items() if v is not None})


def retry_token(arn: str, steps: Sequence[Mapping[str, Any]]) -> str:
    """The RetryPipelineExecution token for the current failure of ``arn``: the same for every task."""
    failed = sorted(
        (str(s.get("StepName")), int(s.get("AttemptCount") or 1))
        for s in steps
        if s.get("StepStatus") in ("Failed", "Stopped")
    )
    return idempotency_token("mirror-retry", arn, [f"{name}#{attempts}" for name, attempts in failed])


class SageMakerPipelineStepSensor(AwsBaseSensor[SageMakerPipelineHook]):
    """Wait for one step of a pipeline execution and end as it did.

    The task ends as its step did (the one step policy,
    :func:`~sagemaker_pipelines_provider.utils.step_status.step_verdict`):

    - step Succeeded -> task **success**, returning the step (``name``, ``type``, ``status``, ``start``,
      ``end``, ``attempts``, ``failure_reason``, ``metadata``, ``outputs``) to XCom;
    - step Failed / Stopped -> task **failed**, the exception carrying the step's ``FailureReason``;
    - step in a Condition branch not taken, or not run in an execution that has ended -> task **skipped**.

    **Resume.** A *new try* of the task (a retry, or a user clearing it) that finds its step Failed resumes
    the execution: once the execution has ended Failed, the task calls RetryPipelineExecution (succeeded steps
    are kept, failed ones re-run) and waits for the re-run of its step. The first try never resumes: it
    reports the failure. Guarantees:

    - idempotent across tasks and tries: the ``ClientRequestToken`` is derived
      (:func:`~sagemaker_pipelines_provider.utils.tokens.idempotency_token`) from the execution ARN and the
      failed steps with their attempt counts, so every step task resuming the same failure sends the same
      request, and an execution another task already resumed is not retried again (it is no longer Failed);
    - a try resumes at most once, from the attempt it found failed; a re-run that fails again fails the try
      (clear it again to resume again);
    - the execution is never started anew here (that is the start task's job) and never stopped.

    The attempt resumed from is kept in ``task_state_store``, so a worker that dies after the retry call
    does not lose it: the next try or reschedule waits for the re-run instead of mistaking the old attempt
    for a new failure.

    Waiting is deferrable by default (:class:`SageMakerPipelineStepTrigger` on the shared step poller);
    ``deferrable=False`` pokes (``mode="reschedule"`` frees the worker slot).

    :param pipeline_execution_arn: the execution. Templated (the task group pulls it from the start
        task's XCom key ``pipeline_execution_arn``).
    :param step_name: the step's ``Name`` in the definition. Templated.
    :param step_type: the step's ``Type`` (reported in the returned step and in messages).
    :param branch_chain: the Condition branches enclosing the step, innermost first:
        ``[(condition_step, outcome), ...]`` (outcome True for ``IfSteps``).
    :param resume_failed: a new try that finds the step Failed resumes the execution (default True).
    :param deferrable: wait in the triggerer (default True).
    :param event_queue_url: an SQS queue fed by SageMaker's status events (``docs/events.md``): any event
        of the execution wakes the deferred wait, which otherwise reads the steps only every
        ``safety_poll_interval``. Checked (GetQueueAttributes) at the start of ``execute``; poking polls
        as without it. Templated.
    :param safety_poll_interval: seconds between the safety polls of an event-driven wait; default
        ``[sagemaker_pipelines] event_safety_poll_interval`` (600).
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on every Amazon provider sensor.

    ``poke_interval`` is the poll interval in every mode (default ``[sagemaker_pipelines]
    default_poll_interval``, 30 s); ``timeout`` bounds the wait (the deferral timeout when deferred).
    """

    aws_hook_class = SageMakerPipelineHook
    template_fields: Sequence[str] = aws_template_fields(
        "pipeline_execution_arn", "step_name", "event_queue_url"
    )
    operator_extra_links = (SageMakerPipelineExecutionLink(),)
    ui_color = "#e4eef0"

    def __init__(
        self,
        *,
        pipeline_execution_arn: str | ResolveMixin,
        step_name: str,
        step_type: str | None = None,
        branch_chain: Sequence[Any] = (),
        resume_failed: bool = True,
        deferrable: bool = True,
        event_queue_url: str | None = None,
        safety_poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", default_poll_interval())
        super().__init__(**kwargs)
        self.pipeline_execution_arn = cast(str, pipeline_execution_arn)  # a str once rendered
        self.step_name = step_name
        self.step_type = step_type
        self.branch_chain = [[b.condition, b.outcome] for b in branch_refs(branch_chain)]
        self.resume_failed = resume_failed
        self.deferrable = deferrable
        self.event_queue_url = event_queue_url
        self.safety_poll_interval = checked_safety_poll_interval(safety_poll_interval)

    # ---------------------------------------------------------------------------------------------------

    def _arn(self) -> str:
        arn = str(self.pipeline_execution_arn or "").strip()
        if not arn or arn == "None":
            raise AirflowException(
                f"No pipeline execution ARN for step {self.step_name}: the task that starts the execution "
                f"pushes it under the XCom key {EXECUTION_ARN_XCOM_KEY!r}; did it run?"
            )
        return arn

    def _read(self, arn: str) -> tuple[str, list[dict[str, Any]]]:
        hook = self.hook
        status = str(hook.describe_pipeline_execution(arn)["PipelineExecutionStatus"])
        return status, hook.list_pipeline_execution_steps(arn)

    def _decide(self, context: Context, arn: str, first_look: bool) -> tuple[StepVerdict, ResumeState]:
        """Read the step, apply the policy and the resume rule; ``running`` means keep waiting."""
        execution_status, steps = self._read(arn)
        state = ResumeState.load(context)
        try_number = int(getattr(context["ti"], "try_number", 1) or 1)
        if state.try_number != try_number:
            state = ResumeState(try_number=try_number, resumed_attempt=state.resumed_attempt)
        verdict = step_verdict(
            self.step_name,
            execution_status=execution_status,
            steps=steps,
            branch_chain=branch_refs(self.branch_chain),
            resumed_attempt=state.resumed_attempt,
        )
        if verdict.state == "failed" and first_look and try_number > 1 and self.resume_failed:
            state.resume_from = verdict.attempts
        if (
            state.resume_from is not None
            and verdict.state == "failed"
            and verdict.attempts <= state.resume_from
        ):
            verdict = self._resume(arn, execution_status, steps, verdict, state)
        elif state.resume_from is not None and verdict.state != "running":
            state.resume_from = None  # someone else resumed it and the re-run is decided
        state.save(context)
        return verdict, state

    def _resume(
        self,
        arn: str,
        execution_status: str,
        steps: list[dict[str, Any]],
        verdict: StepVerdict,
        state: ResumeState,
    ) -> StepVerdict:
        """Resume the execution from the step's failed attempt; return the verdict to act on."""
        if not is_terminal(execution_status):
            return StepVerdict("running", "step failed; waiting for the execution to end to resume it")
        if execution_status != "Failed":
            state.resume_from = None
            return StepVerdict(
                "failed",
                f"{verdict.reason} (the execution ended {execution_status}, which cannot be resumed; "
                "clear the group's start task to run a new execution)",
                verdict.entry,
            )
        self.log.info(
            "Step %s failed at attempt %d: resuming execution %s with RetryPipelineExecution",
            self.step_name,
            verdict.attempts,
            arn,
        )
        try:
            self.hook.retry_pipeline_execution(
                arn, client_request_token=retry_token(arn, steps), wait_for_capacity=True
            )
        except ClientError as err:
            # ConflictException: another step task resumed it first (it is no longer Failed).
            current = self.hook.describe_pipeline_execution(arn)["PipelineExecutionStatus"]
            if error_code(err) != "ConflictException" or current == "Failed":
                raise
            self.log.info("Execution %s was already resumed (%s)", arn, current)
        state.resumed_attempt = state.resume_from
        state.resume_from = None
        return StepVerdict("running", f"resumed from attempt {verdict.attempts}", verdict.entry)

    def _finish(self, context: Context, arn: str, verdict: StepVerdict, step: Any = None) -> Any:
        """Turn a final verdict into the task's end: return the step, skip or fail."""
        if verdict.state == "success":
            return (
                step
                if step is not None
                else step_payload(verdict, step_name=self.step_name, step_type=self.step_type)
            )
        if verdict.state == "skipped":
            raise AirflowSkipException(verdict.reason)
        label = f"{self.step_name} ({self.step_type})" if self.step_type else self.step_name
        message = f"Step {label} of pipeline execution {arn} failed: {verdict.reason}"
        url = execution_console_url(arn)
        if url:
            message += f"\nConsole: {url}"
        if self.resume_failed:
            message += "\nClear this task to resume the execution (RetryPipelineExecution) from this step."
        raise AirflowException(message)

    # ---------------------------------------------------------------------------------------------------
    # entry points

    def execute(self, context: Context) -> Any:
        arn = self._arn()
        check_event_queue(self)
        context["ti"].xcom_push(key=EXECUTION_ARN_XCOM_KEY, value=arn)
        if not self.deferrable:
            log_polling_wait(self.log, self.event_queue_url)
            return super().execute(context)
        verdict, state = self._decide(context, arn, first_look=True)
        if verdict.state != "running":
            return self._finish(context, arn, verdict)
        self._defer(arn, state)
        return None

    def poke(self, context: Context) -> PokeReturnValue | bool:
        arn = self._arn()
        first_look = ResumeState.load(context).try_number != int(context["ti"].try_number or 1)
        verdict, _ = self._decide(context, arn, first_look=first_look)
        if verdict.state == "running":
            self.log.info("Step %s: %s", self.step_name, verdict.reason)
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, arn, verdict))

    def _defer(self, arn: str, state: ResumeState) -> None:
        self.defer(
            trigger=SageMakerPipelineStepTrigger(
                arn,
                self.step_name,
                step_type=self.step_type,
                branch_chain=self.branch_chain,
                resumed_attempt=state.resumed_attempt,
                wait_for_execution_end=state.resume_from is not None,
                poll_interval=float(self.poke_interval),
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
                **event_trigger_kwargs(self.event_queue_url, self.safety_poll_interval),
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Deferral target of :class:`SageMakerPipelineStepTrigger`: apply its verdict (a failure may
        resume)."""
        arn = self._arn()
        event = trigger_event(event, "SageMakerPipelineStepTrigger")
        status = event.get("status")
        if status in ("success", "skipped"):
            return self._finish(
                context,
                arn,
                StepVerdict(status, str(event.get("reason") or "")),
                step=event.get("step"),
            )
        # failed: judge again on fresh data, so a pending resume happens now that the execution ended.
        verdict, state = self._decide(context, arn, first_look=False)
        if verdict.state == "running":
            self._defer(arn, state)
            return None
        return self._finish(context, arn, verdict)


__all__ = ["STATE_KEY", "ResumeState", "SageMakerPipelineStepSensor", "retry_token"]
