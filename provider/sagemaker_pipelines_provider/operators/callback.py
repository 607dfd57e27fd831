"""Answer a SageMaker callback token, then delete its message: the callback answer operators.

:class:`SageMakerCallbackSuccessOperator`, :class:`SageMakerCallbackFailureOperator` (idempotent per
token, kind and content; the message is deleted only once the token is answered) and
:class:`SageMakerCallbackReconcileOperator` (overdue callbacks). Their contract: ``docs/callbacks.md``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException
from botocore.exceptions import ClientError

from sagemaker_pipelines_provider.callbacks import lease
from sagemaker_pipelines_provider.callbacks.liveness import SETTLED_TOKENS
from sagemaker_pipelines_provider.callbacks.message import (
    STOPPING,
    TOKEN_RE,
    answer_request_token,
    mask_token,
)
from sagemaker_pipelines_provider.callbacks.reconciler import answer_overdue_callbacks
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import CallbackAnswer, SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.callback import DEFAULT_VISIBILITY_TIMEOUT
from sagemaker_pipelines_provider.utils.backoff import error_code
from sagemaker_pipelines_provider.utils.deprecation import renamed

if TYPE_CHECKING:
    from airflow.sdk import Context


#: Rounds (of up to 10 messages) of the sweep after a lost claim: it reads through that much backlog.
LOST_CLAIM_SWEEP_ROUNDS = 20


def stopping_reason(message: Mapping[str, Any], answered_by: str) -> str:
    """The failure reason sent for a ``Stopping`` message (the work is not done; the execution stops)."""
    return (
        f"Stopped: pipeline execution {message.get('pipeline_execution_arn') or ''} is stopping; "
        f"callback answered without running the work, by Airflow task {answered_by}"
    )


def task_label(context: Context) -> str:
    """``dag_id.task_id (run run_id)``, how answers name the Airflow task that sent them.

    No try number: every try of a task sends the same answer, so a retry is a true repeat of the request.
    """
    ti = context["ti"]
    return f"{ti.dag_id}.{ti.task_id} (run {ti.run_id})"


class _CallbackAnswerOperator(AwsBaseOperator[SageMakerPipelineHook]):
    """Shared plumbing of the answer operators (contract: ``docs/callbacks.md``)."""

    aws_hook_class = SageMakerPipelineHook
    answer_kind = ""

    def __init__(
        self,
        *,
        token: str | None = None,
        message: Mapping[str, Any] | None = None,
        queue_url: str | None = None,
        receipt_handle: str | None = None,
        delete_message: bool = True,
        sweep_copies: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.message = message
        self.queue_url = queue_url
        self.receipt_handle = receipt_handle
        self.delete_message = delete_message
        self.sweep_copies = sweep_copies

    # -- inputs --------------------------------------------------------------------------------------------

    def _message(self) -> dict[str, Any]:
        if self.message is None or self.message == "":
            return {}
        if not isinstance(self.message, Mapping):
            raise AirflowException(
                f"{self.task_id}: message must be the dict SageMakerCallbackSensor returns (pass the "
                f"sensor's XComArg, e.g. message=wait.output), got {type(self.message).__name__}"
            )
        return dict(self.message)

    def _token(self, message: Mapping[str, Any]) -> str:
        token = self.token or message.get("token")
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            raise AirflowException(
                f"{self.task_id}: no valid callback token to answer (got "
                f"{'nothing' if not token else f'{len(str(token))} characters'}); pass token= or the "
                "sensor's message= (a SageMaker callback token is 10 letters or digits)"
            )
        return token

    @cached_property
    def queue_hook(self) -> SageMakerCallbackQueueHook:
        """The SQS hook (same connection settings as the SageMaker hook)."""
        return SageMakerCallbackQueueHook(**self._hook_parameters)

    # -- steps ---------------------------------------------------------------------------------------------

    def _send(self, token: str, context: Context, message: Mapping[str, Any]) -> tuple[str, CallbackAnswer]:
        raise NotImplementedError

    def execute(self, context: Context) -> dict[str, Any]:
        message = self._message()
        token = self._token(message)
        claim = self._hold_claim(token, message)
        try:
            kind, answer = self._send(token, context, message)
        except ClientError as err:
            self._release_claim(message)
            if error_code(err) == "ResourceNotFound":
                raise AirflowException(
                    f"{self.task_id}: SageMaker does not know callback token {mask_token(token)} in region "
                    f"{self.hook.conn_region_name}: check the connection's region/account, or whether the "
                    "execution still exists. The message was left on the queue."
                ) from err
            raise
        except BaseException:
            self._release_claim(message)
            raise
        SETTLED_TOKENS.add([token])
        if answer.already_answered:
            self.log.info(
                "Callback token %s was already answered; SageMaker kept the first answer", mask_token(token)
            )
        else:
            self.log.info("Answered callback token %s with %s", mask_token(token), kind)
        claim_lost = claim is not None and claim.gone
        deleted, copies = self._delete(token, message, answer, claim_lost=claim_lost)
        return {
            "answer": kind,
            "already_answered": answer.already_answered,
            "pipeline_execution_arn": answer.pipeline_execution_arn or message.get("pipeline_execution_arn"),
            "token": mask_token(token),
            "message_deleted": deleted,
            "copies_deleted": copies,
            "claim_lost": claim_lost,
        }

    def _where(self, message: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(queue URL, receipt handle) of the message to delete."""
        queue_url = self.queue_url or message.get("queue_url")
        receipt_handle = self.receipt_handle or message.get("receipt_handle")
        return (str(queue_url) if queue_url else None), (str(receipt_handle) if receipt_handle else None)

    def _hold_claim(self, token: str, message: Mapping[str, Any]) -> lease.VisibilityLease | None:
        """Renew the claim right before answering, and keep renewing it until the message is deleted.

        Holding the claim up to the delete is what makes the delete effective: SQS documents that a
        DeleteMessage with a receipt handle other than the most recent one may succeed without deleting.
        A claim that cannot be renewed (``gone``: the message's visibility lapsed and it was received
        elsewhere, or another handler deleted it) is *lost*: the answer still goes out, and then the copies
        visible on the queue are swept; a copy in flight at another consumer is deleted by whichever
        receiver of this provider gets it next, since every receiver checks that a token still waits before
        handing its message over (:mod:`~sagemaker_pipelines_provider.callbacks.liveness`).
        """
        queue_url, receipt_handle = self._where(message)
        if not self.delete_message or not queue_url or not receipt_handle:
            return None
        visibility = int(message.get("visibility_timeout") or DEFAULT_VISIBILITY_TIMEOUT)
        return lease.hold(self.queue_hook, queue_url, receipt_handle, visibility, token=token)

    def _release_claim(self, message: Mapping[str, Any]) -> None:
        """Stop renewing the claim (the message then returns after its visibility timeout)."""
        queue_url, receipt_handle = self._where(message)
        if queue_url and receipt_handle:
            lease.forget(queue_url, receipt_handle)

    def _delete(
        self, token: str, message: Mapping[str, Any], answer: CallbackAnswer, *, claim_lost: bool = False
    ) -> tuple[bool, int]:
        """Delete the answered message and, when copies are likely, sweep them (a gone one is no error).

        ``(deleted, copies)``: ``deleted`` only when the delete was made under a claim held up to it (after
        a lost claim, SQS may accept the delete without deleting); ``copies`` deleted by the sweep.
        """
        if not self.delete_message:
            return False, 0
        queue_url, receipt_handle = self._where(message)
        if not queue_url:
            self.log.warning(
                "No queue_url/message given: the token is answered but its message is not deleted; it will "
                "be delivered again and then found already answered and deleted"
            )
            return False, 0
        sqs = self.queue_hook
        deleted = bool(receipt_handle) and sqs.delete(queue_url, str(receipt_handle)) and not claim_lost
        if receipt_handle:
            lease.forget(queue_url, receipt_handle)
        if claim_lost:
            self.log.warning(
                "The claim on the message of token %s was lost before the answer (its visibility lapsed and "
                "it was received again elsewhere, or another handler deleted it): sweeping its visible "
                "copies; a copy still in flight elsewhere is deleted by the next receiver that gets it",
                mask_token(token),
            )
        copies = 0
        if claim_lost and self.sweep_copies is not False:
            # the copy is on the queue somewhere: look through the backlog, not just its first batch
            copies = sqs.delete_token_copies(
                queue_url, token, rounds=LOST_CLAIM_SWEEP_ROUNDS, through_backlog=True
            )
        elif self._should_sweep(message, answer):
            copies = sqs.delete_token_copies(queue_url, token)
        return deleted, copies

    def _should_sweep(self, message: Mapping[str, Any], answer: CallbackAnswer) -> bool:
        """Whether other copies of the token's message are likely on the queue (``sweep_copies=None``).

        Yes when the claiming batch held other copies, for a Stopping message (its original exists), when
        the token was already answered (another copy was handled), and when the execution is stopping
        (a Stopping message is coming or came). A sweep receives (and so counts towards the redrive
        policy of) other handlers' messages, so it is not done on every answer.
        """
        if self.sweep_copies is not None:
            return self.sweep_copies
        if int(message.get("copies_seen") or 0) > 0 or answer.already_answered:
            return True
        if str(message.get("status") or "").lower() == STOPPING.lower():
            return True
        arn = answer.pipeline_execution_arn or message.get("pipeline_execution_arn")
        if not arn:
            return False
        try:
            status = self.hook.describe_pipeline_execution(str(arn)).get("PipelineExecutionStatus")
        except ClientError as err:
            self.log.info("Could not describe %s (%s); sweeping for copies to be safe", arn, err)
            return True
        return status in ("Stopping", "Stopped")


