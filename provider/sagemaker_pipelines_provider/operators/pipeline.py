"""SageMakerPipelineOperator: run one SageMaker pipeline execution to a terminal state, exactly once.

The guarantees (idempotent start, re-attach on retry or clear, the state's lifetime, capacity waits,
stop on a real kill) are README "Starting and waiting"; the result is ``docs/result-schema.md``. Here,
the order of the calls keeps them: each step that could be cut short by a crash says why it is safe.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk import conf
from airflow.sdk.definitions.xcom_arg import XComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowTaskTimeout
from airflow.sdk.execution_time.context import NEVER_EXPIRE
from botocore.exceptions import ClientError

from sagemaker_pipelines_provider.hooks.pipeline import PipelineParametersInvalid, SageMakerPipelineHook
from sagemaker_pipelines_provider.links.pipeline import EXECUTION_ARN_XCOM_KEY, SageMakerPipelineExecutionLink
from sagemaker_pipelines_provider.references import PipelineValue
from sagemaker_pipelines_provider.results import ExecutionResult, execution_verdict, step_transitions
from sagemaker_pipelines_provider.triggers.capacity import SageMakerPipelineCapacityWaitTrigger
from sagemaker_pipelines_provider.triggers.kill import is_waited_on_here
from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger
from sagemaker_pipelines_provider.utils.backoff import (
    BackoffPolicy,
    capacity_delay,
    error_code,
    is_capacity_error,
)
from sagemaker_pipelines_provider.utils.deadline import parse_deadline, seconds_left
from sagemaker_pipelines_provider.utils.event_waits import (
    check_event_queue,
    checked_safety_poll_interval,
    event_trigger_kwargs,
    log_polling_wait,
)
from sagemaker_pipelines_provider.utils.events import execution_event_result
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome
from sagemaker_pipelines_provider.utils.tokens import idempotency_token, stop_token

if TYPE_CHECKING:
    from airflow.sdk import Context

T = TypeVar("T")

#: task_state_store key holding the operator's start state (see :class:`StartState`).
STATE_KEY = "sagemaker_pipeline_execution"
#: Extra time given to Airflow's deferral timeout beyond the trigger's own deadline (a backstop).
DEFERRAL_TIMEOUT_GRACE = dt.timedelta(minutes=2)
#: A start that returns an execution created this long (or more) before the request returned one an
#: earlier try created with the same token (its record in ``task_state_store`` was lost). The margin
#: absorbs clock skew between the worker and SageMaker; a new execution is never that old.
REUSED_TOKEN_MARGIN = dt.timedelta(seconds=5)


@dataclass
class StartState:
    """What survives between tries of one task instance (stored as a dict in ``task_state_store``).

    ``counter`` numbers the fresh executions this task instance asked for (it is part of the start token);
    ``arn`` is the current execution (None between bumping the counter and the start returning);
    ``retries`` numbers the RetryPipelineExecution calls (part of the retry token). ``(counter, retries)``
    is the attempt, part of the stop token.

    Saved with ``retention=NEVER_EXPIRE``: Airflow's cleanup of expired entries never removes it. When
    ``[state_store] clear_on_success`` wipes it, the deterministic tokens stand in: the first start token is
    sent again and an answer created before the request (by more than :data:`REUSED_TOKEN_MARGIN`) is an
    earlier try's execution, re-attached to; the retry counter is lost too, so a resume may repeat an
    earlier retry's token, which SageMaker takes for a repeat (the task fails, its next try retries anew).

    The ARN is stored right after the start returns, before any wait, and the counter only moves before a
    fresh start: the gap the Amazon provider's ``ResumableJobMixin`` leaves between submit and persist is
    closed by the token (and that mixin's "terminal failure -> resubmit fresh" would forbid a resume).
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
            value = {k: v for k, v in asdict(self).items() if v is not None}
            store.set(STATE_KEY, value, retention=NEVER_EXPIRE)


@dataclass(frozen=True)
class CapacityWait:
    """Where a wait for capacity (``ResourceLimitExceeded``) stands: carried through deferrals.

    ``attempt`` counts the refused calls so far (it sets the next backoff delay); ``since`` is the ISO time
    of the first refusal of this try (the capacity budget counts from it).
    """

    attempt: int = 0
    since: str | None = None


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
    :param event_queue_url: an SQS queue fed by the EventBridge rule of SageMaker's status events
        (``docs/events.md``): a deferred wait wakes on its events and polls only every
        ``safety_poll_interval``. Checked (GetQueueAttributes) before anything starts. A non-deferrable
        wait polls as without it. Templated.
    :param safety_poll_interval: seconds between the safety polls of an event-driven wait; default
        ``[sagemaker_pipelines] event_safety_poll_interval`` (600).
    :param allow_stopped: a Stopped execution is a success instead of a failure — when waiting and when
        a retry or clear re-attaches to it (it is then the result; nothing new starts).
    :param on_failed_retry: on a retry that finds this task's execution Failed: ``"resume"`` calls
        RetryPipelineExecution, ``"restart"`` starts a fresh execution.
    :param stop_on_kill: stop the execution this task started when the task is killed.
    :param backoff_policy: retry bounds for throttling/5xx/capacity errors (tests pass small delays);
        its ``capacity_budget_seconds`` bounds a wait for capacity besides ``execution_timeout``.
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on every Amazon provider operator.
    """

    aws_hook_class = SageMakerPipelineHook
    template_fields: Sequence[str] = aws_template_fields(
        "pipeline_name",
        "parameters",
        "display_name",
        "description",
        "parallelism",
        "selective_steps",
        "event_queue_url",
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
        event_queue_url: str | None = None,
        safety_poll_interval: float | None = None,
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
        self.event_queue_url = event_queue_url
        self.safety_poll_interval = checked_safety_poll_interval(safety_poll_interval)
        self.allow_stopped = allow_stopped
        self.on_failed_retry = on_failed_retry
        self.stop_on_kill = stop_on_kill
        self.backoff_policy = backoff_policy
        self._execution_arn: str | None = None
        self._identity: tuple[str, str, str, int] | None = None
        #: The start state of the current attempt (its ``(counter, retries)`` is part of the stop token).
        self._state: StartState | None = None
        #: True from the moment this task defers until it resumes: its wait is a trigger's then.
        self._deferred = False
        #: ``(arn, {name: value})``: the parameters of the execution this try started (known without a call).
        self._started_parameters: tuple[str, dict[str, str]] | None = None

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
        state = self._state or StartState()
        return stop_token(self._identity or (), arn, counter=state.counter, retries=state.retries)

    # ---------------------------------------------------------------------------------------------------
    # entry points

    def execute(self, context: Context) -> ExecutionResult | None:
        self._deferred = False
        check_event_queue(self)  # before anything starts
        deadline = None
        if self.execution_timeout:
            deadline = (dt.datetime.now(dt.UTC) + self.execution_timeout).isoformat()
        return self._start_or_attach(context, deadline=deadline, capacity=CapacityWait())

    def resume_after_capacity_wait(
        self,
        context: Context,
        event: Any = None,
        deadline: str | None = None,
        capacity_attempt: int = 0,
        capacity_since: str | None = None,
    ) -> ExecutionResult | None:
        """Deferral target after ``ResourceLimitExceeded``: try the start (or retry) again, unless the
        capacity wait is over (then the task fails and nothing is started).

        The kwargs also arrive in the event (:class:`SageMakerPipelineCapacityWaitTrigger` carries them):
        ``dag.test()`` replaces the kwargs by the event.
        """
        carried = event if isinstance(event, Mapping) else {}
        deadline = deadline or carried.get("deadline")
        capacity = CapacityWait(
            capacity_attempt or int(carried.get("capacity_attempt") or 0),
            capacity_since or carried.get("capacity_since"),
        )
        return self._start_or_attach(context, deadline=deadline, capacity=capacity)

    def resume_after_stopping(
        self, context: Context, event: Mapping[str, Any] | None = None, deadline: str | None = None
    ) -> ExecutionResult | None:
        """Deferral target of the wait for a re-attached ``Stopping`` execution to end: apply the re-attach
        rule to the status it ended in (or fail when the deadline came first)."""
        event = event or {}
        deadline = deadline or event.get("deadline")  # dag.test() replaces the kwargs by the event
        arn = event.get("pipeline_execution_arn")
        status = event.get("status")
        if status == "timeout":
            raise AirflowTaskTimeout(
                f"Execution {arn} was still Stopping at the deadline {deadline} (execution_timeout); nothing "
                "new was started. Answer its waiting callback steps (a Stopping execution waits for them), "
                "then clear the task."
            )
        if status not in ("success", "failure"):
            raise AirflowException(event.get("message") or f"Waiting for {arn} to stop failed: {event}")
        return self._start_or_attach(context, deadline=deadline, capacity=CapacityWait())

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> ExecutionResult:
        """Deferral target of :class:`SageMakerPipelineExecutionTrigger`: apply its verdict."""
        arn = (event or {}).get("pipeline_execution_arn")
        if arn:  # known before a timeout is raised: Airflow then calls on_kill, which stops it
            self._execution_arn = str(arn)
            self._task_identity(context)
        return execution_event_result(event)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Also stop the execution when Airflow times the deferral out (the triggerer missed the deadline)."""
        self._deferred = False
        if next_method == "__fail__" and (next_kwargs or {}).get("error") == "Trigger timeout":
            self._state = StartState.load(context)
            if self._state.arn:
                self._execution_arn = self._state.arn
                self._task_identity(context)
                self.on_kill()
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """Stop the execution this task started or re-attached to (``stop_on_kill``).

        Airflow calls it on SIGTERM (mark failed / success, clear, DAG run timeout) and on
        ``execution_timeout``. Deferred, the trigger's ``on_kill`` stops instead
        (:mod:`~sagemaker_pipelines_provider.triggers.kill` has the rules), ``execution_timeout`` becomes the
        trigger's deadline, and the deferral timeout (deadline + :data:`DEFERRAL_TIMEOUT_GRACE`) is a
        backstop that :meth:`resume_execution` answers with a stop. Not covered: a worker killed with
        SIGKILL or lost, a kill while no triggerer runs the trigger, a kill between the start call and the
        ARN being known (the next try re-attaches in each case), and on purpose a triggerer restart or
        hand-over (the execution keeps running; the trigger resumes elsewhere).

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
        self, context: Context, *, deadline: str | None, capacity: CapacityWait
    ) -> ExecutionResult | None:
        state = StartState.load(context)
        self._state = state
        self._task_identity(context)
        if state.arn:
            status = self.hook.describe_pipeline_execution(state.arn)["PipelineExecutionStatus"]
            self.log.info("This task instance already has execution %s (%s)", state.arn, status)
            return self._reattach(context, state, status, deadline, capacity)
        return self._start_fresh(context, state, deadline, capacity)

    def _reattach(
        self, context: Context, state: StartState, status: str, deadline: str | None, capacity: CapacityWait
    ) -> ExecutionResult | None:
        """The re-attach rule for this task instance's execution ``state.arn`` (README "Starting and
        waiting"): Stopping -> wait for its end, then decide; Executing -> wait; a success under the status
        policy -> its result; Failed -> resume or restart (``on_failed_retry``); Stopped -> a fresh one."""
        assert state.arn is not None
        arn = state.arn
        if status == "Stopping":
            return self._wait_for_stopping(context, arn, deadline)
        outcome = execution_outcome(status, allow_stopped=self.allow_stopped)
        if outcome is Outcome.RUNNING:
            return self._attached(context, arn, deadline)
        if outcome is Outcome.SUCCESS:
            self._announce(context, arn)
            self.log.info(
                "Execution %s already ended %s%s: returning its result, starting nothing",
                arn,
                status,
                " (a success: allow_stopped=True)" if status == "Stopped" else "",
            )
            return self._result_now(arn)
        if status == "Failed" and self.on_failed_retry == "resume":
            return self._retry_failed(context, state, deadline, capacity)
        self.log.info("Execution %s is %s: starting a fresh execution", arn, status)
        state = StartState(counter=state.counter + 1, arn=None, retries=0)
        self._state = state
        state.save(context)  # the new counter is recorded before the start: a crash re-sends its token
        return self._start_fresh(context, state, deadline, capacity)

    def _wait_for_stopping(self, context: Context, arn: str, deadline: str | None) -> ExecutionResult | None:
        """Wait (deferred when deferrable) for a re-attached Stopping execution to end, then re-decide."""
        self._announce(context, arn)
        self.log.info(
            "Execution %s is Stopping (a stop was requested, typically when an earlier try of this task "
            "instance was killed): waiting for it to end before deciding — %s, Failed -> %s, Succeeded -> "
            "its result. A callback step that nobody answers keeps an execution Stopping for up to 28 days; "
            "this wait ends %s.",
            arn,
            "Stopped -> its result" if self.allow_stopped else "Stopped -> a fresh execution",
            "resume it" if self.on_failed_retry == "resume" else "a fresh execution",
            f"at the deadline {deadline} (execution_timeout)"
            if deadline
            else "only when it does (no execution_timeout)",
        )
        if self.deferrable:
            self._defer_until_done(
                arn, deadline, method_name="resume_after_stopping", kwargs={"deadline": deadline}
            )
        self._poll_until_ended(arn, deadline)
        return self._start_or_attach(context, deadline=deadline, capacity=CapacityWait())

    def _start_fresh(
        self, context: Context, state: StartState, deadline: str | None, capacity: CapacityWait
    ) -> ExecutionResult | None:
        hook = self.hook
        try:
            parameters = hook.validate_parameters(self.pipeline_name, self.parameters)
        except PipelineParametersInvalid as err:
            raise AirflowFailException(str(err)) from err
        requested_at = dt.datetime.now(dt.UTC)
        try:
            arn = self._with_capacity(
                lambda: hook.start_pipeline_execution(
                    self.pipeline_name,
                    client_request_token=self._start_token(context, state.counter),
                    parameters=parameters,
                    display_name=self.display_name,
                    description=self.description,
                    parallelism=self.parallelism,
                    selective_steps=self.selective_steps,
                    wait_for_capacity=False,
                ),
                state=state,
                deadline=deadline,
                capacity=capacity,
            )
        except ClientError as err:
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
        # Its token covers the parameters: even an earlier try's execution (below) runs with these.
        self._started_parameters = (arn, hook.execution_parameters(self.pipeline_name, parameters))
        describe = hook.describe_pipeline_execution(arn)
        created = describe.get("CreationTime")
        if isinstance(created, dt.datetime) and created < requested_at - REUSED_TOKEN_MARGIN:
            # The token was sent before: by an earlier try whose record of the execution was lost
            # (clear_on_success wiped task_state_store) or never written (the worker died after the start).
            status = str(describe["PipelineExecutionStatus"])
            self.log.info(
                "SageMaker answered this start token with execution %s (%s), created %s by an earlier try of "
                "this task instance: re-attaching to it",
                arn,
                status,
                created.isoformat(),
            )
            return self._reattach(context, state, status, deadline, capacity)
        self.log.info("Started pipeline execution %s of %s", arn, self.pipeline_name)
        return self._attached(context, arn, deadline)

    def _retry_failed(
        self, context: Context, state: StartState, deadline: str | None, capacity: CapacityWait
    ) -> ExecutionResult | None:
        assert state.arn is not None
        arn = state.arn
        state.retries += 1
        state.save(context)  # recorded before the call: the next try never re-sends a token that succeeded
        self.log.info(
            "Execution %s failed: resuming it with RetryPipelineExecution (succeeded steps kept)", arn
        )
        self._with_capacity(
            lambda: self.hook.retry_pipeline_execution(
                arn,
                client_request_token=self._retry_token(context, arn, state.retries),
                parallelism=self.parallelism,
                wait_for_capacity=False,
            ),
            state=state,
            deadline=deadline,
            capacity=capacity,
        )
        return self._attached(context, arn, deadline)

    # ---------------------------------------------------------------------------------------------------
    # waiting for capacity

    def _with_capacity(
        self, call: Callable[[], T], *, state: StartState, deadline: str | None, capacity: CapacityWait
    ) -> T:
        """Run a start or retry ``call``; on ``ResourceLimitExceeded`` wait (sleep, or defer when deferrable)
        and call again. Once the capacity bound (:meth:`_capacity_bound`) has passed, no call is made: the
        task fails with "No capacity within ..." (also when Airflow's ``execution_timeout`` interrupts a
        call or a sleep of this wait)."""
        while True:
            bound = self._capacity_bound(deadline, capacity)
            if capacity.attempt and bound is not None and dt.datetime.now(dt.UTC) >= bound[0]:
                raise self._no_capacity(bound, capacity, state)
            try:
                return call()
            except ClientError as err:
                if not is_capacity_error(err):
                    raise
                refused = err
            except AirflowTaskTimeout as timeout:
                if not capacity.attempt:
                    raise
                raise self._no_capacity(bound, capacity, state) from timeout
            capacity = self._wait_for_capacity(refused, state, deadline, capacity)

    def _capacity_bound(self, deadline: str | None, capacity: CapacityWait) -> tuple[dt.datetime, str] | None:
        """``(instant, what)`` after which no start or retry is attempted, or None (no bound)."""
        bounds: list[tuple[dt.datetime, str]] = []
        if deadline:
            bounds.append((parse_deadline(deadline), "execution_timeout"))
        budget = (self.backoff_policy or BackoffPolicy()).capacity_budget_seconds
        if budget is not None and capacity.since:
            bounds.append(
                (parse_deadline(capacity.since) + dt.timedelta(seconds=budget), "capacity_budget_seconds")
            )
        return min(bounds) if bounds else None

    def _wait_for_capacity(
        self, err: ClientError, state: StartState, deadline: str | None, capacity: CapacityWait
    ) -> CapacityWait:
        now = dt.datetime.now(dt.UTC)
        capacity = CapacityWait(capacity.attempt + 1, capacity.since or now.isoformat())
        bound = self._capacity_bound(deadline, capacity)
        left = None if bound is None else (bound[0] - now).total_seconds()
        if left is not None and left <= 0:
            raise self._no_capacity(bound, capacity, state) from err
        delay = capacity_delay(capacity.attempt - 1, self.backoff_policy or BackoffPolicy())
        if left is not None:
            delay = min(delay, left)
        what = "retry" if state.arn else "start"
        self.log.info(
            "Pipeline %s has too many running executions (ResourceLimitExceeded): %s the %s for %.2fs%s",
            self.pipeline_name,
            "deferring" if self.deferrable else "delaying",
            what,
            delay,
            f" (no start after {bound[0].isoformat()}, the end of {bound[1]})" if bound else "",
        )
        if self.deferrable:
            carry = {
                "deadline": deadline,
                "capacity_attempt": capacity.attempt,
                "capacity_since": capacity.since,
            }
            self._deferred = True
            self.defer(
                trigger=SageMakerPipelineCapacityWaitTrigger(
                    (now + dt.timedelta(seconds=delay)).isoformat(), carry
                ),
                method_name="resume_after_capacity_wait",
                kwargs=carry,
            )
        try:
            time.sleep(delay)
        except AirflowTaskTimeout as timeout:  # Airflow's execution_timeout ended the wait
            raise self._no_capacity(bound, capacity, state) from timeout
        return capacity

    def _no_capacity(
        self, bound: tuple[dt.datetime, str] | None, capacity: CapacityWait, state: StartState
    ) -> AirflowException | AirflowTaskTimeout:
        what = bound[1] if bound else "execution_timeout"
        target = (
            f"RetryPipelineExecution of {state.arn}"
            if state.arn
            else f"StartPipelineExecution of {self.pipeline_name}"
        )
        message = (
            f"No capacity within {what}: {target} was refused with ResourceLimitExceeded (too many running "
            f"executions) {capacity.attempt} time(s) since {capacity.since}; the wait ended at "
            f"{bound[0].isoformat() if bound else 'the deadline'} and no call is made after it. Raise the "
            f"account's or pipeline's concurrent-execution limit, or allow a longer {what}."
        )
        return AirflowTaskTimeout(message) if what == "execution_timeout" else AirflowException(message)

    # ---------------------------------------------------------------------------------------------------
    # waiting

    def _announce(self, context: Context, arn: str) -> None:
        self._execution_arn = arn
        self._task_identity(context)
        context["ti"].xcom_push(key=EXECUTION_ARN_XCOM_KEY, value=arn)

    def _step_types(self) -> dict[str, str]:
        return self.hook.step_types(self.pipeline_name)

    def _known_parameters(self, arn: str) -> dict[str, str] | None:
        """The parameters of ``arn`` when this try started it (None: they are read from SageMaker)."""
        if self._started_parameters is not None and self._started_parameters[0] == arn:
            return self._started_parameters[1]
        return None

    def _result_now(self, arn: str) -> ExecutionResult:
        return self.hook.get_execution_result(
            arn, step_types=self._step_types(), parameters=self._known_parameters(arn)
        )

    def _attached(self, context: Context, arn: str, deadline: str | None) -> ExecutionResult | None:
        self._announce(context, arn)
        if not self.wait_for_completion:
            return self._result_now(arn)
        if self.deferrable:
            self._defer_until_done(arn, deadline)
        return self._wait_polling(arn, deadline)

    def _defer_until_done(
        self,
        arn: str,
        deadline: str | None,
        *,
        method_name: str = "execute_complete",
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Defer on :class:`SageMakerPipelineExecutionTrigger` until ``arn`` ends (or ``deadline``), then
        resume in ``method_name``."""
        timeout = None
        left = seconds_left(deadline)
        if left is not None:
            timeout = dt.timedelta(seconds=left) + DEFERRAL_TIMEOUT_GRACE
        trigger = SageMakerPipelineExecutionTrigger(
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
            parameters=self._known_parameters(arn),
            **event_trigger_kwargs(self.event_queue_url, self.safety_poll_interval),
        )
        self._deferred = True  # from here on a kill of this process is not necessarily a kill of the task
        self.defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def _wait_polling(self, arn: str, deadline: str | None) -> ExecutionResult:
        """The synchronous wait: status polls only; at the end one ListPipelineExecutionSteps (its step
        lines logged then) and the parameters (known when this try started the execution)."""
        step_types = self._step_types()
        describe = self._poll_until_ended(arn, deadline)
        steps = self.hook.list_pipeline_execution_steps(arn)
        for line in step_transitions({}, steps, step_types)[1]:
            self.log.info("%s", line)
        parameters = self._known_parameters(arn)
        if parameters is None:
            parameters = self.hook.list_pipeline_parameters_for_execution(arn)
        verdict = execution_verdict(
            describe, steps, parameters, allow_stopped=self.allow_stopped, step_types=step_types
        )
        if verdict.outcome is Outcome.SUCCESS:
            return verdict.result
        raise AirflowException(verdict.message)

    def _poll_until_ended(self, arn: str, deadline: str | None) -> dict[str, Any]:
        """The synchronous poll loop (DescribePipelineExecution every ``poll_interval``): its answer once
        ``arn`` has ended; logs each status change; :class:`AirflowTaskTimeout` at ``deadline`` (Airflow
        then calls :meth:`on_kill`)."""
        hook = self.hook
        log_polling_wait(self.log, self.event_queue_url)
        last_status: str | None = None
        while True:
            describe = hook.describe_pipeline_execution(arn)
            status = describe["PipelineExecutionStatus"]
            if status != last_status:
                self.log.info("Pipeline execution %s is %s", arn, status)
                last_status = status
            if execution_outcome(status, allow_stopped=self.allow_stopped) is not Outcome.RUNNING:
                return describe
            left = seconds_left(deadline)
            if left is not None and left <= 0:
                raise AirflowTaskTimeout(
                    f"Deadline {deadline} (execution_timeout) passed while execution {arn} was {status}."
                )
            time.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
