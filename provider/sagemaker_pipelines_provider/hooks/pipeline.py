"""SageMakerPipelineHook: every SageMaker Pipelines call this provider makes, synchronous and asynchronous.

An ``AwsBaseHook`` (client type ``sagemaker``). Every call retries throttling and 5xx within one bounded
budget, every mutating call carries a derived ``ClientRequestToken``, list calls return every page: see
README "Starting and waiting" and :mod:`~sagemaker_pipelines_provider.utils.backoff`. The result helpers
(``build_execution_result``, ``failure_message``, ``step_transitions``) live in
:mod:`sagemaker_pipelines_provider.results` and are importable from here too.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError

from sagemaker_pipelines_provider.callbacks.liveness import TokenState, token_state
from sagemaker_pipelines_provider.callbacks.message import answer_request_token, mask_token, redact_token
from sagemaker_pipelines_provider.definition import (
    DefinitionError,
    ParameterError,
    PipelineDefinition,
    coerce_parameters,
    describe_parameters,
    execution_parameters,
    parse_definition,
)
from sagemaker_pipelines_provider.results import (
    ExecutionResult,
    build_execution_result,
    failure_message,
    step_outputs,
    step_transitions,
)
from sagemaker_pipelines_provider.utils.arn import ExecutionArn
from sagemaker_pipelines_provider.utils.backoff import (
    DEFAULT_POLICY,
    BackoffPolicy,
    acall_with_backoff,
    call_with_backoff,
    error_code,
)
from sagemaker_pipelines_provider.utils.status import is_terminal

log = logging.getLogger(__name__)

#: SageMaker's limits for SendPipelineExecutionStepSuccess / Failure.
MAX_CALLBACK_OUTPUTS = 50
MAX_OUTPUT_NAME_LENGTH = 256
MAX_OUTPUT_VALUE_LENGTH = 1024
MAX_FAILURE_REASON_LENGTH = 256
TRUNCATION_MARKER = "...[truncated]"

#: A stop is issued from on_kill paths that have little time: its transient-retry budget is shorter.
STOP_BUDGET_SECONDS = 25.0


class PipelineParametersInvalid(ValueError):
    """Execution parameters do not fit the pipeline's definition; nothing was started.

    The message names the pipeline, every problem, and the pipeline's parameters with types and defaults.
    """


class CallbackOutputsInvalid(ValueError):
    """Callback outputs break SageMaker's limits (more than 50, or a name/value too long)."""


@dataclass(frozen=True)
class CallbackAnswer:
    """What answering a callback token did.

    ``already_answered`` is True when SageMaker refused the answer because the token was already
    answered (by this caller with another ``ClientRequestToken``, or by someone else) or its step is no
    longer waiting: the step's fate is decided and this answer changed nothing. A repeat of the *same*
    answer with the *same* ``ClientRequestToken`` is not that case: SageMaker treats it as the same
    request and answers as it did the first time (``already_answered`` False).
    ``pipeline_execution_arn`` is None when SageMaker did not return it (the refused case).
    """

    pipeline_execution_arn: str | None
    already_answered: bool = False


@dataclass(frozen=True)
class PipelineInfo:
    """DescribePipeline's answer and the parsed definition (``None`` if it could not be parsed fully)."""

    name: str
    arn: str
    describe: Mapping[str, Any]
    definition: PipelineDefinition | None
    parameters_definition: PipelineDefinition

    @property
    def step_types(self) -> dict[str, str]:
        """Step name -> step Type, from the definition (empty when it could not be parsed)."""
        if self.definition is None:
            return {}
        return {name: step.type for name, step in self.definition.steps.items()}


