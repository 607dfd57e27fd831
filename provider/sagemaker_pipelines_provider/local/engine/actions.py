"""The SageMaker Pipelines API handlers of the local endpoint: one method per action.

:meth:`PipelineEngine.dispatch` takes an action name and a botocore-shaped request (PascalCase keys,
tz-aware UTC datetimes) and returns a botocore-shaped response, or raises an :class:`~.errors.EngineError`
whose ``code`` is the AWS error code. It knows nothing of HTTP; running executions is
:class:`~.machine.ExecutionMachine`'s job. See docs/local-endpoint.md for the modelling choices.
"""

from __future__ import annotations

import bisect
import copy
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from sagemaker_pipelines_provider.definition import (
    DefinitionError,
    ParameterError,
    PipelineDefinition,
    execution_parameters,
    format_value,
    parse_definition,
    resolve_parameters,
)

from . import requests
from .errors import ConflictError, EngineValidationError, ResourceLimitExceeded, ResourceNotFound
from .expressions import ExpressionError, evaluate
from .machine import ID_ALPHABET, CallbackTicket, ExecutionMachine, SideEffects
from .state import Behaviour, Execution, Pipeline, StepRun, reference_run, utcnow
from .steps import merge_properties, typed_outputs

__all__ = ["PipelineEngine"]

MAX_PIPELINES_PER_REGION = 500
MAX_OUTPUT_PARAMETERS = 50

_PIPELINE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")
_PIPELINE_ARN = re.compile(r"^arn:aws[a-z\-]*:sagemaker:([a-z0-9\-]*):([0-9]{12}|aws):pipeline/(.+)$")


