"""SageMakerPipelineExecutionSensor: wait for a pipeline execution started elsewhere.

Same status policy and result as the operator (README "Starting and waiting", ``docs/result-schema.md``),
in ``poke``, ``reschedule`` and deferrable modes. It never stops the execution it watches.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk import PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException

from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.links.pipeline import EXECUTION_ARN_XCOM_KEY, SageMakerPipelineExecutionLink
from sagemaker_pipelines_provider.results import ExecutionResult, execution_verdict
from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger
from sagemaker_pipelines_provider.utils.event_waits import (
    check_event_queue,
    checked_safety_poll_interval,
    event_trigger_kwargs,
    log_polling_wait,
)
from sagemaker_pipelines_provider.utils.events import execution_event_result
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions._internal.mixins import ResolveMixin


class SageMakerPipelineExecutionSensor(AwsBaseSensor[SageMakerPipelineHook]):
    """Wait until a SageMaker pipeline execution ends; return its result.

    :param pipeline_execution_arn: the execution to watch. Templated (typically pulled from the XCom of
        the task that started it).
    :param allow_stopped: a Stopped execution is a success instead of a failure.
    :param deferrable: wait in the triggerer; default from ``[operators] default_deferrable``.
    :param event_queue_url: an SQS queue fed by SageMaker's status events (``docs/events.md``): the
        deferred wait wakes on its events and polls only every ``safety_poll_interval``. Checked
        (GetQueueAttributes) at the start of ``execute``. ``poke`` / ``reschedule`` modes poll as without
        it. Templated.
    :param safety_poll_interval: seconds between the safety polls of an event-driven wait; default
        ``[sagemaker_pipelines] event_safety_poll_interval`` (600).
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on every Amazon provider sensor.

    ``poke_interval``, ``timeout``, ``mode`` and the other ``BaseSensorOperator`` arguments apply; in
    deferrable mode ``poke_interval`` is the trigger's poll interval and ``timeout`` the deferral timeout.
    ``poke_interval`` defaults to ``[sagemaker_pipelines] default_poll_interval`` (30 s), not to Airflow's
    60 s (:mod:`~sagemaker_pipelines_provider.utils.poll_interval`).
    """

    aws_hook_class = SageMakerPipelineHook
    template_fields: Sequence[str] = aws_template_fields("pipeline_execution_arn", "event_queue_url")
    operator_extra_links = (SageMakerPipelineExecutionLink(),)
    ui_color = "#f0eee4"

    def __init__(
        self,
        *,
        pipeline_execution_arn: str | ResolveMixin,
        allow_stopped: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        event_queue_url: str | None = None,
        safety_poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", default_poll_interval())
        super().__init__(**kwargs)
        self.pipeline_execution_arn = cast(str, pipeline_execution_arn)  # a str once rendered
        self.allow_stopped = allow_stopped
        self.deferrable = deferrable
        self.event_queue_url = event_queue_url
        self.safety_poll_interval = checked_safety_poll_interval(safety_poll_interval)

    def execute(self, context: Context) -> Any:
        check_event_queue(self)
        context["ti"].xcom_push(key=EXECUTION_ARN_XCOM_KEY, value=self.pipeline_execution_arn)
        if not self.deferrable:
            log_polling_wait(self.log, self.event_queue_url)
            return super().execute(context)
        verdict = self.poke(context)  # already over: no need to defer
        if isinstance(verdict, PokeReturnValue) and verdict.is_done:
            return verdict.xcom_value
        self.defer(
            trigger=SageMakerPipelineExecutionTrigger(
                self.pipeline_execution_arn,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
                poll_interval=float(self.poke_interval),
                allow_stopped=self.allow_stopped,
                stop_on_kill=False,
                step_types=self.hook.step_types(self.pipeline_execution_arn),
                **event_trigger_kwargs(self.event_queue_url, self.safety_poll_interval),
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        hook = self.hook
        arn = self.pipeline_execution_arn
        describe = hook.describe_pipeline_execution(arn)
        status = describe["PipelineExecutionStatus"]
        self.log.info("Pipeline execution %s is %s", arn, status)
        if execution_outcome(status, allow_stopped=self.allow_stopped) is Outcome.RUNNING:
            return False
        verdict = execution_verdict(
            *hook.read_execution(arn, describe=describe),
            allow_stopped=self.allow_stopped,
            step_types=hook.step_types(arn),
        )
        if verdict.outcome is Outcome.SUCCESS:
            return PokeReturnValue(is_done=True, xcom_value=verdict.result)
        raise AirflowException(verdict.message)

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> ExecutionResult:
        """Deferral target of :class:`SageMakerPipelineExecutionTrigger`: apply its verdict."""
        return execution_event_result(event)
