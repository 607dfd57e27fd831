"""SageMakerPipelineExecutionTrigger: wait, inside the triggerer, for one SageMaker pipeline execution to end.

The trigger is its serialisable arguments plus a run loop; its status comes from the pipeline's shared
:class:`~.poller.ExecutionStatusPoller`. Its events, and when ``on_kill`` stops the execution, are in
docs/triggerer.md. ``PipelineExecutionTrigger`` is a deprecated alias.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook, pipeline_name_from_arn
from sagemaker_pipelines_provider.results import build_execution_result, execution_verdict, step_transitions
from sagemaker_pipelines_provider.triggers.event_receiver import (
    EventQueueKey,
    EventStreamError,
    get_event_receiver,
)
from sagemaker_pipelines_provider.triggers.event_wait import merged, next_item
from sagemaker_pipelines_provider.triggers.kill import (
    run_to_the_end,
    task_instance_left_deferred,
    waiting_here,
)
from sagemaker_pipelines_provider.triggers.poller import (
    ExecutionStatusPoller,
    ExecutionUpdate,
    PollerKey,
    get_poller,
)
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs, WithAwsConnection
from sagemaker_pipelines_provider.utils.deadline import seconds_left
from sagemaker_pipelines_provider.utils.deprecation import renamed
from sagemaker_pipelines_provider.utils.execution_picture import ExecutionPicture
from sagemaker_pipelines_provider.utils.poll_interval import event_safety_poll_interval
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome, is_terminal
from sagemaker_pipelines_provider.utils.tokens import stop_token

CLASSPATH = "sagemaker_pipelines_provider.triggers.pipeline.SageMakerPipelineExecutionTrigger"


class SageMakerPipelineExecutionTrigger(WithAwsConnection, BaseTrigger):
    """Fire once when a pipeline execution ends (or the deadline passes).

    :param pipeline_execution_arn: the execution to wait for.
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on the Amazon provider's hooks.
    :param poll_interval: seconds between status polls (the shared poller uses the smallest interval
        among its subscribers).
    :param allow_stopped: treat ``Stopped`` as success (the terminal-status policy's only option).
    :param stop_on_kill: stop the execution in :meth:`on_kill` and when ``deadline`` passes (set by the
        operator that started it; a sensor leaves it False).
    :param stop_token: ``ClientRequestToken`` for that stop (the operator derives it with
        :func:`~sagemaker_pipelines_provider.utils.tokens.stop_token` from the task's identity and the
        execution attempt, so every stop path of one attempt sends the same request and a stop after a
        RetryPipelineExecution is a new one).
    :param deadline: ISO-8601 time at which to stop waiting (the task's ``execution_timeout``).
    :param step_types: step name -> step Type, from the pipeline's definition (for the result and log).
    :param parameters: the parameters the execution runs with, as SageMaker reports them (``{name: value}``
        strings, defaults included), when the caller knows them: the result then costs no
        ListPipelineParametersForExecution call.
    :param event_queue_url: an SQS queue that SageMaker's status-change events reach (docs/events.md): the
        wait then follows the events, and polls only every ``safety_poll_interval`` seconds.
    :param safety_poll_interval: seconds between the safety polls of a wait with ``event_queue_url``
        (default ``[sagemaker_pipelines] event_safety_poll_interval``, 600).
    """

    def __init__(
        self,
        pipeline_execution_arn: str,
        *,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        poll_interval: float = 30.0,
        allow_stopped: bool = False,
        stop_on_kill: bool = False,
        stop_token: str | None = None,
        deadline: str | None = None,
        step_types: Mapping[str, str] | None = None,
        parameters: Mapping[str, str] | None = None,
        event_queue_url: str | None = None,
        safety_poll_interval: float | None = None,
    ) -> None:
        super().__init__()
        self.pipeline_execution_arn = pipeline_execution_arn
        self.aws = AwsConnectionArgs.of(aws_conn_id, region_name, verify, botocore_config)
        self.poll_interval = float(poll_interval)
        self.allow_stopped = allow_stopped
        self.stop_on_kill = stop_on_kill
        self.stop_token = stop_token
        self.deadline = deadline
        self.step_types = dict(step_types or {})
        self.parameters = None if parameters is None else {str(k): str(v) for k, v in parameters.items()}
        self.event_queue_url = event_queue_url or None
        self.safety_poll_interval = float(
            event_safety_poll_interval() if safety_poll_interval is None else safety_poll_interval
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "pipeline_execution_arn": self.pipeline_execution_arn,
                **self.aws.to_kwargs(),
                "poll_interval": self.poll_interval,
                "allow_stopped": self.allow_stopped,
                "stop_on_kill": self.stop_on_kill,
                "stop_token": self.stop_token,
                "deadline": self.deadline,
                "step_types": self.step_types,
                "parameters": self.parameters,
                "event_queue_url": self.event_queue_url,
                "safety_poll_interval": self.safety_poll_interval,
            },
        )

    # -------------------------------------------------------------------------------------------------

    def _poller_key(self) -> PollerKey:
        pipeline = pipeline_name_from_arn(self.pipeline_execution_arn)
        if not pipeline:
            raise ValueError(f"{self.pipeline_execution_arn!r} is not a SageMaker pipeline execution ARN")
        return PollerKey(pipeline, self.aws)

    def _hook(self) -> SageMakerPipelineHook:
        return self.aws.hook(SageMakerPipelineHook)

    def _seconds_left(self) -> float | None:
        return seconds_left(self.deadline)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        arn = self.pipeline_execution_arn
        try:
            key = self._poller_key()
        except ValueError as err:
            yield self._error(str(err))
            return
        with waiting_here(arn):  # an in-process wait (dag.test) lets a SIGTERM of the task stop it
            if self.event_queue_url:
                event = await self._wait_with_events(key, self.event_queue_url)
            else:
                event = await self._wait_polling(key)
        # Yielded once the subscriptions are left: the shared services never wait on a fired trigger.
        yield event

    async def _wait_polling(self, key: PollerKey) -> TriggerEvent:
        """Status from the shared poller's rounds only; the steps are listed once, at the end."""
        arn = self.pipeline_execution_arn
        poller = get_poller(key)
        last_status: str | None = None
        # No await between get_poller and subscribe: the poller cannot end in between.
        async with poller.subscribe(arn, self.poll_interval) as updates:
            while True:
                update = await next_item(updates, self._seconds_left())
                if update is None:  # the deadline passed first
                    return await self._timeout_event(poller, {})
                if update.error is not None:
                    return self._error(f"Could not read the status of {arn}: {update.error}")
                try:
                    outcome = execution_outcome(str(update.status), allow_stopped=self.allow_stopped)
                except ValueError as err:
                    return self._error(str(err))
                if update.status != last_status:
                    last_status = update.status
                    self.log.info("Pipeline execution %s is %s", arn, update.status)
                if outcome is not Outcome.RUNNING:
                    return await self._end_event(poller, update.as_describe(arn), None, {})

    async def _wait_with_events(self, key: PollerKey, queue_url: str) -> TriggerEvent:
        """Follow the execution's events, with the shared poller's reads every ``safety_poll_interval`` as
        the safety net; both feed one :class:`ExecutionPicture`, which never goes backwards."""
        arn = self.pipeline_execution_arn
        receiver = get_event_receiver(EventQueueKey(queue_url, self.aws))
        # The events first, then the poller, whose first round is the one read of the current status:
        # nothing that changes after that read can be missed.
        async with receiver.subscribe_execution(arn) as events:
            poller = get_poller(key)
            async with (
                poller.subscribe(arn, self.safety_poll_interval) as updates,
                merged(events, updates) as inbox,
            ):
                event = await self._follow(poller, inbox, ExecutionPicture(arn, self.step_types))
        # Only once the wait has ended here (not when the trigger is cancelled, e.g. handed to another
        # triggerer, which must still get the events): later events of the execution are deleted at once.
        receiver.finished(arn)
        return event

    async def _follow(
        self, poller: ExecutionStatusPoller, inbox: asyncio.Queue[Any], picture: ExecutionPicture
    ) -> TriggerEvent:
        while True:
            item = await next_item(inbox, self._seconds_left())
            if item is None:  # the deadline passed first
                return await self._timeout_event(poller, picture.logged)
            try:
                moved = self._apply(picture, item)
            except _WaitFailed as failed:
                return self._error(str(failed))
            if not moved:
                continue
            self.log.info("Pipeline execution %s is %s", self.pipeline_execution_arn, picture.status)
            if execution_outcome(str(picture.status), allow_stopped=self.allow_stopped) is Outcome.RUNNING:
                continue
            event = await self._end_from_picture(poller, picture)
            if event is not None:
                return event

    def _apply(self, picture: ExecutionPicture, item: Any) -> bool:
        """Apply one event or safety read to the picture; True when the execution's status moved."""
        arn = self.pipeline_execution_arn
        try:
            if isinstance(item, EventStreamError):
                raise _WaitFailed(item.message)
            if isinstance(item, ExecutionUpdate):
                if item.error is not None:
                    raise _WaitFailed(f"Could not read the status of {arn}: {item.error}")
                return picture.apply_status(
                    str(item.status), failure_reason=item.failure_reason, display_name=item.display_name
                )
            if item.kind == "step":
                for line in picture.apply_step(item.as_step_entry()):
                    self.log.info("%s", line)
                return False
            return picture.apply_status(
                item.status, failure_reason=item.failure_reason, display_name=item.display_name
            )
        except ValueError as err:  # a status SageMaker does not document
            raise _WaitFailed(str(err)) from err

    async def _end_from_picture(
        self, poller: ExecutionStatusPoller, picture: ExecutionPicture
    ) -> TriggerEvent | None:
        """The end event built from the picture: its steps when complete (else one listing), and for
        Failed one DescribePipelineExecution for SageMaker's reason unless at hand. None when that answer
        refutes the end (a late Failed event of an execution resumed since): the wait goes on."""
        describe: Mapping[str, Any] = picture.as_describe()
        if picture.status == "Failed" and not picture.failure_reason:
            async with poller.lent.borrow() as client:
                describe = await poller.hook.adescribe_pipeline_execution(
                    self.pipeline_execution_arn, client=client
                )
            if not is_terminal(str(describe.get("PipelineExecutionStatus"))):
                self.log.info(
                    "Pipeline execution %s is %s again (the Failed event was older)",
                    self.pipeline_execution_arn,
                    describe.get("PipelineExecutionStatus"),
                )
                picture.correct(describe)
                return None
        return await self._end_event(poller, describe, picture.result_steps(), picture.logged)

    def _event(self, payload: dict[str, Any]) -> TriggerEvent:
        return TriggerEvent(
            {**payload, "pipeline_execution_arn": self.pipeline_execution_arn, "deadline": self.deadline}
        )

    def _error(self, message: str) -> TriggerEvent:
        return self._event({"status": "error", "message": message})

    async def _end_event(
        self,
        poller: ExecutionStatusPoller,
        describe: Mapping[str, Any] | None,
        steps: Sequence[Mapping[str, Any]] | None,
        seen_steps: Mapping[str, str],
    ) -> TriggerEvent:
        """The success / failure event of an ended execution: its steps (listed now, with their log lines,
        unless at hand), ``describe`` (read now unless at hand) and the parameters (unless given)."""
        if steps is None:
            steps = await self._list_steps(poller, seen_steps)
        verdict = execution_verdict(
            *await self._read(poller, steps, describe),
            allow_stopped=self.allow_stopped,
            step_types=self.step_types,
        )
        if verdict.outcome is Outcome.SUCCESS:
            return self._event({"status": "success", "result": verdict.result})
        return self._event({"status": "failure", "result": verdict.result, "message": verdict.message})

    async def _list_steps(
        self, poller: ExecutionStatusPoller, seen_steps: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """List the steps and log one line per step whose status differs from ``seen_steps``."""
        hook, arn = poller.hook, self.pipeline_execution_arn
        async with poller.lent.borrow() as client:
            steps = await hook.alist_pipeline_execution_steps(arn, client=client)
        for line in step_transitions(seen_steps, steps, self.step_types)[1]:
            self.log.info("%s", line)
        return steps

    async def _read(
        self,
        poller: ExecutionStatusPoller,
        steps: Sequence[Mapping[str, Any]],
        describe: Mapping[str, Any] | None,
    ) -> tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], dict[str, str]]:
        """``(describe, steps, parameters)``: a describe at hand and the given parameters save their calls."""
        hook, arn = poller.hook, self.pipeline_execution_arn
        async with poller.lent.borrow() as client:
            return await hook.aread_execution(
                arn, client=client, steps=steps, describe=describe, parameters=self.parameters
            )

    async def _timeout_event(
        self, poller: ExecutionStatusPoller, seen_steps: Mapping[str, str]
    ) -> TriggerEvent:
        arn = self.pipeline_execution_arn
        message = f"Deadline {self.deadline} (execution_timeout) passed while waiting for {arn}."
        if self.stop_on_kill:
            stopped = await self._stop()
            message += " The execution was stopped." if stopped else " It had already ended or was stopping."
        else:
            message += " The execution was left running (stop_on_kill=False)."
        steps = await self._list_steps(poller, seen_steps)
        # fresh status: the stop just changed it
        result = build_execution_result(*await self._read(poller, steps, None), step_types=self.step_types)
        return self._event({"status": "timeout", "result": result, "message": message})

    async def _stop(self) -> bool:
        """Stop the execution (own client: the poller may be gone). True when a stop was requested."""
        hook = self._hook()
        token = self.stop_token or _fallback_stop_token(self.pipeline_execution_arn)
        async with hook.async_client() as client:
            stopped = await hook.astop_pipeline_execution(
                self.pipeline_execution_arn, client_request_token=token, client=client
            )
        self.log.info(
            "%s pipeline execution %s",
            "Stopped" if stopped else "Nothing to stop: already ended,",
            self.pipeline_execution_arn,
        )
        return stopped

    async def on_kill(self) -> None:
        """Airflow cancelled the trigger as a user action: stop the execution if the task was killed.

        Only when ``stop_on_kill`` (the operator that started the execution sets it) and Airflow reports
        the task instance out of the DEFERRED state (marked failed / success, cleared, DAG run timed out
        or deleted). Airflow 3.3's triggerer also calls ``on_kill`` when it merely lost the trigger to
        another triggerer, the task instance still deferred: the execution keeps running then (see
        :mod:`~sagemaker_pipelines_provider.triggers.kill`). The check and the stop run to their end even
        when Airflow cancels ``on_kill`` again or times it out.
        """
        if not self.stop_on_kill:
            self.log.info(
                "Task killed; execution %s left running (stop_on_kill=False)", self.pipeline_execution_arn
            )
            return
        await run_to_the_end(self._stop_if_killed())

    async def _stop_if_killed(self) -> None:
        arn = self.pipeline_execution_arn
        killed, why = await task_instance_left_deferred(self.task_instance)
        if not killed:
            self.log.info(
                "Trigger cancelled but the task was not killed: %s; execution %s keeps running", why, arn
            )
            return
        self.log.info("Task killed (%s): stopping execution %s", why, arn)
        try:
            await self._stop()
        except Exception:
            self.log.exception("Could not stop pipeline execution %s; stop it from the console", arn)

    async def cleanup(self) -> None:
        """Release nothing but local resources: the subscription is left by exiting ``run``.

        Never stops the execution: ``cleanup`` also runs when the triggerer restarts or hands the trigger
        to another triggerer, and the execution must keep running then.
        """


class _WaitFailed(Exception):
    """The wait cannot go on; the message is the error event's."""


def _fallback_stop_token(arn: str) -> str:
    """The stop token of a trigger built without one (not by the operator, which always passes its own)."""
    return stop_token((), arn, counter=0, retries=0)


__getattr__ = renamed(
    __name__,
    globals(),
    {
        "PipelineExecutionTrigger": "SageMakerPipelineExecutionTrigger",
    },
)