class SageMakerCallbackSuccessOperator(_CallbackAnswerOperator):
    """Answer a callback token with success and ``outputs`` (the step's output parameters), then delete it.

    :param token: the callback token (templated); defaults to ``message["token"]``.
    :param outputs: ``{name: value}`` (templated, or an XComArg); values are flattened to strings
        (``True`` -> ``"true"``, dicts/lists -> compact JSON); at most 50 outputs, names ≤ 256 and values
        ≤ 1024 characters once flattened — checked before anything is sent.
    :param message: the sensor's result dict (templated / XComArg): token, queue URL and receipt handle.
    :param queue_url: queue of the message to delete (templated), when ``message`` is not given.
    :param receipt_handle: receipt handle of the message to delete (templated).
    :param delete_message: delete the message once the token is answered (default True).
    :param sweep_copies: also delete the other visible copies of the token's message: ``True`` always,
        ``False`` never, ``None`` (default) when copies are likely (see ``_should_sweep``).

    If ``message`` is a ``Stopping`` message (the execution was stopped while the callback waited), the token
    is answered with a failure saying so instead: the outputs of work that did not run are not sent.
    Returns ``{"answer", "already_answered", "pipeline_execution_arn", "token" (masked), "message_deleted",
    "copies_deleted", "claim_lost"}``.
    """

    template_fields: Sequence[str] = aws_template_fields(
        "token", "outputs", "message", "queue_url", "receipt_handle"
    )
    answer_kind = "success"
    ui_color = "#d9f2d9"

    def __init__(self, *, outputs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outputs = outputs

    def _send(self, token: str, context: Context, message: Mapping[str, Any]) -> tuple[str, CallbackAnswer]:
        if str(message.get("status") or "").lower() == STOPPING.lower():
            reason = stopping_reason(message, task_label(context))
            self.log.info("The execution is stopping: answering the callback with a failure instead")
            return "failure", self.hook.send_step_failure(token, reason)
        outputs = self.outputs
        if outputs is not None and not isinstance(outputs, Mapping):
            raise AirflowException(
                f"{self.task_id}: outputs must be a dict of output name -> value, got "
                f"{type(outputs).__name__}"
            )
        return "success", self.hook.send_step_success(token, dict(outputs or {}))


class SageMakerCallbackFailureOperator(_CallbackAnswerOperator):
    """Answer a callback token with failure and ``reason``, then delete its message.

    :param reason: why the step failed (templated); cut to 256 characters, ending with a marker. The
        SageMaker execution fails with it.
    :param token, message, queue_url, receipt_handle, delete_message, sweep_copies: as for
        :class:`SageMakerCallbackSuccessOperator`.
    """

    template_fields: Sequence[str] = aws_template_fields(
        "token", "reason", "message", "queue_url", "receipt_handle"
    )
    answer_kind = "failure"
    ui_color = "#f7d9d9"

    def __init__(self, *, reason: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason

    def failure_reason(self, context: Context, message: Mapping[str, Any]) -> str:
        """The reason to send; subclasses compute it from the run (see ``callback_handler``)."""
        return str(self.reason or f"Failed by Airflow task {task_label(context)}")

    def _send(self, token: str, context: Context, message: Mapping[str, Any]) -> tuple[str, CallbackAnswer]:
        reason = self.failure_reason(context, message)
        return "failure", self.hook.send_step_failure(token, reason)


class SageMakerCallbackReconcileOperator(AwsBaseOperator[SageMakerPipelineHook]):
    """Answer with failure the callback steps of ``pipeline_name`` waiting longer than ``older_than``.

    The reconciler of :mod:`sagemaker_pipelines_provider.callbacks.reconciler` as a task, for a maintenance
    DAG (say, hourly): it covers what a handler cannot — a message lost before any handler saw it, a DAG
    run killed before its failure path ran. Idempotent: a token already answered is reported as such.

    :param pipeline_name: the pipeline whose running executions are checked (templated).
    :param older_than: the deadline, as a ``timedelta`` or seconds.
    :param reason: failure reason (templated); default says how long the step waited.
    :param report_only: only report what would be answered (a dry run).
    :param sweep_messages: delete the answered steps' visible messages from their ``SqsQueueUrl``.

    Returns one dict per overdue step: execution ARN, step name, masked token, queue, start, wait,
    ``answered``, ``already_answered``, ``copies_deleted``.
    """

    aws_hook_class = SageMakerPipelineHook
    template_fields: Sequence[str] = aws_template_fields("pipeline_name", "reason")

    def __init__(
        self,
        *,
        pipeline_name: str,
        older_than: dt.timedelta | float,
        reason: str | None = None,
        report_only: bool = False,
        sweep_messages: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_name = pipeline_name
        self.older_than = (
            older_than if isinstance(older_than, dt.timedelta) else dt.timedelta(seconds=older_than)
        )
        self.reason = reason
        self.report_only = report_only
        self.sweep_messages = sweep_messages

    def execute(self, context: Context) -> list[dict[str, Any]]:
        hook_params = self._hook_parameters
        reports = answer_overdue_callbacks(
            self.hook,
            self.pipeline_name,
            older_than=self.older_than,
            reason=self.reason or None,
            dry_run=self.report_only,
            queue_hook_factory=(lambda: SageMakerCallbackQueueHook(**hook_params))
            if self.sweep_messages
            else None,
        )
        self.log.info(
            "%d callback step(s) of %s waiting longer than %s%s",
            len(reports),
            self.pipeline_name,
            self.older_than,
            " (report only: nothing answered)" if self.report_only else "",
        )
        return reports


__all__ = [
    "SageMakerCallbackFailureOperator",
    "SageMakerCallbackReconcileOperator",
    "SageMakerCallbackSuccessOperator",
    "answer_request_token",
    "stopping_reason",
]

# Former names (deprecated): importable from here, with a warning.
__getattr__ = renamed(
    __name__,
    globals(),
    {
        "SendCallbackSuccessOperator": "SageMakerCallbackSuccessOperator",
        "SendCallbackFailureOperator": "SageMakerCallbackFailureOperator",
        "AnswerOverdueCallbacksOperator": "SageMakerCallbackReconcileOperator",
    },
)