class PipelineEngine:
    """SageMaker Pipelines, simulated in memory. Thread-safe."""

    ACTIONS: frozenset[str] = frozenset(
        {
            "CreatePipeline",
            "UpdatePipeline",
            "DescribePipeline",
            "DeletePipeline",
            "ListPipelines",
            "StartPipelineExecution",
            "DescribePipelineExecution",
            "ListPipelineExecutions",
            "ListPipelineExecutionSteps",
            "StopPipelineExecution",
            "RetryPipelineExecution",
            "SendPipelineExecutionStepSuccess",
            "SendPipelineExecutionStepFailure",
            "ListPipelineParametersForExecution",
            "DescribePipelineDefinitionForExecution",
            "UpdatePipelineExecution",
        }
    )

    def __init__(self, side_effects: SideEffects, account_id: str = "123456789012") -> None:
        self.side_effects = side_effects
        self.account_id = account_id
        self._machine = ExecutionMachine(side_effects, account_id)
        self._handlers: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            action: getattr(self, "_" + re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower())
            for action in self.ACTIONS
        }
        self._clear_state()

    def _clear_state(self) -> None:
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._executions: dict[str, Execution] = {}
        self._deleted_tokens: dict[str, str] = {}
        self._caps: dict[str, int] = {}

    # -- public API ----------------------------------------------------------------------------------

    def dispatch(self, action: str, request: dict[str, Any], *, region: str) -> dict[str, Any]:
        """Serve one SageMaker action. Raises :class:`EngineError` subclasses; side effects of the call
        (events, SQS messages) are delivered before it returns."""
        handler = self._handlers.get(action)
        if handler is None:
            raise EngineValidationError(
                f"action {action!r} is not served by the pipeline engine; "
                f"served: {', '.join(sorted(self.ACTIONS))}"
            )
        try:
            with self._machine.lock:
                return handler(request or {}, region)
        finally:
            self._machine.flush()

    def set_time_scale(self, scale: float) -> None:
        """Multiply every step duration by ``scale`` (>= 0) from now on; steps already timed keep theirs."""
        self._machine.set_time_scale(scale)

    def set_default_step_duration(self, seconds: float) -> None:
        """Duration (before scaling) of steps without a behaviour duration; default 1.0."""
        self._machine.set_default_step_duration(seconds)

    def set_step_behaviour(
        self,
        pipeline: str,
        step: str,
        *,
        duration: float | None = None,
        fail: str | None = None,
        fail_attempts: int | None = None,
        property_files: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Set how ``step`` of ``pipeline`` (name or ARN, any region) behaves, replacing any earlier setting.

        ``fail``: the FailureReason the step fails with (at the end of its duration), for the first
        ``fail_attempts`` attempts only (None = every attempt). ``property_files``: PropertyFileName ->
        JSON document (instead of reading S3). ``properties``: deep-merged over the generated properties
        (for Lambda steps ``{"OutputParameters": {name: value}}`` gives the outputs). Applies to steps that
        start (and, for ``fail``, end) after the call.
        """
        self._machine.set_step_behaviour(
            self._pipeline_key(pipeline),
            step,
            Behaviour(
                duration, fail, fail_attempts, copy.deepcopy(property_files), copy.deepcopy(properties)
            ),
        )

    def set_concurrency_cap(self, pipeline: str, cap: int | None) -> None:
        """At most ``cap`` Executing/Stopping executions of ``pipeline``: StartPipelineExecution and
        RetryPipelineExecution beyond it raise ResourceLimitExceeded. None removes the cap."""
        with self._machine.lock:
            if cap is None:
                self._caps.pop(self._pipeline_key(pipeline), None)
            else:
                self._caps[self._pipeline_key(pipeline)] = int(cap)

    def stats(self) -> dict[str, Any]:
        """``peak_concurrency``: most Executing/Stopping executions seen at once; ``executions``: started;
        ``active``: Executing/Stopping now -- each keyed by pipeline name."""
        return self._machine.stats()

    def reset(self) -> None:
        """Forget pipelines, executions, callback tokens, behaviours, caps and stats; pending timers are
        dropped. The time scale and default step duration are controls, not state: they are kept."""
        with self._machine.lock:
            for execution in self._executions.values():
                execution.alive = False
            self._machine.clear()
            self._clear_state()

    def shutdown(self) -> None:
        """Stop the scheduler thread (idempotent). A later call that needs it starts it again."""
        self._machine.shutdown()

    # -- lookups --------------------------------------------------------------------------------

    @staticmethod
    def _pipeline_key(name_or_arn: str) -> str:
        match = _PIPELINE_ARN.match(name_or_arn)
        return (match.group(3) if match else name_or_arn).lower()

    def _pipeline_arn(self, region: str, name: str) -> str:
        return f"arn:aws:sagemaker:{region}:{self.account_id}:pipeline/{name.lower()}"

    def _pipeline(self, request: Mapping[str, Any], region: str) -> Pipeline:
        value = request.get("PipelineName")
        if not isinstance(value, str) or not value:
            raise EngineValidationError("PipelineName is required (a pipeline name or ARN)")
        match = _PIPELINE_ARN.match(value)
        name = value
        if match:
            name = match.group(3)
            if match.group(1) != region:
                raise ResourceNotFound(f"Pipeline '{value}' does not exist in region {region}.")
        pipeline = self._pipelines.get((region, name.lower()))
        if pipeline is None:
            raise ResourceNotFound(f"Pipeline '{self._pipeline_arn(region, name)}' does not exist.")
        return pipeline

    def _execution(
        self, request: Mapping[str, Any], region: str, field: str = "PipelineExecutionArn"
    ) -> Execution:
        arn = request.get(field)
        if not isinstance(arn, str) or not arn:
            raise EngineValidationError(f"{field} is required")
        execution = self._executions.get(arn.lower())
        if execution is None or execution.region != region:
            raise ResourceNotFound(f"Pipeline execution '{arn}' does not exist.")
        return execution

    # -- pipelines ------------------------------------------------------------------------------

    def _definition_source(self, request: Mapping[str, Any], required: bool) -> str | None:
        text = request.get("PipelineDefinition")
        location = request.get("PipelineDefinitionS3Location")
        if text is not None:
            if not isinstance(text, str):
                raise EngineValidationError("PipelineDefinition must be a JSON string")
            return text
        if location is not None:
            bucket, key = location.get("Bucket"), location.get("ObjectKey")
            data = self.side_effects.read_s3_object(f"s3://{bucket}/{key}")
            if data is None:
                raise EngineValidationError(
                    f"PipelineDefinitionS3Location s3://{bucket}/{key} could not be read"
                )
            return data.decode("utf-8")
        if required:
            raise EngineValidationError(
                "Either PipelineDefinition or PipelineDefinitionS3Location is required"
            )
        return None

    @staticmethod
    def _parse(name: str, text: str) -> PipelineDefinition:
        try:
            return parse_definition(text)
        except DefinitionError as err:
            raise EngineValidationError(f"Invalid PipelineDefinition for pipeline {name!r}: {err}") from None

    def _create_pipeline(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        name = request.get("PipelineName")
        if not isinstance(name, str) or not _PIPELINE_NAME.match(name):
            raise EngineValidationError(
                f"PipelineName {name!r} is invalid: 1-256 characters matching "
                "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}"
            )
        token = request.get("ClientRequestToken")
        existing = self._pipelines.get((region, name.lower()))
        if existing is not None:
            if token and existing.client_token == token:
                return {"PipelineArn": existing.arn}
            raise EngineValidationError(
                "Pipeline names must be unique within an AWS account and region. "
                f"Pipeline with name ({name}) already exists."
            )
        text = self._definition_source(request, required=True)
        assert text is not None
        definition = self._parse(name, text)
        if sum(1 for r, _ in self._pipelines if r == region) >= MAX_PIPELINES_PER_REGION:
            raise ResourceLimitExceeded(
                f"The account already has {MAX_PIPELINES_PER_REGION} pipelines in {region}."
            )
        now = utcnow()
        pipeline = Pipeline(
            name=name,
            arn=self._pipeline_arn(region, name),
            region=region,
            role_arn=request.get("RoleArn"),
            display_name=request.get("PipelineDisplayName") or name,
            description=request.get("PipelineDescription"),
            parallelism=requests.parallelism(request.get("ParallelismConfiguration")),
            creation_time=now,
            client_token=token,
            last_modified_time=now,
            tags=list(request.get("Tags") or []),
        )
        pipeline.versions.append((text, definition))
        self._pipelines[(region, name.lower())] = pipeline
        return {"PipelineArn": pipeline.arn}

    def _update_pipeline(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        pipeline = self._pipeline(request, region)
        text = self._definition_source(request, required=False)
        if text is not None:
            pipeline.versions.append((text, self._parse(pipeline.name, text)))
        if request.get("PipelineDisplayName"):
            pipeline.display_name = request["PipelineDisplayName"]
        if "PipelineDescription" in request:
            pipeline.description = request["PipelineDescription"]
        if request.get("RoleArn"):
            pipeline.role_arn = request["RoleArn"]
        if "ParallelismConfiguration" in request:
            pipeline.parallelism = requests.parallelism(request["ParallelismConfiguration"])
        pipeline.last_modified_time = utcnow()
        return {"PipelineArn": pipeline.arn, "PipelineVersionId": pipeline.version_id}

    @staticmethod
    def _pipeline_fields(pipeline: Pipeline) -> dict[str, Any]:
        """The members DescribePipeline and a ListPipelines summary share."""
        fields: dict[str, Any] = {
            "PipelineArn": pipeline.arn,
            "PipelineName": pipeline.name,
            "PipelineDisplayName": pipeline.display_name,
            "CreationTime": pipeline.creation_time,
            "LastModifiedTime": pipeline.last_modified_time,
        }
        if pipeline.description is not None:
            fields["PipelineDescription"] = pipeline.description
        if pipeline.role_arn:
            fields["RoleArn"] = pipeline.role_arn
        return fields

    def _describe_pipeline(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        pipeline = self._pipeline(request, region)
        text = pipeline.definition_json
        version = request.get("PipelineVersionId")
        if version is not None:
            if not isinstance(version, int) or not 1 <= version <= pipeline.version_id:
                raise ResourceNotFound(f"Pipeline '{pipeline.arn}' has no version {version!r}.")
            text = pipeline.versions[version - 1][0]
        response = self._pipeline_fields(pipeline)
        response.update(PipelineDefinition=text, PipelineStatus="Active")
        if pipeline.last_run_time is not None:
            response["LastRunTime"] = pipeline.last_run_time
        if pipeline.parallelism is not None:
            response["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": pipeline.parallelism}
        return response

    def _delete_pipeline(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        token = request.get("ClientRequestToken")
        name = request.get("PipelineName")
        if token and token in self._deleted_tokens and isinstance(name, str):
            arn = self._deleted_tokens[token]
            if arn == self._pipeline_arn(region, self._pipeline_key(name)):
                return {"PipelineArn": arn}
        pipeline = self._pipeline(request, region)
        del self._pipelines[(region, pipeline.key)]
        self._machine.forget(pipeline)
        for execution in pipeline.executions:
            self._executions.pop(execution.arn, None)
        if token:
            self._deleted_tokens[token] = pipeline.arn
        return {"PipelineArn": pipeline.arn}

    def _list_pipelines(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        prefix = (request.get("PipelineNamePrefix") or "").lower()
        after = requests.timestamp(request.get("CreatedAfter"), "CreatedAfter")
        before = requests.timestamp(request.get("CreatedBefore"), "CreatedBefore")
        sort_by = requests.choice(request, "SortBy", ("Name", "CreationTime"), "CreationTime")
        order = requests.choice(request, "SortOrder", ("Ascending", "Descending"), "Descending")
        items = [
            p
            for (r, key), p in self._pipelines.items()
            if r == region
            and key.startswith(prefix)
            and (after is None or p.creation_time > after)
            and (before is None or p.creation_time < before)
        ]
        if sort_by == "Name":
            items.sort(key=lambda p: p.name, reverse=order == "Descending")
        else:
            items.sort(key=lambda p: (p.creation_time, p.name), reverse=order == "Descending")
        expected = {"kind": "pipelines", "region": region, "sort": sort_by, "order": order, "prefix": prefix}
        page, next_token = requests.page(
            items, request.get("NextToken"), expected, requests.max_results(request)
        )
        summaries = []
        for p in page:
            summary = self._pipeline_fields(p)
            if p.last_run_time is not None:
                summary["LastExecutionTime"] = p.last_run_time
            summaries.append(summary)
        response: dict[str, Any] = {"PipelineSummaries": summaries}
        if next_token:
            response["NextToken"] = next_token
        return response

    # -- starting executions --------------------------------------------------------------------

    def _start_pipeline_execution(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        pipeline = self._pipeline(request, region)
        token = request.get("ClientRequestToken")
        given = list(request.get("PipelineParameters") or [])
        display_name = requests.display_name(request.get("PipelineExecutionDisplayName"))
        description = request.get("PipelineExecutionDescription")
        parallelism = requests.parallelism(request.get("ParallelismConfiguration"))
        selective = request.get("SelectiveExecutionConfig")
        version = request.get("PipelineVersionId")
        fingerprint = (
            tuple(sorted((str(p.get("Name")), format_value(p.get("Value"))) for p in given)),
            display_name,
            description,
            parallelism,
            json.dumps(selective, sort_keys=True, default=str),
            version,
        )
        if token and token in pipeline.start_tokens:
            previous = pipeline.start_tokens[token]
            if previous.fingerprint == fingerprint:
                return {"PipelineExecutionArn": previous.arn}
            raise ConflictError(
                f"ClientRequestToken {token!r} was already used to start {previous.arn} with different "
                "parameters, display name, description or configuration; use a new token for a new execution."
            )
        definition_json, definition = pipeline.versions[-1]
        if version is not None:
            if not isinstance(version, int) or not 1 <= version <= pipeline.version_id:
                raise ResourceNotFound(f"Pipeline '{pipeline.arn}' has no version {version!r}.")
            definition_json, definition = pipeline.versions[version - 1]
        try:
            values = resolve_parameters(definition, given)
        except ParameterError as err:
            raise EngineValidationError(
                f"Invalid PipelineParameters for pipeline {pipeline.name!r}: {err}"
            ) from None
        selected, source = self._selective(pipeline, definition, selective, region)
        self._check_cap(pipeline, "; wait for one to finish.")
        parameters = execution_parameters(definition, given)
        now = utcnow()
        execution_id = self._machine.new_id(12, ID_ALPHABET)
        while f"{pipeline.arn}/execution/{execution_id}" in self._executions:
            execution_id = self._machine.new_id(12, ID_ALPHABET)
        execution = Execution(
            arn=f"{pipeline.arn}/execution/{execution_id}",
            id=execution_id,
            seq=self._machine.next_seq(),
            pipeline=pipeline,
            definition=definition,
            definition_json=definition_json,
            version_id=version or pipeline.version_id,
            display_name=display_name or f"execution-{int(now.timestamp() * 1000)}",
            description=description,
            parameters=parameters,
            values=values,
            creation_time=now,
            client_token=token,
            fingerprint=fingerprint,
            parallelism=parallelism if parallelism is not None else pipeline.parallelism,
            parallelism_given=parallelism is not None,
            steps={name: StepRun(spec) for name, spec in definition.steps.items()},
            last_modified_time=now,
            selective=copy.deepcopy(selective) if selective else None,
            selected=selected,
            source=source,
        )
        if selected is not None:
            for run in execution.steps.values():
                if run.name not in selected:
                    run.phase = "skipped"
        self._executions[execution.arn] = execution
        pipeline.executions.append(execution)
        if token:
            pipeline.start_tokens[token] = execution
        pipeline.last_run_time = now
        self._machine.start(execution)
        return {"PipelineExecutionArn": execution.arn}

    def _check_cap(self, pipeline: Pipeline, ending: str) -> None:
        """ResourceLimitExceeded when the pipeline's concurrency cap (a control) is reached."""
        cap = self._caps.get(pipeline.key)
        if cap is not None and pipeline.active >= cap:
            raise ResourceLimitExceeded(
                f"Pipeline {pipeline.name!r} already has {pipeline.active} running executions (the local "
                f"concurrency cap is {cap}){ending}"
            )

    def _selective(
        self, pipeline: Pipeline, definition: PipelineDefinition, config: Any, region: str
    ) -> tuple[frozenset[str] | None, Execution | None]:
        if not config:
            return None, None
        names = [str(s.get("StepName")) for s in config.get("SelectedSteps") or [] if isinstance(s, Mapping)]
        if not names:
            raise EngineValidationError("SelectiveExecutionConfig.SelectedSteps must name at least one step")
        unknown = [n for n in names if n not in definition.steps]
        if unknown:
            raise EngineValidationError(
                f"SelectiveExecutionConfig selects unknown steps {unknown}; steps of pipeline "
                f"{pipeline.name!r}: {', '.join(definition.order)}"
            )
        selected = frozenset(names)
        source: Execution | None = None
        source_arn = config.get("SourcePipelineExecutionArn")
        if source_arn:
            source = self._executions.get(str(source_arn).lower())
            if source is None or source.region != region:
                raise ResourceNotFound(f"Source pipeline execution '{source_arn}' does not exist.")
            if source.pipeline is not pipeline:
                raise EngineValidationError(
                    f"Source pipeline execution '{source_arn}' is not an execution of pipeline "
                    f"{pipeline.name!r}"
                )
            if source.status not in ("Succeeded", "Failed"):
                raise EngineValidationError(
                    f"Source pipeline execution '{source_arn}' is {source.status}; it must be "
                    "Succeeded or Failed"
                )
        for name in sorted(selected):
            spec = definition.steps[name]
            for upstream in sorted(spec.upstream - selected):
                if spec.branch is not None and upstream == spec.branch.condition:
                    continue
                if source is None:
                    raise EngineValidationError(
                        f"Selected step {name!r} depends on unselected step {upstream!r}: "
                        "SelectiveExecutionConfig.SourcePipelineExecutionArn is required"
                    )
                found = reference_run(source, upstream)
                if found is None or found[1].status != "Succeeded":
                    raise EngineValidationError(
                        f"Selected step {name!r} depends on unselected step {upstream!r}, which did not "
                        f"succeed in source execution {source.arn}"
                    )
        return selected, source

    # -- stop, retry, callbacks -----------------------------------------------------------------

    def _stop_pipeline_execution(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        execution = self._execution(request, region)
        token = request.get("ClientRequestToken")
        if token and token in execution.stop_tokens:
            return {"PipelineExecutionArn": execution.arn}
        if execution.status != "Executing":
            raise EngineValidationError(
                f"Only pipelines with 'Executing' status can be stopped. Pipeline execution {execution.arn} "
                f"is {execution.status}."
            )
        if token:
            execution.stop_tokens.add(token)
        self._machine.stop(execution)
        return {"PipelineExecutionArn": execution.arn}

    def _retry_pipeline_execution(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        execution = self._execution(request, region)
        token = request.get("ClientRequestToken")
        if token and token in execution.retry_tokens:
            return {"PipelineExecutionArn": execution.arn}
        if execution.status != "Failed":
            raise ConflictError(
                f"Pipeline execution {execution.arn} is {execution.status}; only a Failed execution can "
                "be retried."
            )
        parallelism = requests.parallelism(request.get("ParallelismConfiguration"))
        self._check_cap(execution.pipeline, ".")
        if token:
            execution.retry_tokens.add(token)
        self._machine.retry(execution, parallelism)
        return {"PipelineExecutionArn": execution.arn}

    def _ticket(self, request: Mapping[str, Any], region: str) -> CallbackTicket:
        token = request.get("CallbackToken")
        ticket = self._machine.tickets.get(token) if isinstance(token, str) else None
        if ticket is None or not ticket.execution.alive or ticket.execution.region != region:
            raise ResourceNotFound(f"Callback token '{token}' does not exist.")
        return ticket

    def _check_answer(self, ticket: CallbackTicket, kind: str, request: Mapping[str, Any]) -> bool:
        """True for a repeat of the accepted answer; raises ConflictError when it cannot be accepted."""
        client = request.get("ClientRequestToken")
        token = request.get("CallbackToken")
        if ticket.answer is not None:
            if client is not None and ticket.answer == (kind, client):
                return True
            raise ConflictError(
                f"Callback token '{token}' of step {ticket.step.name!r} was already answered "
                f"({ticket.answer[0]}); a token can be answered once."
            )
        run = ticket.step
        if run.callback_token != token or run.phase != "active":
            raise ConflictError(
                f"Callback token '{token}' of step {run.name!r} is no longer waiting for an answer."
            )
        return False

    def _send_pipeline_execution_step_success(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        ticket = self._ticket(request, region)
        execution, run = ticket.execution, ticket.step
        if self._check_answer(ticket, "success", request):
            return {"PipelineExecutionArn": execution.arn}
        outputs = request.get("OutputParameters") or []
        if len(outputs) > MAX_OUTPUT_PARAMETERS:
            raise EngineValidationError(f"at most {MAX_OUTPUT_PARAMETERS} OutputParameters are allowed")
        for item in outputs:
            if (
                not isinstance(item, Mapping)
                or not isinstance(item.get("Name"), str)
                or not isinstance(item.get("Value"), str)
            ):
                raise EngineValidationError(
                    f"OutputParameters entries must be {{Name, Value}} strings, got {item!r}"
                )
        try:
            typed, listed = typed_outputs(run, list(outputs))
        except ValueError as err:
            raise EngineValidationError(str(err)) from None
        ticket.answer = ("success", request.get("ClientRequestToken"))
        base = {**(run.arguments or {}), "OutputParameters": typed}
        behaviour = self._machine.behaviour(execution, run.name)
        if behaviour is not None and behaviour.properties:
            base = merge_properties(
                base, {k: v for k, v in behaviour.properties.items() if k != "OutputParameters"}
            )
        run.properties = base
        run.metadata["Callback"]["OutputParameters"] = listed
        self._machine.end_step(execution, run, "Succeeded")
        return {"PipelineExecutionArn": execution.arn}

    def _send_pipeline_execution_step_failure(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        ticket = self._ticket(request, region)
        execution, run = ticket.execution, ticket.step
        if self._check_answer(ticket, "failure", request):
            return {"PipelineExecutionArn": execution.arn}
        ticket.answer = ("failure", request.get("ClientRequestToken"))
        reason = (
            request.get("FailureReason")
            or "The callback step was answered with SendPipelineExecutionStepFailure"
        )
        self._machine.end_step(execution, run, "Failed", str(reason))
        return {"PipelineExecutionArn": execution.arn}

    # -- describing executions ------------------------------------------------------------------

    def _describe_pipeline_execution(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        execution = self._execution(request, region)
        response: dict[str, Any] = {
            "PipelineArn": execution.pipeline.arn,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionDisplayName": execution.display_name,
            "PipelineExecutionStatus": execution.status,
            "CreationTime": execution.creation_time,
            "LastModifiedTime": execution.last_modified_time or execution.creation_time,
            "PipelineVersionId": execution.version_id,
        }
        if execution.description is not None:
            response["PipelineExecutionDescription"] = execution.description
        if execution.failure_reason:
            response["FailureReason"] = execution.failure_reason
        if execution.parallelism is not None:
            response["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": execution.parallelism}
        if execution.selective:
            response["SelectiveExecutionConfig"] = copy.deepcopy(execution.selective)
        experiment = execution.definition.experiment_config
        if experiment is not None:
            try:
                resolved = evaluate(experiment, self._machine.scope(execution))
            except ExpressionError:
                resolved = None
            if isinstance(resolved, dict):
                config = {
                    k: format_value(resolved[k]) for k in ("ExperimentName", "TrialName") if resolved.get(k)
                }
                if config:
                    response["PipelineExperimentConfig"] = config
        return response

    @staticmethod
    def _summary(execution: Execution) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "PipelineExecutionArn": execution.arn,
            "StartTime": execution.creation_time,
            "PipelineExecutionStatus": execution.status,
            "PipelineExecutionDisplayName": execution.display_name,
        }
        if execution.description is not None:
            summary["PipelineExecutionDescription"] = execution.description
        if execution.failure_reason:
            summary["PipelineExecutionFailureReason"] = execution.failure_reason
        return summary

    def _list_pipeline_executions(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        """Cost: O(log n + page) in the pipeline's own executions by CreationTime (O(n log n) by ARN)."""
        pipeline = self._pipeline(request, region)
        after = requests.timestamp(request.get("CreatedAfter"), "CreatedAfter")
        before = requests.timestamp(request.get("CreatedBefore"), "CreatedBefore")
        sort_by = requests.choice(request, "SortBy", ("CreationTime", "PipelineExecutionArn"), "CreationTime")
        order = requests.choice(request, "SortOrder", ("Ascending", "Descending"), "Descending")
        limit = requests.max_results(request)
        descending = order == "Descending"
        cursor: Any = None
        token = request.get("NextToken")
        if token:
            decoded = requests.decode_token(token)
            if (
                decoded is None
                or decoded.get("pipeline") != pipeline.arn
                or decoded.get("sort") != sort_by
                or (decoded.get("order") != order)
            ):
                raise EngineValidationError(f"NextToken {token!r} is invalid for this request")
            cursor = decoded.get("cursor")
        if sort_by == "CreationTime":
            items = pipeline.executions

            def key(e: Execution) -> Any:
                return e.seq
        else:
            items = sorted(pipeline.executions, key=lambda e: e.arn)

            def key(e: Execution) -> Any:
                return e.arn

        if descending:
            end = bisect.bisect_left(items, cursor, key=key) if cursor is not None else len(items)
            indices: Any = range(end - 1, -1, -1)
        else:
            start = bisect.bisect_right(items, cursor, key=key) if cursor is not None else 0
            indices = range(start, len(items))
        page: list[Execution] = []
        more = False
        for index in indices:
            execution = items[index]
            created = execution.creation_time
            if after is not None and created <= after:
                if sort_by == "CreationTime" and descending:
                    break
                continue
            if before is not None and created >= before:
                if sort_by == "CreationTime" and not descending:
                    break
                continue
            if len(page) == limit:
                more = True
                break
            page.append(execution)
        response: dict[str, Any] = {"PipelineExecutionSummaries": [self._summary(e) for e in page]}
        if more:
            response["NextToken"] = requests.encode_token(
                {"pipeline": pipeline.arn, "sort": sort_by, "order": order, "cursor": key(page[-1])}
            )
        return response

    def _step_entry(self, execution: Execution, run: StepRun) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "StepName": run.name,
            "StartTime": run.start_time,
            "StepStatus": run.status,
            "AttemptCount": run.attempt_count,
            "Metadata": copy.deepcopy(run.metadata),
        }
        if run.spec.display_name:
            entry["StepDisplayName"] = run.spec.display_name
        if run.spec.description:
            entry["StepDescription"] = run.spec.description
        if run.end_time is not None:
            entry["EndTime"] = run.end_time
        if run.failure_reason is not None:
            entry["FailureReason"] = run.failure_reason
        return entry

    def _list_pipeline_execution_steps(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        execution = self._execution(request, region)
        order = requests.choice(request, "SortOrder", ("Ascending", "Descending"), "Descending")
        listed = sorted(
            (run for run in execution.steps.values() if run.status is not None),
            key=lambda run: run.start_seq,
            reverse=order == "Descending",
        )
        expected = {"kind": "steps", "execution": execution.arn, "order": order}
        page, next_token = requests.page(
            listed, request.get("NextToken"), expected, requests.max_results(request)
        )
        response: dict[str, Any] = {
            "PipelineExecutionSteps": [self._step_entry(execution, run) for run in page]
        }
        if next_token:
            response["NextToken"] = next_token
        return response

    def _list_pipeline_parameters_for_execution(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        execution = self._execution(request, region)
        expected = {"kind": "parameters", "execution": execution.arn}
        page, next_token = requests.page(
            execution.parameters, request.get("NextToken"), expected, requests.max_results(request)
        )
        response: dict[str, Any] = {"PipelineParameters": [dict(p) for p in page]}
        if next_token:
            response["NextToken"] = next_token
        return response

    def _describe_pipeline_definition_for_execution(
        self, request: dict[str, Any], region: str
    ) -> dict[str, Any]:
        execution = self._execution(request, region)
        return {"PipelineDefinition": execution.definition_json, "CreationTime": execution.creation_time}

    def _update_pipeline_execution(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        execution = self._execution(request, region)
        display_name = requests.display_name(request.get("PipelineExecutionDisplayName"))
        parallelism = requests.parallelism(request.get("ParallelismConfiguration"))
        if display_name is not None:
            execution.display_name = display_name
        if "PipelineExecutionDescription" in request:
            execution.description = request["PipelineExecutionDescription"]
        if parallelism is not None:
            execution.parallelism = parallelism
            execution.parallelism_given = True
        execution.last_modified_time = utcnow()
        if parallelism is not None:
            self._machine.advance(execution)
        return {"PipelineExecutionArn": execution.arn}
