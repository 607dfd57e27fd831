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

**Re-attach on retry or clear** (the stored ARN survives both). One rule, built on the status policy
(:func:`~sagemaker_pipelines_provider.utils.status.execution_outcome`):

- ``Executing``: keep waiting on it;
- ``Stopping`` (typically: a clear or mark-failed killed the previous try, which stopped it): wait until
  it has ended, then apply the rule of the status it ended in. The wait is deferred when deferrable
  (polled otherwise), ends at ``execution_timeout``, and the log says why the task waits: an execution
  whose callback step nobody answers stays ``Stopping`` for up to 28 days;
- a status the policy counts as success — ``Succeeded``, or ``Stopped`` with ``allow_stopped=True`` —
  is the result: return it, start nothing;
- ``Failed``: ``on_failed_retry="resume"`` (default) calls RetryPipelineExecution (succeeded steps are
  kept, failed ones re-run); ``"restart"`` starts a fresh execution;
- ``Stopped`` (``allow_stopped=False``): a fresh execution.

A fresh execution after a terminal one first bumps the counter in ``task_state_store`` (then starts with
the new token), so that restart is itself crash-safe.

**How long the state lives.** The state is written with ``retention=NEVER_EXPIRE``: Airflow's cleanup of
expired entries (``[state_store] default_retention_days``, 30 days by default) never removes it, and it
goes when its DAG run is deleted. ``[state_store] clear_on_success = True`` (Airflow's default is False)
still wipes it when the task succeeds, and nothing in Airflow survives that wipe and a later clear. The
operator copes with a lost state through the tokens, which are deterministic: with no state it sends the
first start token again; SageMaker answers a token it knows with the execution that token created. An
answer created before the request (by more than :data:`REUSED_TOKEN_MARGIN`, so clock skew never turns a
new execution into an old one) is an execution of an earlier try: the re-attach rule applies to it, and
when that rule asks for a fresh execution the next token is sent, which walks the task instance's
executions in order to the current one. SageMaker offers no lookup by token, and how long it remembers a
token is not documented: a token it has forgotten starts a new execution. The RetryPipelineExecution
counter is lost with the state too: a resume after the wipe may repeat an earlier retry's token, which
SageMaker takes for a repeat (the execution stays Failed, the task fails, its next try retries with a new
token). Keep ``clear_on_success`` off where a clear must never start a second execution.

**Before any start** the parameters are checked against the pipeline's definition (unknown names, wrong
Integer/Float/Boolean values, required parameters missing): the task fails without retry, listing the
pipeline's parameters and their types, and nothing is started.

**Waiting**: deferrable (``SageMakerPipelineExecutionTrigger``), synchronous polling, or not at all
(``wait_for_completion=False``). Every mode applies the one status policy: Succeeded is success; Failed and
Stopped fail the task (``allow_stopped=True`` accepts Stopped).

**Capacity.** ``ResourceLimitExceeded`` at StartPipelineExecution or RetryPipelineExecution (too many
running executions) does not fail the task: it waits with backoff (sleeping, or deferred on a timer when
deferrable) and tries again, until the earlier of the task's ``execution_timeout`` and
``backoff_policy.capacity_budget_seconds`` (counted from the first refusal of the try). Then the task
fails with "No capacity within ..." and nothing is started or retried after that point.

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

Every stop path of one attempt sends the same StopPipelineExecution token
(:func:`~sagemaker_pipelines_provider.utils.tokens.stop_token`, from the identity, the execution and its
``(counter, retries)``); after a RetryPipelineExecution the token is new, so a stop of the resumed
execution is a new request rather than a repeat SageMaker would answer without stopping anything.

**Result** (return value / XCom): see
:func:`~sagemaker_pipelines_provider.hooks.pipeline.build_execution_result`.
The ARN is also pushed under the XCom key ``pipeline_execution_arn`` as soon as the execution exists;
:attr:`SageMakerPipelineOperator.execution_arn` is a reference to it for other tasks' arguments.
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

from sagemaker_pipelines_provider.hooks.pipeline import (
    PipelineParametersInvalid,
    SageMakerPipelineHook,
    build_execution_result,
    failure_message,
    step_transitions,
)
from sagemaker_pipelines_provider.links.pipeline import EXECUTION_ARN_XCOM_KEY, SageMakerPipelineExecutionLink
from sagemaker_pipelines_provider.references import PipelineValue
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

    Saved with ``retention=NEVER_EXPIRE``: Airflow's cleanup of expired entries never removes it (the module
    docstring says what happens when ``clear_on_success`` wipes it).
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
        #: The start state of the current attempt (its ``(counter, retries)`` is part of the stop token).
        self._state: StartState | None = None
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
        state = self._state or StartState()
        return stop_token(self._identity or (), arn, counter=state.counter, retries=state.retries)

    # ---------------------------------------------------------------------------------------------------
    # entry points

    def execute(self, context: Context) -> dict[str, Any] | None:
        self._deferred = False
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
    ) -> dict[str, Any] | None:
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
    ) -> dict[str, Any] | None:
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
            self._state = StartState.load(context)
            if self._state.arn:
                self._execution_arn = self._state.arn
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
        self, context: Context, *, deadline: str | None, capacity: CapacityWait
    ) -> dict[str, Any] | None:
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
    ) -> dict[str, Any] | None:
        """The re-attach rule (module docstring) for this task instance's execution ``state.arn``."""
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

    def _wait_for_stopping(self, context: Context, arn: str, deadline: str | None) -> dict[str, Any] | None:
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
        self._poll_until_ended(arn, deadline, self._step_types())
        return self._start_or_attach(context, deadline=deadline, capacity=CapacityWait())

    def _start_fresh(
        self, context: Context, state: StartState, deadline: str | None, capacity: CapacityWait
    ) -> dict[str, Any] | None:
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
    ) -> dict[str, Any] | None:
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
        )
        self._deferred = True  # from here on a kill of this process is not necessarily a kill of the task
        self.defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def _wait_polling(self, arn: str, deadline: str | None) -> dict[str, Any]:
        step_types = self._step_types()
        describe, steps = self._poll_until_ended(arn, deadline, step_types)
        parameters = self.hook.list_pipeline_parameters_for_execution(arn)
        result = build_execution_result(describe, steps, parameters, step_types=step_types)
        status = str(describe["PipelineExecutionStatus"])
        if execution_outcome(status, allow_stopped=self.allow_stopped) is Outcome.SUCCESS:
            return result
        raise AirflowException(failure_message(result))

    def _poll_until_ended(
        self, arn: str, deadline: str | None, step_types: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The synchronous poll loop: ``(describe, steps)`` once ``arn`` has ended; logs each status and step
        change; :class:`AirflowTaskTimeout` at ``deadline`` (Airflow then calls :meth:`on_kill`)."""
        hook = self.hook
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
            if outcome is not Outcome.RUNNING:
                return describe, steps
            left = seconds_left(deadline)
            if left is not None and left <= 0:
                raise AirflowTaskTimeout(
                    f"Deadline {deadline} (execution_timeout) passed while execution {arn} was {status}."
                )
            time.sleep(self.poll_interval if left is None else min(self.poll_interval, left))
