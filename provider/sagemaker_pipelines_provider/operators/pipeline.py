"""SageMakerPipelineOperator: run one SageMaker pipeline execution to a terminal state, exactly once.

What a task instance of this operator guarantees (its identity is ``(dag_id, run_id, task_id,
map_index)``):

**Idempotent start.** The ``ClientRequestToken`` of StartPipelineExecution is derived from the identity,
the pipeline and a start counter kept in ``task_state_store``; the execution ARN is stored there right
after the start returns, before any waiting. A worker that dies between the start call and storing the
ARN leaves the counter unchanged, so the next try sends the same token and SageMaker hands back the same
execution: no duplicate. (This closes the gap ``ResumableJobMixin`` documents between submit and
persist, which is why that mixin is not used: its "terminal failure -> resubmit fresh" rule would also
forbid resuming a Failed execution.)

**Re-attach on retry or clear** (the stored ARN survives both):

- ``Executing``: keep waiting on it;
- ``Stopping`` (typically: a clear or mark-failed killed the previous try, which stopped it): wait until
  it has stopped, then apply the rule of the status it ended in;
- ``Succeeded``: return its result, start nothing;
- ``Failed``: ``on_failed_retry="resume"`` (default) calls RetryPipelineExecution (succeeded steps are
  kept, failed ones re-run); ``"restart"`` starts a fresh execution;
- ``Stopped``: a fresh execution.

A fresh execution after a terminal one first bumps the counter in ``task_state_store`` (then starts with
the new token), so that restart is itself crash-safe.

**Before any start** the parameters are checked against the pipeline's definition (unknown names, wrong
Integer/Float/Boolean values, required parameters missing): the task fails without retry, listing the
pipeline's parameters and their types, and nothing is started.

**Waiting**: deferrable (``PipelineExecutionTrigger``), synchronous polling, or not at all
(``wait_for_completion=False``). Every mode applies the one status policy
(:func:`~sagemaker_pipelines_provider.utils.status.execution_outcome`): Succeeded is success; Failed and
Stopped fail the task (``allow_stopped=True`` accepts Stopped). ``ResourceLimitExceeded`` at start (too many
running executions) waits with backoff — deferred when deferrable — instead of failing.

**Kill** (``stop_on_kill=True``) stops the execution this task instance started (or re-attached to), and
only on a real kill (the rules: :mod:`~sagemaker_pipelines_provider.triggers.kill`):

- synchronous: ``on_kill``. Airflow calls it on SIGTERM (mark failed / success, clear, DAG run timeout:
  the supervisor terminates the task) and on ``execution_timeout``;
- deferred: the trigger's ``on_kill``. Airflow 3.3's triggerer calls it when it cancels a trigger whose
  task instance left the deferred state by a user action or the scheduler (mark failed / success, clear,
  DAG run timeout) — and also when it lost the trigger to another triggerer, which is why the trigger
  first checks that the task instance is no longer deferred. ``execution_timeout`` is not enforced by
  Airflow while deferred, so it becomes the trigger's ``deadline``: at the deadline the trigger stops the
  execution and the task fails with a timeout. The deferral ``timeout`` (deadline + 2 min) is a backstop:
  if the scheduler times the deferral out (no ``on_kill`` then), :meth:`resume_execution` stops the
  execution on the worker;
- deferred in the task's own process (``dag.test()`` / ``airflow dags test`` run the trigger in line): a
  SIGTERM reaches this operator's ``on_kill`` through the handler Airflow's task runner leaves installed;
  it stops the execution, then ends the process (exit status 143) instead of letting the wait go on. A
  SIGTERM of a worker process after its task deferred (the wait is the triggerer's now) stops nothing;
- not covered: a worker killed with SIGKILL / lost (no code runs: the next try re-attaches), a kill while
  the trigger is not running in any triggerer, a kill between the start call and the ARN being known
  (the next try re-attaches through the token), a triggerer restart or hand-over (on purpose: the
  execution keeps running and the trigger resumes elsewhere).

**Result** (return value / XCom): see
:func:`~sagemaker_pipelines_provider.hooks.pipeline.build_execution_result`.
The ARN is also pushed under the XCom key ``pipeline_execution_arn`` as soon as the execution exists;
:attr:`SageMakerPipelineOperator.execution_arn` is a reference to it for other tasks' arguments.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import conf
from airflow.sdk.definitions.xcom_arg import XComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout
from botocore.exceptions import ClientError

from sagemaker_pipelines_provider.hooks.pipeline import (
    PipelineParametersInvalid,
    SageMakerPipelineHook,
    build_execution_result,
    failure_message,
    step_transitions,
)
from sagemaker_pipelines_provider.links.pipeline import EXECUTION_ARN_XCOM_KEY, SageMakerPipelineExecutionLink
from sagemaker_pipelines_provider.references import PipelineValue
from sagemaker_pipelines_provider.triggers.kill import is_waited_on_here
from sagemaker_pipelines_provider.triggers.pipeline import PipelineExecutionTrigger
from sagemaker_pipelines_provider.utils.backoff import (
    BackoffPolicy,
    capacity_delay,
    error_code,
    is_capacity_error,
)
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome
from sagemaker_pipelines_provider.utils.tokens import idempotency_token

if TYPE_CHECKING:
    from airflow.sdk import Context

#: task_state_store key holding the operator's start state (see :class:`StartState`).
STATE_KEY = "sagemaker_pipeline_execution"
#: Extra time given to Airflow's deferral timeout beyond the trigger's own deadline (a backstop).
DEFERRAL_TIMEOUT_GRACE = dt.timedelta(minutes=2)


@dataclass
class StartState:
    """What survives between tries of one task instance (stored as a dict in ``task_state_store``).

    ``counter`` numbers the fresh executions this task instance asked for (it is part of the start token);
    ``arn`` is the current execution (None between bumping the counter and the start returning);
    ``retries`` numbers the RetryPipelineExecution calls (part of the retry token).
    """

    counter: int = 0
    arn: str | None = None
    retries: int = 0

    @classmethod
    def load(cls, context: Context) -> StartState:
        store = context.get("task_state_store")
        value = store.get(STATE_KEY) if store is not None else None
        if not isinstance(value, Mapping):
            return cls()
        arn = value.get("arn")
        return cls(
            counter=int(str(value.get("counter") or 0)),
            arn=str(arn) if arn else None,
            retries=int(str(value.get("retries") or 0)),
        )

    def save(self, context: Context) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, {k: v for k, v in asdict(self).items() if v is not None})


class SageMakerPipelineOperator(AwsBaseOperator[SageMakerPipelineHook]):
    """Start a SageMaker pipeline execution (idempotently) and wait for it to end.

    :param pipeline_name: pipeline name or ARN. Templated.
    :param parameters: ``{name: value}`` with JSON scalar values; checked against the pipeline's
        definition and converted to the strings SageMaker expects. Templated (rendering from the data
        interval is the common case).
    :param display_name: execution display name (1-82 characters, letters, digits, hyphens). Templated.
    :param description: execution description. Templated.
    :param parallelism: ``MaxParallelExecutionSteps`` for the execution. Templated.
    :param selective_steps: run only these steps (SelectiveExecutionConfig; SageMaker takes the other
        steps' outputs from the latest successful execution). Templated.
    :param wait_for_completion: wait for a terminal status (True) or return once started (False).
    :param deferrable: wait in the triggerer; default from ``[operators] default_deferrable``.
    :param poll_interval: seconds between status polls; default ``[sagemaker_pipelines]
        default_poll_interval`` (30): see :mod:`~sagemaker_pipelines_provider.utils.poll_interval`.
    :param allow_stopped: a Stopped execution is a success instead of a failure.
    :param on_failed_retry: on a retry that finds this task's execution Failed: ``"resume"`` calls
        RetryPipelineExecution, ``"restart"`` starts a fresh execution.
    :param stop_on_kill: stop the execution this task started when the task is killed.
    :param backoff_policy: retry bounds for throttling/5xx/capacity errors (tests pass small delays).
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on every Amazon provider operator.
    """

    aws_hook_class = SageMakerPipelineHook
    template_fields: Sequence[str] = aws_template_fields(
        "pipeline_name", "parameters", "display_name", "description", "parallelism", "selective_steps"
    )
    template_fields_renderers = {"parameters": "json", "selective_steps": "json"}
    operator_extra_links = (SageMakerPipelineExecutionLink(),)
    ui_color = "#f0eee4"

    def __init__(
        self,
        *,
        pipeline_name: str,
        parameters: Mapping[str, Any] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        parallelism: int | None = None,
        selective_steps: Sequence[str] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | None = None,
        allow_stopped: bool = False,
        on_failed_retry: Literal["resume", "restart"] = "resume",
        stop_on_kill: bool = True,
        backoff_policy: BackoffPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_failed_retry not in ("resume", "restart"):
            raise ValueError(f"on_failed_retry must be 'resume' or 'restart', got {on_failed_retry!r}")
        self.pipeline_name = pipeline_name
        self.parameters = parameters
        self.display_name = display_name
        self.description = description
        self.parallelism = parallelism
        self.selective_steps = selective_steps
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval if poll_interval is not None else default_poll_interval()
        self.allow_stopped = allow_stopped
        self.on_failed_retry = on_failed_retry
        self.stop_on_kill = stop_on_kill
        self.backoff_policy = backoff_policy
        self._execution_arn: str | None = None
        self._identity: tuple[str, str, str, int] | None = None
        #: True from the moment this task defers until it resumes: its wait is a trigger's then.
        self._deferred = False

    @property
    def execution_arn(self) -> PipelineValue:
        """A reference to this task's execution ARN (the XCom ``pipeline_execution_arn``, pushed as soon as
        the execution has started), for the templated fields of other tasks; they then run after this one.

        With ``wait_for_completion=False`` this task ends once the execution has started, so the tasks
        reading it run *while* the execution runs: a ``callback_handler`` answering its Callback step, a
        ``SageMakerPipelineExecutionSensor`` waiting for its end. (A ``callback_handler`` routed on a task
        that waits for completion is refused: each would wait for the other.)
        """
        return PipelineValue(XComArg(self, key=EXECUTION_ARN_XCOM_KEY), description="execution_arn")

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        return {**super()._hook_parameters, "backoff_policy": self.backoff_policy}

    # ---------------------------------------------------------------------------------------------------
    # identity and tokens

    def _task_identity(self, context: Context) -> tuple[str, str, str, int]:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        self._identity = (ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else int(map_index))
        return self._identity

    def _start_token(self, context: Context, counter: int) -> str:
        return idempotency_token(self._task_identity(context), self.pipeline_name, "start", counter)

    def _retry_token(self, context: Context, arn: str, retries: int) -> str:
        return idempotency_token(self._task_identity(context), "retry", arn, retries)

    def _stop_token(self, arn: str) -> str:
        return idempotency_token(self._identity or (), "stop", arn)

    # ---------------------------------------------------------------------------------------------------
    # entry points

    def execute(self, context: Context) -> dict[str, Any] | None:
        self._deferred = False
        deadline = None
        if self.execution_timeout:
            deadline = (dt.datetime.now(dt.UTC) + self.execution_timeout).isoformat()
        return self._start_or_attach(context, deadline=deadline, capacity_attempt=0)

    def resume_after_capacity_wait(
        self,
        context: Context,
        event: Any = None,
        deadline: str | None = None,
        capacity_attempt: int = 0,
    ) -> dict[str, Any] | None:
        """Deferral target after ``ResourceLimitExceeded``: try the start (or retry) again."""
        return self._start_or_attach(context, deadline=deadline, capacity_attempt=capacity_attempt)

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Deferral target of :class:`PipelineExecutionTrigger`: apply its verdict."""
        if not event:
            raise AirflowException("PipelineExecutionTrigger fired without an event payload.")
        arn = event.get("pipeline_execution_arn")
        if arn:
            self._execution_arn = str(arn)
            self._task_identity(context)
        status = event.get("status")
        if status == "success":
            return dict(event["result"])
        if status == "timeout":
            raise AirflowTaskTimeout(event.get("message") or f"execution_timeout passed waiting for {arn}")
        raise AirflowException(event.get("message") or f"Waiting for {arn} failed: {event}")

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Also stop the execution when Airflow times the deferral out (the triggerer missed the deadline)."""
        self._deferred = False
        if next_method == "__fail__" and (next_kwargs or {}).get("error") == "Trigger timeout":
            arn = StartState.load(context).arn
            if arn:
                self._execution_arn = arn
                self._task_identity(context)
                self.on_kill()
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """Stop the execution this task started or re-attached to (``stop_on_kill``).

        Never raises, except :class:`SystemExit` (143) after stopping when the task was deferred and its
        trigger waits in this very process (``dag.test()``): Airflow's task runner calls ``on_kill`` from
        the SIGTERM handler it leaves installed, and would otherwise let the wait go on. When the task was
        deferred and its wait is not here (a worker process winding down after deferring), a SIGTERM of
        the process is no kill of the task: the execution keeps running and the triggerer keeps waiting.
        """
        arn = self._execution_arn
        if not (self.stop_on_kill and arn):
            return
        if not self._deferred:
            self._stop(arn)
            return
        if not is_waited_on_here(arn):
            self.log.info(
                "This process was killed after the task deferred: execution %s keeps running; the trigger "
                "stops it only if the task instance itself is killed",
                arn,
            )
            return
        self._stop(arn)
        self.log.info("Killed while waiting for %s in this process: ending the process", arn)
        raise SystemExit(128 + signal.SIGTERM)

    def _stop(self, arn: str) -> None:
        try:
            stopped = self.hook.stop_pipeline_execution(arn, client_request_token=self._stop_token(arn))
            self.log.info("%s pipeline execution %s", "Stopped" if stopped else "Already ended:", arn)
        except Exception:
            self.log.exception("Could not stop pipeline execution %s; stop it from the console", arn)

    def execution_started(self, context: Context, pipeline_execution_arn: str) -> None:
        """Called once StartPipelineExecution returned, before the ARN is recorded anywhere.

        Does nothing; a subclass may extend it. Whatever happens here (even the worker dying) cannot cause a
        second execution: the next try sends the same ClientRequestToken.
        """

    # ---------------------------------------------------------------------------------------------------
    # start, re-attach, resume

    def _start_or_attach(
        self, context: Context, *, deadline: str | None, capacity_attempt: int
    ) -> dict[str, Any] | None:
        hook = self.hook
        state = StartState.load(context)
        if state.arn:
            status = hook.describe_pipeline_execution(state.arn)["PipelineExecutionStatus"]
            self.log.info("This task instance already has execution %s (%s)", state.arn, status)
            while status == "Stopping":  # e.g. a clear killed the previous try: let the stop finish first
                time.sleep(min(self.poll_interval, 5.0))
                status = hook.describe_pipeline_execution(state.arn)["PipelineExecutionStatus"]
            if status == "Executing":
                return self._attached(context, state.arn, deadline)
            if status == "Succeeded":
                self._announce(context, state.arn)
                self.log.info(
                    "Execution %s already succeeded: returning its result, starting nothing", state.arn
                )
                return self._result_now(state.arn)
            if status == "Failed" and self.on_failed_retry == "resume":
                return self._retry_failed(context, state, deadline, capacity_attempt)
            self.log.info("Execution %s is %s: starting a fresh execution", state.arn, status)
            state = StartState(counter=state.counter + 1, arn=None, retries=0)
            state.save(context)  # the new counter is recorded before the start: a crash re-sends its token
        return self._start_fresh(context, state, deadline, capacity_attempt)

    def _start_fresh(
        self, context: Context, state: StartState, deadline: str | None, capacity_attempt: int
    ) -> dict[str, Any] | None:
        hook = self.hook
        try:
            parameters = hook.validate_parameters(self.pipeline_name, self.parameters)
        except PipelineParametersInvalid as err:
            raise AirflowFailException(str(err)) from err
        try:
            arn = hook.start_pipeline_execution(
                self.pipeline_name,
                client_request_token=self._start_token(context, state.counter),
                parameters=parameters,
                display_name=self.display_name,
                description=self.description,
                parallelism=self.parallelism,
                selective_steps=self.selective_steps,
                wait_for_capacity=not self.deferrable,
            )
        except ClientError as err:
            if self.deferrable and is_capacity_error(err):
                self._defer_for_capacity(deadline, capacity_attempt, "start")
            if error_code(err) == "ConflictException":
                err.add_note(
                    "An earlier try of this task instance already started an execution of "
                    f"{self.pipeline_name} with this ClientRequestToken but other arguments (its ARN was "
                    "never recorded, and the parameters, display name or description rendered differently "
                    "since). Render them as on that try, or find that execution in the console and stop it."
                )
            raise
        self.execution_started(context, arn)
        state.arn = arn
        state.save(context)
        self.log.info("Started pipeline execution %s of %s", arn, self.pipeline_name)
        return self._attached(context, arn, deadline)

    def _retry_failed(
        self, context: Context, state: StartState, deadline: str | None, capacity_attempt: int
    ) -> dict[str, Any] | None:
        assert state.arn is not None
        arn = state.arn
        state.retries += 1
        state.save(context)  # recorded before the call: the next try never re-sends a token that succeeded
        self.log.info(
            "Execution %s failed: resuming it with RetryPipelineExecution (succeeded steps kept)", arn
        )
        try:
            self.hook.retry_pipeline_execution(
                arn,
                client_request_token=self._retry_token(context, arn, state.retries),
                parallelism=self.parallelism,
                wait_for_capacity=not self.deferrable,
            )
        except ClientError as err:
            if self.deferrable and is_capacity_error(err):
                self._defer_for_capacity(deadline, capacity_attempt, "retry")
            raise
        return self._attached(context, arn, deadline)

    def _defer_for_capacity(self, deadline: str | None, capacity_attempt: int, what: str) -> None:
        delay = capacity_delay(capacity_attempt, self.backoff_policy or BackoffPolicy())
        self.log.info(
            "Pipeline %s has too many running executions (ResourceLimitExceeded): deferring the %s for %.1fs",
            self.pipeline_name,
            what,
            delay,
        )
        self._deferred = True
        self.defer(
            trigger=TimeDeltaTrigger(dt.timedelta(seconds=delay)),
            method_name="resume_after_capacity_wait",
            kwargs={"deadline": deadline, "capacity_attempt": capacity_attempt + 1},
        )

    # ---------------------------------------------------------------------------------------------------
    # waiting

    def _announce(self, context: Context, arn: str) -> None:
        self._execution_arn = arn
        self._task_identity(context)
        context["ti"].xcom_push(key=EXECUTION_ARN_XCOM_KEY, value=arn)

    def _step_types(self) -> dict[str, str]:
        try:
            return self.hook.describe_pipeline(self.pipeline_name).step_types
        except Exception as err:  # only the result's step types are lost
            self.log.warning(
                "Could not read the definition of %s for step types: %s", self.pipeline_name, err
            )
            return {}

    def _result_now(self, arn: str) -> dict[str, Any]:
        return self.hook.get_execution_result(arn, step_types=self._step_types())

    def _attached(self, context: Context, arn: str, deadline: str | None) -> dict[str, Any] | None:
        self._announce(context, arn)
        if not self.wait_for_completion:
            return self._result_now(arn)
        if self.deferrable:
            self._defer_until_done(arn, deadline)
        return self._wait_polling(arn)

    def _defer_until_done(self, arn: str, deadline: str | None) -> None:
        timeout = None
        if deadline:
            left = dt.datetime.fromisoformat(deadline) - dt.datetime.now(dt.UTC)
            timeout = max(left, dt.timedelta(0)) + DEFERRAL_TIMEOUT_GRACE
        trigger = PipelineExecutionTrigger(
            arn,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            poll_interval=self.poll_interval,
            allow_stopped=self.allow_stopped,
            stop_on_kill=self.stop_on_kill,
            stop_token=self._stop_token(arn),
            deadline=deadline,
            step_types=self._step_types(),
        )
        self._deferred = True  # from here on a kill of this process is not necessarily a kill of the task
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)

    def _wait_polling(self, arn: str) -> dict[str, Any]:
        hook = self.hook
        step_types = self._step_types()
        seen_steps: dict[str, str] = {}
        last_status: str | None = None
        while True:
            describe = hook.describe_pipeline_execution(arn)
            status = describe["PipelineExecutionStatus"]
            if status != last_status:
                self.log.info("Pipeline execution %s is %s", arn, status)
                last_status = status
            outcome = execution_outcome(status, allow_stopped=self.allow_stopped)
            steps = hook.list_pipeline_execution_steps(arn)
            seen_steps, lines = step_transitions(seen_steps, steps, step_types)
            for line in lines:
                self.log.info("%s", line)
            if outcome is Outcome.RUNNING:
                time.sleep(self.poll_interval)
                continue
            parameters = hook.list_pipeline_parameters_for_execution(arn)
            result = build_execution_result(describe, steps, parameters, step_types=step_types)
            if outcome is Outcome.SUCCESS:
                return result
            raise AirflowException(failure_message(result))
