"""SageMakerCallbackSensor: wait for a SageMaker callback message on an SQS queue, and claim it.

The matching message is claimed (hidden), never deleted here; a message whose token is already answered
is deleted and the sensor keeps waiting. The contract and the result dict: ``docs/callbacks.md``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, conf
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from sagemaker_pipelines_provider.callbacks.liveness import LiveBatch, TokenState
from sagemaker_pipelines_provider.callbacks.message import (
    MALFORMED_LOG,
    CallbackMessage,
    CallbackRoute,
    describe,
    mask_token,
)
from sagemaker_pipelines_provider.hooks.callback_queue import (
    MAX_VISIBILITY_TIMEOUT,
    MAX_WAIT_TIME_SECONDS,
    SageMakerCallbackQueueHook,
)
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.callback import (
    DEFAULT_INSPECT_VISIBILITY_TIMEOUT,
    DEFAULT_VISIBILITY_TIMEOUT,
    DEFAULT_WAIT_TIME_SECONDS,
    SageMakerCallbackTrigger,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions._internal.mixins import ResolveMixin

#: XCom key under which the sensor also pushes the message's arguments (``sensor.output["arguments"]``).
ARGUMENTS_XCOM_KEY = "arguments"


class SageMakerCallbackSensor(AwsBaseSensor[SageMakerCallbackQueueHook]):
    """Wait for a SageMaker Pipelines callback message on ``queue_url`` and claim it (``docs/callbacks.md``).

    Routing: every condition given must hold; none given takes any callback message on the queue.

    :param queue_url: the SQS queue the Callback step sends to (templated).
    :param pipeline_execution_arn: only messages of this execution (templated; typically
        ``"{{ ti.xcom_pull(task_ids='start', key='pipeline_execution_arn') }}"`` from an upstream
        ``SageMakerPipelineOperator``, which pushes it as soon as the execution starts).
    :param pipeline_name: only messages of executions of this pipeline (name or ARN; templated).
    :param match_arguments: a dict that must be a subset of the message's ``arguments`` (templated).
    :param visibility_timeout: seconds the claimed message stays hidden; the handler's tasks extend it while
        they run, and it comes back this long after they stop (crash). At most 12 hours.
    :param wait_time_seconds: SQS long-polling wait of each receive (1-20; 20 in production, lower in tests).
    :param inspect_visibility_timeout: seconds a received message stays hidden while it is being routed;
        malformed messages come back after this long.
    :param deferrable: wait in the triggerer, where one receiver per queue serves every waiting sensor
        (default: ``[operators] default_deferrable``). Otherwise ``mode="poke"`` or ``"reschedule"``
        receive in the worker, one long poll per poke.
    """

    aws_hook_class = SageMakerCallbackQueueHook
    template_fields: Sequence[str] = aws_template_fields(
        "queue_url", "pipeline_execution_arn", "pipeline_name", "match_arguments"
    )
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        queue_url: str,
        pipeline_execution_arn: str | ResolveMixin | None = None,
        pipeline_name: str | None = None,
        match_arguments: dict[str, Any] | None = None,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        wait_time_seconds: int = DEFAULT_WAIT_TIME_SECONDS,
        inspect_visibility_timeout: int = DEFAULT_INSPECT_VISIBILITY_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 1 <= int(visibility_timeout) <= MAX_VISIBILITY_TIMEOUT:
            raise ValueError(
                f"{self.task_id}: visibility_timeout must be 1-{MAX_VISIBILITY_TIMEOUT} seconds "
                f"(SQS limit), got {visibility_timeout}"
            )
        if not 0 <= int(wait_time_seconds) <= MAX_WAIT_TIME_SECONDS:
            raise ValueError(
                f"{self.task_id}: wait_time_seconds must be 0-{MAX_WAIT_TIME_SECONDS} (SQS long polling "
                f"limit), got {wait_time_seconds}"
            )
        self.queue_url = queue_url
        # a str (or None) once the templated fields are rendered
        self.pipeline_execution_arn = cast("str | None", pipeline_execution_arn)
        self.pipeline_name = pipeline_name
        self.match_arguments = match_arguments
        self.visibility_timeout = int(visibility_timeout)
        self.wait_time_seconds = int(wait_time_seconds)
        self.inspect_visibility_timeout = int(inspect_visibility_timeout)
        self.deferrable = deferrable

    @property
    def route(self) -> CallbackRoute:
        """The rendered routing conditions."""
        if self.match_arguments is not None and not isinstance(self.match_arguments, dict):
            raise AirflowException(
                f"{self.task_id}: match_arguments must render to a dict of argument name -> value, got "
                f"{type(self.match_arguments).__name__}"
            )
        return CallbackRoute.from_fields(
            self.pipeline_execution_arn, self.pipeline_name, self.match_arguments
        )

    def execute(self, context: Context) -> Any:
        if not self.queue_url:
            raise AirflowException(f"{self.task_id}: queue_url rendered empty; pass the callback queue URL")
        self.log.info("Waiting on %s for %s", self.queue_url, self.route.describe())
        if not self.deferrable:
            return super().execute(context)
        timeout_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.timeout)
        self.defer(
            trigger=SageMakerCallbackTrigger(
                queue_url=self.queue_url,
                pipeline_execution_arn=self.pipeline_execution_arn,
                pipeline_name=self.pipeline_name,
                match_arguments=self.match_arguments,
                visibility_timeout=self.visibility_timeout,
                wait_time_seconds=self.wait_time_seconds,
                inspect_visibility_timeout=self.inspect_visibility_timeout,
                timeout_at=timeout_at.isoformat(),
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )
        return None  # pragma: no cover - defer raises

    def poke(self, context: Context) -> PokeReturnValue:
        """One long-polling receive; claim the first matching message (poke and reschedule modes)."""
        hook = self.hook
        raw = hook.receive(
            self.queue_url,
            wait_time_seconds=self.wait_time_seconds,
            visibility_timeout=self.inspect_visibility_timeout,
        )
        if not raw:
            return PokeReturnValue(False)
        batch = LiveBatch(raw, self.queue_url, [self.route])
        while todo := batch.unchecked():
            batch.record({m.token: self._token_state(m) for m in todo})
        plan = batch.plan
        for error in plan.malformed:
            MALFORMED_LOG.report(self.log, error, self.queue_url)  # type: ignore[arg-type]
        release = [m.receipt_handle for m in plan.release]
        result: dict[str, Any] | None = None
        try:
            for _index, message, _copies in plan.claims:
                if hook.change_visibility(self.queue_url, message.receipt_handle, self.visibility_timeout):
                    self.log.info("Claimed %s", describe(message))
                    result = message.to_result(visibility_timeout=self.visibility_timeout)
                else:
                    self.log.info("%s vanished before it could be claimed", describe(message))
        finally:
            if release:
                hook.release(self.queue_url, release)
            for message in plan.settled:
                if hook.delete(self.queue_url, message.receipt_handle):
                    self.log.info("Deleted %s: its token is already answered", describe(message))
        if result is None:
            return PokeReturnValue(False)
        return PokeReturnValue(True, self._deliver(context, result))

    @cached_property
    def sagemaker_hook(self) -> SageMakerPipelineHook:
        """The SageMaker hook (same connection settings) that checks whether a token still waits."""
        return SageMakerPipelineHook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )

    def _token_state(self, message: CallbackMessage) -> TokenState:
        """Whether the message's token still waits (UNKNOWN when that cannot be told: hand it over)."""
        if not message.pipeline_execution_arn:
            return TokenState.UNKNOWN
        try:
            return self.sagemaker_hook.callback_token_state(message.pipeline_execution_arn, message.token)
        except Exception as err:  # the answer settles it later: refused as already answered, then deleted
            self.log.warning(
                "Could not check whether callback token %s is still waiting (%s: %s); taking it unchecked",
                mask_token(message.token),
                type(err).__name__,
                err,
            )
            return TokenState.UNKNOWN

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired; return the claimed message's result dict."""
        if not event:
            raise AirflowException(f"{self.task_id}: resumed without a trigger event")
        status = event.get("status")
        if status == "timeout":
            raise AirflowSensorTimeout(
                f"{self.task_id}: no callback message for {event.get('route')} arrived on "
                f"{event.get('queue_url')} within {self.timeout}s"
            )
        if status != "success" or not isinstance(event.get("message"), dict):
            raise AirflowException(
                f"{self.task_id}: waiting for a callback message on {event.get('queue_url')} failed: "
                f"{event.get('error', status)}. Check the queue URL, the connection's region and its "
                "sqs:ReceiveMessage / sqs:ChangeMessageVisibility permissions."
            )
        result: dict[str, Any] = event["message"]
        self.log.info(
            "Received callback message %s of %s (status %s)",
            result.get("message_id"),
            result.get("pipeline_execution_arn"),
            result.get("status") or "waiting",
        )
        # The claim was taken in the triggerer, before the task resumed: renew it now. A claim that lapsed
        # meanwhile (the message is visible again, or was received elsewhere: this receipt handle no longer
        # deletes it) is not worth handing downstream: wait again, the message comes back.
        if not self.hook.change_visibility(
            str(result["queue_url"]), str(result["receipt_handle"]), self.visibility_timeout
        ):
            self.log.warning(
                "The claim on callback message %s lapsed before this task resumed; waiting for it again",
                result.get("message_id"),
            )
            return self.execute(context)
        return self._deliver(context, result)

    def _deliver(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        context["ti"].xcom_push(key=ARGUMENTS_XCOM_KEY, value=result.get("arguments") or {})
        return result


__all__ = ["ARGUMENTS_XCOM_KEY", "SageMakerCallbackSensor"]