class SageMakerPipelineHook(AwsBaseHook):
    """Interact with Amazon SageMaker Pipelines (client type ``sagemaker``).

    :param backoff_policy: bounds of the retry loop for throttling, 5xx and capacity errors; defaults
        to :data:`~sagemaker_pipelines_provider.utils.backoff.DEFAULT_POLICY`.

    Other arguments are ``AwsBaseHook``'s: ``aws_conn_id`` (default ``aws_default``), ``region_name``,
    ``verify``, ``config`` (a botocore ``Config`` or dict).
    """

    def __init__(self, *args: Any, backoff_policy: BackoffPolicy | None = None, **kwargs: Any) -> None:
        kwargs["client_type"] = "sagemaker"
        super().__init__(*args, **kwargs)
        self.backoff_policy = backoff_policy or DEFAULT_POLICY
        self._pipelines: dict[str, PipelineInfo] = {}

    @property
    def config(self) -> Config:
        """The connection's botocore config, with botocore's retries off unless configured explicitly."""
        config = super().config
        if getattr(config, "retries", None):
            return config
        return config.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))

    # ---------------------------------------------------------------------------------------------------
    # plumbing: the one place where requests are sent

    def _call(
        self,
        action: str,
        *,
        wait_for_capacity: bool = False,
        policy: BackoffPolicy | None = None,
        **request: Any,
    ) -> dict[str, Any]:
        method = getattr(self.conn, xform_name(action))
        return call_with_backoff(
            lambda: method(**request),
            action=action,
            policy=policy or self.backoff_policy,
            wait_for_capacity=wait_for_capacity,
        )

    async def _acall(
        self, client: Any, action: str, *, policy: BackoffPolicy | None = None, **request: Any
    ) -> dict[str, Any]:
        method = getattr(client, xform_name(action))
        return await acall_with_backoff(
            lambda: method(**request), action=action, policy=policy or self.backoff_policy
        )

    @asynccontextmanager
    async def async_client(self) -> AsyncIterator[Any]:
        """An aiobotocore SageMaker client for the async methods; one per poller, closed on exit."""
        async with await self.get_async_conn() as client:
            yield client

    # ---------------------------------------------------------------------------------------------------
    # pipelines and parameters

    def describe_pipeline(self, pipeline_name: str) -> PipelineInfo:
        """DescribePipeline plus the parsed definition, cached for the life of this hook.

        The parameters are always parsed; if the full definition is rejected by
        :func:`~sagemaker_pipelines_provider.definition.parse_definition` (a step type newer than this
        provider, say), ``definition`` is ``None`` and only the parameter check and step types are lost.
        """
        cached = self._pipelines.get(pipeline_name)
        if cached is not None:
            return cached
        describe = self._call("DescribePipeline", PipelineName=pipeline_name)
        info = _pipeline_info(pipeline_name, describe)
        self._pipelines[pipeline_name] = info
        return info

    def validate_parameters(
        self, pipeline_name: str, parameters: Mapping[str, Any] | None
    ) -> list[dict[str, str]]:
        """Check ``parameters`` against the pipeline's definition; return them in StartPipelineExecution form.

        Values are JSON scalars (or their string forms); they are converted to the strings SageMaker
        expects (``True`` -> ``"true"``, ``3`` -> ``"3"``). Parameters left out keep their defaults.

        :raises PipelineParametersInvalid: for unknown names, values not of the declared Integer / Float /
            Boolean type, or required parameters without a value; the message lists them all and the
            pipeline's parameters with their types.
        """
        info = self.describe_pipeline(pipeline_name)
        try:
            return coerce_parameters(info.parameters_definition, dict(parameters or {}))
        except ParameterError as err:
            raise PipelineParametersInvalid(
                f"Pipeline {info.name!r} rejects the parameters: {'; '.join(err.problems)}. "
                "The pipeline's parameters are: "
                f"{describe_parameters(info.parameters_definition.parameters)}. Nothing was started."
            ) from err

    def execution_parameters(
        self, pipeline_name: str, sent: Sequence[Mapping[str, str]] | None
    ) -> dict[str, str]:
        """``{name: value}`` of an execution started with ``sent`` (:meth:`validate_parameters`' answer):
        the definition's defaults merged with ``sent``, formatted as ListPipelineParametersForExecution
        reports them (:func:`~sagemaker_pipelines_provider.definition.execution_parameters`). No call: the
        definition is the one :meth:`describe_pipeline` cached."""
        info = self.describe_pipeline(pipeline_name)
        listed = execution_parameters(info.parameters_definition, list(sent or []))
        return {p["Name"]: p["Value"] for p in listed}

    # ---------------------------------------------------------------------------------------------------
    # executions: synchronous

    def start_pipeline_execution(
        self,
        pipeline_name: str,
        *,
        client_request_token: str,
        parameters: Sequence[Mapping[str, str]] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        parallelism: int | None = None,
        selective_steps: Sequence[str] | None = None,
        source_execution_arn: str | None = None,
        wait_for_capacity: bool = True,
    ) -> str:
        """StartPipelineExecution; return the execution ARN.

        ``parameters`` are already in API form (see :meth:`validate_parameters`). The same
        ``client_request_token`` returns the execution the first call created, so calling this again after
        a crash never starts a second execution.

        :param wait_for_capacity: on ``ResourceLimitExceeded`` (too many running executions) wait with
            backoff and try again (True), or raise the ``ClientError`` at once (False: the caller defers).
        """
        request: dict[str, Any] = {"PipelineName": pipeline_name, "ClientRequestToken": client_request_token}
        if parameters:
            request["PipelineParameters"] = [dict(p) for p in parameters]
        if display_name:
            request["PipelineExecutionDisplayName"] = display_name
        if description:
            request["PipelineExecutionDescription"] = description
        if parallelism:
            request["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": int(parallelism)}
        if selective_steps:
            selective: dict[str, Any] = {"SelectedSteps": [{"StepName": s} for s in selective_steps]}
            if source_execution_arn:
                selective["SourcePipelineExecutionArn"] = source_execution_arn
            request["SelectiveExecutionConfig"] = selective
        response = self._call("StartPipelineExecution", wait_for_capacity=wait_for_capacity, **request)
        return str(response["PipelineExecutionArn"])

    def retry_pipeline_execution(
        self,
        pipeline_execution_arn: str,
        *,
        client_request_token: str,
        parallelism: int | None = None,
        wait_for_capacity: bool = True,
    ) -> str:
        """RetryPipelineExecution: resume a Failed execution from its failed steps; return its ARN."""
        request: dict[str, Any] = {
            "PipelineExecutionArn": pipeline_execution_arn,
            "ClientRequestToken": client_request_token,
        }
        if parallelism:
            request["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": int(parallelism)}
        response = self._call("RetryPipelineExecution", wait_for_capacity=wait_for_capacity, **request)
        return str(response.get("PipelineExecutionArn") or pipeline_execution_arn)

    def describe_pipeline_execution(self, pipeline_execution_arn: str) -> dict[str, Any]:
        """DescribePipelineExecution."""
        return self._call("DescribePipelineExecution", PipelineExecutionArn=pipeline_execution_arn)

    def list_pipeline_executions(
        self,
        pipeline_name: str,
        *,
        next_token: str | None = None,
        max_results: int = 100,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ListPipelineExecutions, newest first: ``(summaries, next_token)``."""
        request = _list_executions_request(
            pipeline_name, next_token, max_results, created_after, created_before
        )
        response = self._call("ListPipelineExecutions", **request)
        return list(response.get("PipelineExecutionSummaries", [])), response.get("NextToken")

    def list_pipeline_execution_steps(self, pipeline_execution_arn: str) -> list[dict[str, Any]]:
        """Every step of an execution (all pages of ListPipelineExecutionSteps)."""
        return self._all_pages(
            "ListPipelineExecutionSteps",
            "PipelineExecutionSteps",
            PipelineExecutionArn=pipeline_execution_arn,
        )

    def list_pipeline_parameters_for_execution(self, pipeline_execution_arn: str) -> dict[str, str]:
        """The parameters an execution runs with (all pages), as ``{name: value}``."""
        items = self._all_pages(
            "ListPipelineParametersForExecution",
            "PipelineParameters",
            PipelineExecutionArn=pipeline_execution_arn,
        )
        return {str(p["Name"]): str(p.get("Value", "")) for p in items}

    def stop_pipeline_execution(self, pipeline_execution_arn: str, *, client_request_token: str) -> bool:
        """StopPipelineExecution. True when a stop was requested; False when it had ended or was stopping.

        Safe to call on an execution in any state; a ``ConflictException`` (stop during a step transition)
        is retried within a short budget (:data:`STOP_BUDGET_SECONDS`).
        """
        if _nothing_to_stop(self.describe_pipeline_execution(pipeline_execution_arn)):
            return False
        try:
            self._call(
                "StopPipelineExecution",
                policy=_stop_policy(self.backoff_policy),
                PipelineExecutionArn=pipeline_execution_arn,
                ClientRequestToken=client_request_token,
            )
        except ClientError as err:
            if error_code(err) in ("ValidationException", "ConflictException") and _nothing_to_stop(
                self.describe_pipeline_execution(pipeline_execution_arn)
            ):
                return False
            raise
        return True

    def read_execution(
        self,
        pipeline_execution_arn: str,
        *,
        describe: Mapping[str, Any] | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> tuple[Mapping[str, Any], list[dict[str, Any]], dict[str, str]]:
        """``(describe, steps, parameters)`` of an execution; a ``describe`` or ``parameters`` at hand save
        their calls."""
        if describe is None:
            describe = self.describe_pipeline_execution(pipeline_execution_arn)
        steps = self.list_pipeline_execution_steps(pipeline_execution_arn)
        if parameters is None:
            parameters = self.list_pipeline_parameters_for_execution(pipeline_execution_arn)
        return describe, steps, dict(parameters)

    def get_execution_result(
        self,
        pipeline_execution_arn: str,
        *,
        step_types: Mapping[str, str] | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> ExecutionResult:
        """Describe + steps + parameters of an execution, as :func:`build_execution_result` shapes them
        (``parameters`` at hand save their call)."""
        read = self.read_execution(pipeline_execution_arn, parameters=parameters)
        return build_execution_result(*read, step_types=step_types)

    def step_types(self, pipeline_name: str | None) -> dict[str, str]:
        """Step name -> Type from the pipeline's definition (name, pipeline ARN or execution ARN).

        Best effort, for results and log lines: ``{}`` with a warning when the definition cannot be read.
        """
        execution = ExecutionArn.parse_or_none(pipeline_name)
        pipeline = execution.pipeline_name if execution else pipeline_name
        if not pipeline:
            return {}
        try:
            return self.describe_pipeline(pipeline).step_types
        except Exception as err:  # only the result's step types are lost
            log.warning("Could not read the definition of %s for step types: %s", pipeline, err)
            return {}

    # ---------------------------------------------------------------------------------------------------
    # callbacks

    def send_step_success(
        self,
        callback_token: str,
        outputs: Mapping[str, Any] | None,
        client_request_token: str | None = None,
    ) -> CallbackAnswer:
        """SendPipelineExecutionStepSuccess with ``outputs`` as the step's output parameters.

        Output values are flattened to strings (``True`` -> ``"true"``, ``3`` -> ``"3"``, a dict or list ->
        compact JSON, ``None`` -> ``""``). ``client_request_token`` defaults to the one derived from the
        token and the outputs as sent (:func:`~sagemaker_pipelines_provider.callbacks.message.
        answer_request_token`): the same outputs are the same request.

        :raises CallbackOutputsInvalid: more than 50 outputs, or a name longer than 256 / a value longer
            than 1024 characters (nothing is sent).
        :returns: a :class:`CallbackAnswer`; ``already_answered`` reports a token answered before.
        """
        content = {"OutputParameters": callback_output_parameters(outputs)}
        request = {
            "CallbackToken": callback_token,
            **content,
            "ClientRequestToken": client_request_token
            or answer_request_token(callback_token, "success", content),
        }
        return self._answer_callback("SendPipelineExecutionStepSuccess", request)

    def send_step_failure(
        self, callback_token: str, reason: str, client_request_token: str | None = None
    ) -> CallbackAnswer:
        """SendPipelineExecutionStepFailure; ``reason`` is cut to 256 characters, ending with a marker.

        ``client_request_token`` defaults to the one derived from the token and the reason as sent: the
        same reason is the same request, another reason another request (refused as already answered).

        :returns: a :class:`CallbackAnswer`; ``already_answered`` reports a token answered before.
        """
        content = {"FailureReason": truncate(reason, MAX_FAILURE_REASON_LENGTH)}
        request = {
            "CallbackToken": callback_token,
            **content,
            "ClientRequestToken": client_request_token
            or answer_request_token(callback_token, "failure", content),
        }
        return self._answer_callback("SendPipelineExecutionStepFailure", request)

    def callback_token_state(self, pipeline_execution_arn: str, callback_token: str) -> TokenState:
        """Whether ``callback_token`` still waits for its answer (rule: :mod:`~sagemaker_pipelines_provider.
        callbacks.liveness`): ListPipelineExecutionSteps, plus DescribePipelineExecution when the token is
        not listed. Errors are raised (callers treat them as UNKNOWN)."""
        steps = self.list_pipeline_execution_steps(pipeline_execution_arn)
        state = token_state(steps, callback_token)
        if state is TokenState.UNKNOWN:
            status = self.describe_pipeline_execution(pipeline_execution_arn).get("PipelineExecutionStatus")
            state = token_state(steps, callback_token, str(status))
        return state

    def _answer_callback(self, action: str, request: dict[str, Any]) -> CallbackAnswer:
        """Send one answer. An error is re-raised with the callback token masked in its message (SageMaker
        quotes the token, a capability to answer the step, and errors end up in task logs); the original
        is not chained to it."""
        token = str(request["CallbackToken"])
        try:
            response = self._call(action, **request)
        except ClientError as err:
            safe = without_token(err, token)
            if is_already_answered(safe):
                log.info("%s: callback token %s already answered (%s)", action, mask_token(token), safe)
                return CallbackAnswer(pipeline_execution_arn=None, already_answered=True)
            raise safe from None
        return CallbackAnswer(pipeline_execution_arn=response.get("PipelineExecutionArn"))

    # ---------------------------------------------------------------------------------------------------
    # executions: asynchronous (``client`` comes from :meth:`async_client`)

    async def adescribe_pipeline_execution(
        self, pipeline_execution_arn: str, *, client: Any
    ) -> dict[str, Any]:
        """DescribePipelineExecution (async)."""
        return await self._acall(
            client, "DescribePipelineExecution", PipelineExecutionArn=pipeline_execution_arn
        )

    async def alist_pipeline_executions(
        self,
        pipeline_name: str,
        *,
        client: Any,
        next_token: str | None = None,
        max_results: int = 100,
        created_after: dt.datetime | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ListPipelineExecutions, newest first (async)."""
        request = _list_executions_request(pipeline_name, next_token, max_results, created_after)
        response = await self._acall(client, "ListPipelineExecutions", **request)
        return list(response.get("PipelineExecutionSummaries", [])), response.get("NextToken")

    async def alist_pipeline_execution_steps(
        self, pipeline_execution_arn: str, *, client: Any
    ) -> list[dict[str, Any]]:
        """Every step of an execution (async)."""
        return await self._aall_pages(
            client,
            "ListPipelineExecutionSteps",
            "PipelineExecutionSteps",
            PipelineExecutionArn=pipeline_execution_arn,
        )

    async def alist_pipeline_parameters_for_execution(
        self, pipeline_execution_arn: str, *, client: Any
    ) -> dict[str, str]:
        """The parameters an execution runs with (async)."""
        items = await self._aall_pages(
            client,
            "ListPipelineParametersForExecution",
            "PipelineParameters",
            PipelineExecutionArn=pipeline_execution_arn,
        )
        return {str(p["Name"]): str(p.get("Value", "")) for p in items}

    async def astop_pipeline_execution(
        self, pipeline_execution_arn: str, *, client_request_token: str, client: Any
    ) -> bool:
        """StopPipelineExecution (async); same contract as :meth:`stop_pipeline_execution`."""
        if _nothing_to_stop(await self.adescribe_pipeline_execution(pipeline_execution_arn, client=client)):
            return False
        try:
            await self._acall(
                client,
                "StopPipelineExecution",
                policy=_stop_policy(self.backoff_policy),
                PipelineExecutionArn=pipeline_execution_arn,
                ClientRequestToken=client_request_token,
            )
        except ClientError as err:
            if error_code(err) in ("ValidationException", "ConflictException"):
                again = await self.adescribe_pipeline_execution(pipeline_execution_arn, client=client)
                if _nothing_to_stop(again):
                    return False
            raise
        return True

    async def acallback_token_state(
        self, pipeline_execution_arn: str, callback_token: str, *, client: Any
    ) -> TokenState:
        """:meth:`callback_token_state` (async)."""
        states = await self.acallback_token_states(pipeline_execution_arn, [callback_token], client=client)
        return states[callback_token]

    async def acallback_token_states(
        self, pipeline_execution_arn: str, callback_tokens: Collection[str], *, client: Any
    ) -> dict[str, TokenState]:
        """The state of each of ``callback_tokens`` of one execution (async), from one listing of its
        steps, plus one DescribePipelineExecution when some token is not listed: the same rule as
        :meth:`callback_token_state`, at the cost of one check however many of its tokens are asked."""
        steps = await self.alist_pipeline_execution_steps(pipeline_execution_arn, client=client)
        states = {token: token_state(steps, token) for token in callback_tokens}
        if TokenState.UNKNOWN in states.values():
            describe = await self.adescribe_pipeline_execution(pipeline_execution_arn, client=client)
            status = str(describe.get("PipelineExecutionStatus"))
            states = {token: token_state(steps, token, status) for token in callback_tokens}
        return states

    async def aread_execution(
        self,
        pipeline_execution_arn: str,
        *,
        client: Any,
        steps: Sequence[Mapping[str, Any]] | None = None,
        describe: Mapping[str, Any] | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], dict[str, str]]:
        """``(describe, steps, parameters)`` (async); ``steps`` / ``describe`` / ``parameters`` at hand save
        their calls."""
        if describe is None:
            describe = await self.adescribe_pipeline_execution(pipeline_execution_arn, client=client)
        if steps is None:
            steps = await self.alist_pipeline_execution_steps(pipeline_execution_arn, client=client)
        if parameters is None:
            parameters = await self.alist_pipeline_parameters_for_execution(
                pipeline_execution_arn, client=client
            )
        return describe, steps, dict(parameters)

    async def aget_execution_result(
        self,
        pipeline_execution_arn: str,
        *,
        client: Any,
        step_types: Mapping[str, str] | None = None,
        steps: Sequence[Mapping[str, Any]] | None = None,
        describe: Mapping[str, Any] | None = None,
    ) -> ExecutionResult:
        """:meth:`get_execution_result` (async); ``steps`` / ``describe`` at hand save their calls."""
        read = await self.aread_execution(
            pipeline_execution_arn, client=client, steps=steps, describe=describe
        )
        return build_execution_result(*read, step_types=step_types)

    # ---------------------------------------------------------------------------------------------------
    # pagination

    def _all_pages(self, action: str, key: str, **request: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_token: str | None = None
        while True:
            page_request = {**request, "MaxResults": 100}
            if next_token:
                page_request["NextToken"] = next_token
            response = self._call(action, **page_request)
            items.extend(response.get(key, []))
            next_token = response.get("NextToken")
            if not next_token:
                return items

    async def _aall_pages(self, client: Any, action: str, key: str, **request: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_token: str | None = None
        while True:
            page_request = {**request, "MaxResults": 100}
            if next_token:
                page_request["NextToken"] = next_token
            response = await self._acall(client, action, **page_request)
            items.extend(response.get(key, []))
            next_token = response.get("NextToken")
            if not next_token:
                return items


# -------------------------------------------------------------------------------------------------------
# pure helpers


def _nothing_to_stop(describe: Mapping[str, Any]) -> bool:
    """True when the execution has ended or is already stopping (a second stop would change nothing)."""
    status = str(describe.get("PipelineExecutionStatus"))
    return status == "Stopping" or is_terminal(status)


def _stop_policy(policy: BackoffPolicy) -> BackoffPolicy:
    return replace(policy, budget_seconds=min(policy.budget_seconds, STOP_BUDGET_SECONDS))


def _list_executions_request(
    pipeline_name: str,
    next_token: str | None,
    max_results: int,
    created_after: dt.datetime | None,
    created_before: dt.datetime | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "PipelineName": pipeline_name,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": max(1, min(100, max_results)),
    }
    if next_token:
        request["NextToken"] = next_token
    if created_after is not None:
        request["CreatedAfter"] = created_after
    if created_before is not None:
        request["CreatedBefore"] = created_before
    return request


def _pipeline_info(pipeline_name: str, describe: Mapping[str, Any]) -> PipelineInfo:
    name = str(describe.get("PipelineName") or pipeline_name)
    document = describe.get("PipelineDefinition") or "{}"
    definition: PipelineDefinition | None
    try:
        definition = parse_definition(document)
        parameters_definition = definition
    except DefinitionError as err:
        log.warning(
            "Pipeline %r: definition not fully understood (%s); checking its parameters only", name, err
        )
        definition = None
        parameters_definition = _parameters_only(name, document)
    return PipelineInfo(
        name=name,
        arn=str(describe.get("PipelineArn") or ""),
        describe=describe,
        definition=definition,
        parameters_definition=parameters_definition,
    )


def _parameters_only(name: str, document: Any) -> PipelineDefinition:
    import json

    try:
        decoded = json.loads(document) if isinstance(document, str | bytes) else document
        return parse_definition(
            {"Version": decoded.get("Version"), "Parameters": decoded.get("Parameters", []), "Steps": []}
        )
    except (ValueError, AttributeError, DefinitionError) as err:
        raise PipelineParametersInvalid(
            f"Pipeline {name!r}: its definition's Parameters cannot be read ({err}); the parameters "
            "cannot be checked, so nothing was started."
        ) from err


def truncate(text: str, limit: int, marker: str = TRUNCATION_MARKER) -> str:
    """``text`` cut to ``limit`` characters; a cut text ends with ``marker`` so readers know it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def flatten_output_value(value: Any) -> str:
    """The string SageMaker receives for one callback output value."""
    from sagemaker_pipelines_provider.definition import format_value

    return format_value(value)


def callback_output_parameters(outputs: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """``outputs`` as SendPipelineExecutionStepSuccess's ``OutputParameters``, checked against the limits.

    :raises CallbackOutputsInvalid: naming every output that breaks a limit.
    """
    outputs = dict(outputs or {})
    problems: list[str] = []
    if len(outputs) > MAX_CALLBACK_OUTPUTS:
        problems.append(f"{len(outputs)} outputs given, SageMaker accepts at most {MAX_CALLBACK_OUTPUTS}")
    parameters: list[dict[str, str]] = []
    for name, value in outputs.items():
        text = flatten_output_value(value)
        if not name or len(str(name)) > MAX_OUTPUT_NAME_LENGTH:
            problems.append(f"output name {str(name)[:40]!r} must be 1-{MAX_OUTPUT_NAME_LENGTH} characters")
        if len(text) > MAX_OUTPUT_VALUE_LENGTH:
            problems.append(
                f"output {name!r} is {len(text)} characters once flattened; SageMaker accepts at most "
                f"{MAX_OUTPUT_VALUE_LENGTH} (store large values in S3 and pass the URI)"
            )
        parameters.append({"Name": str(name), "Value": text})
    if problems:
        raise CallbackOutputsInvalid(
            "Callback outputs rejected: " + "; ".join(problems) + ". Nothing was sent."
        )
    return parameters


def without_token(error: ClientError, token: str) -> ClientError:
    """A copy of ``error`` whose message and response hold ``token`` only masked (notes are kept)."""

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return redact_token(value, token)
        if isinstance(value, Mapping):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    safe = ClientError(scrub(dict(error.response)), error.operation_name)
    for note in getattr(error, "__notes__", ()):
        safe.add_note(redact_token(note, token))
    return safe


_ALREADY_ANSWERED_HINTS = ("already", "not waiting", "no longer", "is not in", "completed", "has been used")


def is_already_answered(error: BaseException) -> bool:
    """True when a callback answer was refused because the token was answered before / its step ended.

    SageMaker answers such a call with ``ConflictException`` or ``ValidationException``; its wording is
    not documented, so a ``ValidationException`` only counts when its message says so (an "already",
    "no longer"... phrase) — other validation errors (a malformed token) still raise.
    """
    code = error_code(error)
    if code == "ConflictException":
        return True
    if code == "ValidationException" and isinstance(error, ClientError):
        message = str(error.response.get("Error", {}).get("Message", "")).lower()
        return any(hint in message for hint in _ALREADY_ANSWERED_HINTS)
    return False


def pipeline_name_from_arn(arn: str) -> str | None:
    """The pipeline name in an execution ARN, or None when ``arn`` is not one."""
    parsed = ExecutionArn.parse_or_none(arn)
    return parsed.pipeline_name if parsed else None


__all__ = [
    "CallbackAnswer",
    "CallbackOutputsInvalid",
    "PipelineInfo",
    "PipelineParametersInvalid",
    "SageMakerPipelineHook",
    "build_execution_result",
    "callback_output_parameters",
    "failure_message",
    "is_already_answered",
    "pipeline_name_from_arn",
    "step_outputs",
    "step_transitions",
    "truncate",
]
