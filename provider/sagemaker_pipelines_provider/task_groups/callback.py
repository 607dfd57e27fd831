"""callback_handler(): a TaskGroup that answers one SageMaker callback — wait, work, answer, never unanswered.

``wait`` → work tasks → ``answer``, and ``answer_failure`` when any task of the group fails or times
out. The group's shape, guarantees and security rules: ``docs/callbacks.md``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import BaseOperator, TaskGroup
from airflow.sdk.bases.decorator import _TaskDecorator
from airflow.sdk.definitions._internal.mixins import ResolveMixin
from airflow.sdk.definitions.xcom_arg import XComArg

from sagemaker_pipelines_provider.callbacks import lease
from sagemaker_pipelines_provider.callbacks.liveness import TokenState
from sagemaker_pipelines_provider.callbacks.message import STOPPING, mask_token
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.operators.callback import (
    SageMakerCallbackFailureOperator,
    SageMakerCallbackSuccessOperator,
)
from sagemaker_pipelines_provider.sensors.callback import ARGUMENTS_XCOM_KEY, SageMakerCallbackSensor
from sagemaker_pipelines_provider.triggers.callback import DEFAULT_VISIBILITY_TIMEOUT
from sagemaker_pipelines_provider.utils.deprecation import renamed

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

log = logging.getLogger(__name__)

WAIT_TASK_ID = "wait"
ANSWER_TASK_ID = "answer"
ANSWER_FAILURE_TASK_ID = "answer_failure"


class SageMakerCallbackArguments:
    """What a non-TaskFlow ``work`` builder receives: explicit ways to map message values into operators.

    - :meth:`template` — a Jinja expression for one argument, for an operator's templated field
      (``GlueJobOperator(script_args={"--model": args.template("model_artifacts")})``). The expression
      is the DAG author's; the value it renders to is inserted as data and never rendered again;
    - :attr:`xcom` — an XComArg of the whole arguments dict (pass it to a TaskFlow function);
    - :attr:`message` — an XComArg of the whole message dict (token, execution ARN, status...).
    """

    def __init__(self, wait: BaseOperator) -> None:
        self._wait = wait

    @property
    def wait_task_id(self) -> str:
        return self._wait.task_id

    @property
    def xcom(self) -> XComArg:
        output: Any = self._wait.output
        return output[ARGUMENTS_XCOM_KEY]  # type: ignore[no-any-return]

    @property
    def message(self) -> XComArg:
        return self._wait.output

    def template(self, name: str, default: str | int | float | bool | None = None) -> str:
        """``{{ ... }}`` rendering to argument ``name`` of the message (``default`` when it is absent).

        ``default`` is written into the expression as a Jinja literal and renders as Jinja renders it:
        ``None`` -> ``"None"``, ``True`` -> ``"True"``, ``3`` -> ``"3"``, a string as itself (never
        rendered again). Containers are refused: map their parts one by one.
        """
        pull = f"ti.xcom_pull(task_ids={json.dumps(self.wait_task_id)}, key={json.dumps(ARGUMENTS_XCOM_KEY)})"
        return f"{{{{ ({pull} or {{}}).get({json.dumps(name)}, {jinja_literal(default)}) }}}}"

    @property
    def execution_arn_template(self) -> str:
        """``{{ ... }}`` rendering to the pipeline execution ARN of the message."""
        return f"{{{{ ti.xcom_pull(task_ids={json.dumps(self.wait_task_id)})['pipeline_execution_arn'] }}}}"


def jinja_literal(value: str | int | float | bool | None) -> str:
    """``value`` as a Jinja expression literal (JSON's ``null``/``true`` are undefined names in Jinja).

    :raises TypeError: for anything but None, a bool, a finite number or a string.
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted literal; its escapes are Jinja's too
    raise TypeError(
        f"an argument template's default must be None, a string, a bool or a finite number, got "
        f"{type(value).__name__}: {value!r}"
    )


def hold_claimed_message(context: Context, wait_task_id: str, hook_params: Mapping[str, Any]) -> None:
    """Pre-execute hook of every work task: lease the claimed message, or skip the work when it is moot.

    Skipped: the execution is stopping (a ``Stopping`` message), or the token is already answered (by
    another handler that got a copy of the message: the work would be done twice for nothing; checked with
    :meth:`~sagemaker_pipelines_provider.hooks.pipeline.SageMakerPipelineHook.callback_token_state`, and
    run anyway when that cannot be told). The group's answer task then answers (refused as already
    answered) and deletes the message. No message (the wait task pushed none) is not an error: there is
    nothing to hold.
    """
    message = context["ti"].xcom_pull(task_ids=wait_task_id)
    if not isinstance(message, Mapping) or not message.get("receipt_handle"):
        return
    if str(message.get("status") or "").lower() == STOPPING.lower():
        raise AirflowSkipException(
            f"Pipeline execution {message.get('pipeline_execution_arn')} is stopping: work skipped; the "
            "group's answer task answers the callback so the execution can stop"
        )
    visibility = int(message.get("visibility_timeout") or DEFAULT_VISIBILITY_TIMEOUT)
    held = lease.hold(
        SageMakerCallbackQueueHook(**hook_params, backoff_policy=lease.lease_policy(visibility)),
        str(message["queue_url"]),
        str(message["receipt_handle"]),
        visibility,
        token=str(message.get("token") or ""),
    )
    if held.gone:
        # Answered and deleted by another handler, or back on the queue / received again elsewhere. The
        # work may go on unless the token is answered already (checked below): its answer is idempotent.
        log.warning(
            "The callback message of token %s could not be held (gone from the queue under this receipt "
            "handle); its answer will sweep the queue for copies",
            mask_token(message.get("token")),
        )
    arn, token = message.get("pipeline_execution_arn"), message.get("token")
    if arn and token:
        try:
            state = SageMakerPipelineHook(**hook_params).callback_token_state(str(arn), str(token))
        except Exception as err:  # cannot tell: do the work, its answer is idempotent
            log.warning("Could not check whether callback token %s still waits: %s", mask_token(token), err)
            state = TokenState.UNKNOWN
        if state is TokenState.SETTLED:
            raise AirflowSkipException(
                f"Callback token {mask_token(token)} of {arn} is already answered (another handler got a "
                "copy of its message): work skipped; the group's answer task deletes the message"
            )


def _attach_hold(task: Any, wait_task_id: str, hook_params: Mapping[str, Any]) -> None:
    previous = getattr(task, "_pre_execute_hook", None)

    def pre_execute(context: Context) -> None:
        hold_claimed_message(context, wait_task_id, hook_params)
        if previous is not None:
            previous(context)

    task._pre_execute_hook = pre_execute


class _GroupAnswerFailureOperator(SageMakerCallbackFailureOperator):
    """``answer_failure`` of a callback_handler group: pulls the message itself, names the failed tasks.

    It only runs when a task of the group failed, so it always ends failed itself (after answering, or
    because there was nothing to answer): the DAG run then shows the failure instead of a green run.
    """

    def __init__(self, *, wait_task_id: str, group_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_task_id = wait_task_id
        self.group_id = group_id
        self._reason = ""

    def execute(self, context: Context) -> dict[str, Any]:
        message = context["ti"].xcom_pull(task_ids=self.wait_task_id)
        if not isinstance(message, Mapping) or not message.get("token"):
            raise AirflowFailException(
                f"{self.wait_task_id} received no callback message (it failed or timed out): "
                "nothing to answer"
            )
        self.message = dict(message)
        result = super().execute(context)
        raise AirflowFailException(
            f"A task of group {self.group_id} failed; the callback was answered with failure "
            f"({'already answered before' if result['already_answered'] else 'accepted'}): "
            f"{self._reason}"
        )

    def failure_reason(self, context: Context, message: Mapping[str, Any]) -> str:
        failed = self._failed_tasks(context)
        ti = context["ti"]
        if failed:
            reason = f"Airflow task {', '.join(failed)} failed (DAG {ti.dag_id}, run {ti.run_id})"
        else:
            reason = f"A task of Airflow task group {self.group_id} failed (DAG {ti.dag_id}, run {ti.run_id})"
        self._reason = reason
        return reason

    def _failed_tasks(self, context: Context) -> list[str]:
        ti = context["ti"]
        try:
            states = ti.get_task_states(
                dag_id=ti.dag_id, task_group_id=self.group_id, run_ids=[ti.run_id]
            ).get(ti.run_id, {})
        except Exception as err:  # the reason is best effort; answering is what matters
            self.log.warning("Could not read the group's task states: %s", err)
            return []
        return sorted(task_id for task_id, state in states.items() if str(state) == "failed")


class _GroupAnswerOperator(SageMakerCallbackSuccessOperator):
    """``answer`` of a callback_handler group: skipped when ``wait`` pushed no message."""

    def __init__(self, *, wait_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_task_id = wait_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        message = context["ti"].xcom_pull(task_ids=self.wait_task_id)
        if not isinstance(message, Mapping) or not message.get("token"):
            raise AirflowSkipException(f"{self.wait_task_id} received no callback message: nothing to answer")
        self.message = dict(message)
        return super().execute(context)


class SageMakerCallbackFromAssetEventOperator(BaseOperator):
    """First task of an event-driven handler run: take the callback message from the triggering asset event.

    The run was scheduled by a :class:`~sagemaker_pipelines_provider.triggers.callback.
    SageMakerCallbackEventTrigger` watching ``asset``. The message (the event's ``extra["payload"]``) is
    re-claimed (hidden ``visibility_timeout`` s; the work tasks extend it) and returned like the sensor's
    result. If the scheduler folded several events into this run, the first is handled and the others are
    released at once, so the watcher fires them again and each gets its own run. A message already gone
    (answered and deleted by another run) makes this task, and so the group, skip.
    """

    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        asset: Asset,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.asset = asset
        self.visibility_timeout = visibility_timeout
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def execute(self, context: Context) -> dict[str, Any]:
        events = (
            context["triggering_asset_events"][self.asset] if context.get("triggering_asset_events") else []
        )
        payloads = [
            payload
            for event in events
            if isinstance(payload := (event.extra or {}).get("payload"), Mapping) and payload.get("token")
        ]
        if not payloads:
            raise AirflowSkipException(
                f"No callback message among the events of asset {self.asset.name!r} that triggered this run"
            )
        sqs = SageMakerCallbackQueueHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        chosen, others = dict(payloads[0]), payloads[1:]
        for other in others:
            sqs.release(str(other["queue_url"]), [str(other["receipt_handle"])])
        if others:
            self.log.info("Released %d more callback message(s) folded into this run", len(others))
        if not sqs.change_visibility(
            str(chosen["queue_url"]), str(chosen["receipt_handle"]), self.visibility_timeout
        ):
            raise AirflowSkipException(
                f"The callback message {chosen.get('message_id')} is gone from the queue (already answered "
                "and deleted, or delivered again to the watcher): nothing to do in this run"
            )
        chosen["visibility_timeout"] = self.visibility_timeout
        context["ti"].xcom_push(key=ARGUMENTS_XCOM_KEY, value=chosen.get("arguments") or {})
        return chosen


def refuse_routing_on_a_waiting_task(group_id: str, pipeline_execution_arn: Any) -> None:
    """Refuse, at parse time, a handler routed on a task that only ends once the execution has ended.

    The handler's tasks would run after that task, i.e. after the execution ended, while the execution
    waits at its Callback step for the handler's answer: neither would ever finish.
    """
    if not isinstance(pipeline_execution_arn, ResolveMixin):
        return
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    for task, _ in pipeline_execution_arn.iter_references():
        if isinstance(task, SageMakerPipelineExecutionSensor):
            what = "is a SageMakerPipelineExecutionSensor: it ends when the execution ends"
        elif isinstance(task, SageMakerPipelineOperator) and task.wait_for_completion:
            what = "waits for the execution to end (wait_for_completion=True)"
        else:
            continue
        raise ValueError(
            f"callback_handler({group_id!r}) is routed on the execution of task {task.task_id!r}, which "
            f"{what}. The handler would run only after that, but the execution waits at its Callback step "
            "for the handler's answer: neither would ever finish. Start the execution without waiting and "
            "wait for its end in another task:\n\n"
            "    start = SageMakerPipelineOperator(task_id=..., pipeline_name=...,\n"
            "                                      wait_for_completion=False)\n"
            "    handler = callback_handler(..., pipeline_execution_arn=start.execution_arn, ...)\n"
            "    done = SageMakerPipelineExecutionSensor(task_id=..., "
            "pipeline_execution_arn=start.execution_arn)\n"
            '    handler["answer"] >> done\n\n'
            "or let pipeline_chain build the three: "
            "chain.pipeline(name, callback=SageMakerCallbackWork(queue_url=..., work=...))."
        )


def _is_taskflow(work: Any) -> bool:
    return isinstance(work, _TaskDecorator)


def callback_handler(
    group_id: str,
    queue_url: str | None = None,
    *,
    pipeline_execution_arn: str | ResolveMixin | None = None,
    pipeline_name: str | None = None,
    match_arguments: dict[str, Any] | None = None,
    from_asset: Asset | None = None,
    work: Callable[..., Any] | None = None,
    outputs: Mapping[str, Any] | XComArg | Callable[[Any], Any] | None = None,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    sensor_kwargs: Mapping[str, Any] | None = None,
    aws_conn_id: str | None = "aws_default",
    region_name: str | None = None,
    **group_kwargs: Any,
) -> TaskGroup:
    """Build the TaskGroup that waits for one callback, runs ``work`` and answers the token.

    :param group_id: the TaskGroup id.
    :param queue_url: the callback queue (templated in the sensor); not needed with ``from_asset``.
    :param pipeline_execution_arn: route on the execution (templated): typically ``start.execution_arn`` of a
        ``SageMakerPipelineOperator`` started with ``wait_for_completion=False`` (one that waits for
        completion is refused: it would wait for this handler's answer, and the handler for it).
    :param pipeline_name: route on the pipeline name.
    :param match_arguments: route on a subset of the message's arguments.
    :param from_asset: event-driven mode: take the message from the asset event (of a
        ``SageMakerCallbackEventTrigger`` watcher) that scheduled this run instead of waiting on the queue.
    :param work: a TaskFlow task (``@task`` function), called with the message's arguments dict; or a
        callable called once at parse time, inside the group, with :class:`SageMakerCallbackArguments`, that
        creates the work operators and returns them (one, a list, or an XComArg). ``None``: no work, the
        callback is answered at once.
    :param outputs: the output parameters of the success answer: a dict (values may be templates or
        XComArgs), an XComArg of a dict, or a callable taking what ``work`` returned and giving one of
        those. Default: when ``work`` gives an XComArg (a TaskFlow ``work``, or a builder returning a TaskFlow
        call), the dict it resolves to; else no outputs.
    :param visibility_timeout: how long the message stays hidden without a live task extending it.
    :param sensor_kwargs: more ``SageMakerCallbackSensor`` arguments (``deferrable``, ``mode``, ``timeout``,
        ``poke_interval``, ``wait_time_seconds``...).
    :param aws_conn_id: connection for SQS and SageMaker.
    :param region_name: AWS region.
    :param group_kwargs: more ``TaskGroup`` arguments (``tooltip``, ``default_args``...).
    """
    if from_asset is None and not queue_url:
        raise ValueError(
            f"callback_handler({group_id!r}): pass queue_url (the Callback step's SqsQueueUrl), or "
            "from_asset=<Asset watched by a SageMakerCallbackEventTrigger> for the event-driven form"
        )
    refuse_routing_on_a_waiting_task(group_id, pipeline_execution_arn)
    aws: dict[str, Any] = {"aws_conn_id": aws_conn_id, "region_name": region_name}
    with TaskGroup(group_id, **group_kwargs) as group:
        wait: BaseOperator
        if from_asset is not None:
            wait = SageMakerCallbackFromAssetEventOperator(
                task_id=WAIT_TASK_ID, asset=from_asset, visibility_timeout=visibility_timeout, **aws
            )
        else:
            wait = SageMakerCallbackSensor(
                task_id=WAIT_TASK_ID,
                queue_url=str(queue_url),
                pipeline_execution_arn=pipeline_execution_arn,
                pipeline_name=pipeline_name,
                match_arguments=match_arguments,
                visibility_timeout=visibility_timeout,
                **aws,
                **dict(sensor_kwargs or {}),
            )
        before = {t.task_id for t in group.iter_tasks()}
        result: Any = None
        if work is not None:
            if _is_taskflow(work):
                wait_output: Any = wait.output
                result = work(wait_output[ARGUMENTS_XCOM_KEY])
            else:
                result = work(SageMakerCallbackArguments(wait))
        work_tasks = [t for t in group.iter_tasks() if t.task_id not in before]
        work_ids = {t.task_id for t in work_tasks}
        hook_params = {**aws, "verify": None, "config": None}
        for task in work_tasks:
            if not any(up in work_ids for up in task.upstream_task_ids):
                wait >> task
            _attach_hold(task, wait.task_id, hook_params)

        if callable(outputs) and not isinstance(outputs, XComArg):
            answer_outputs: Any = outputs(result)
        elif outputs is not None:
            answer_outputs = outputs
        elif isinstance(result, XComArg):
            answer_outputs = result
        else:
            answer_outputs = None
        answer = _GroupAnswerOperator(
            task_id=ANSWER_TASK_ID,
            wait_task_id=wait.task_id,
            outputs=answer_outputs,
            trigger_rule="none_failed_min_one_success",
            **aws,
        )
        leaves = [t for t in work_tasks if not any(down in work_ids for down in t.downstream_task_ids)]
        for leaf in leaves:
            leaf >> answer
        wait >> answer
        answer_failure = _GroupAnswerFailureOperator(
            task_id=ANSWER_FAILURE_TASK_ID,
            wait_task_id=wait.task_id,
            group_id=group.group_id or group_id,
            trigger_rule="one_failed",
            **aws,
        )
        for task in [wait, *work_tasks, answer]:
            task >> answer_failure
    return group


__all__ = [
    "SageMakerCallbackArguments",
    "SageMakerCallbackFromAssetEventOperator",
    "callback_handler",
    "hold_claimed_message",
    "refuse_routing_on_a_waiting_task",
]

# Former names (deprecated): importable from here, with a warning.
__getattr__ = renamed(
    __name__,
    globals(),
    {
        "CallbackArguments": "SageMakerCallbackArguments",
        "CallbackFromAssetEventOperator": "SageMakerCallbackFromAssetEventOperator",
    },
)
