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
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome
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
                update = await self._next_update(updates)
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

    def _event(self, payload: dict[str, Any]) -> TriggerEvent:
        return TriggerEvent(
            {**payload, "pipeline_execution_arn": self.pipeline_execution_arn, "deadline": self.deadline}
        )

    def _error(self, message: str) -> TriggerEvent:
        return self._event({"status": "error", "message": message})

    async def _next_update(self, updates: asyncio.Queue[ExecutionUpdate]) -> ExecutionUpdate | None:
        left = self._seconds_left()
        if left is None:
            return await updates.get()
        try:
            return await asyncio.wait_for(updates.get(), timeout=left)
        except TimeoutError:
            return None

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
