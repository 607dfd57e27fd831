"""The SageMaker Pipelines engine of the local endpoint: definition interpreter and execution state machine.

It knows nothing of HTTP: :meth:`PipelineEngine.dispatch` takes an action name and a botocore-shaped
request dict (PascalCase keys, timestamps as tz-aware UTC datetimes) and returns a botocore-shaped
response dict, or raises an :class:`EngineError` subclass whose ``code`` is the AWS error code. Side
effects on other AWS services (SQS callback messages, model packages, EventBridge events, reading S3)
go through the :class:`SideEffects` the server provides.

Execution model. Steps run in dependency order (``DependsOn`` + ``Get`` references + condition
branches) on ONE scheduler thread over a time heap (``engine_scheduler.Scheduler``): a step is a few
heap entries, not a thread, so thousands of concurrent executions cost memory, not threads. Each step
goes Starting -> Executing -> Succeeded | Failed | Stopped; a simulated step lasts its behaviour's
``duration`` (else the default step duration, 1 s) times the time scale. Callback steps wait for
SendPipelineExecutionStep{Success,Failure}. API calls and the scheduler share one lock; side effects
are queued while it is held and delivered, in order, after it is released (a call's own side effects
are delivered before it returns).

Modelling choices for behaviour AWS does not document (each is a contract of this engine):

* Duplicate CreatePipeline -> ``ValidationException`` "Pipeline names must be unique within an AWS
  account and region. Pipeline with name (X) already exists." -- the message the SageMaker Python SDK's
  ``Pipeline.upsert`` and the AWS SDK examples match on (botocore lists only Conflict/ResourceNotFound/
  ResourceLimitExceeded for CreatePipeline). A repeat with the same ClientRequestToken returns the ARN.
  Pipeline names are unique case-insensitively per region (their ARN is lower-cased); at most 500
  pipelines per region (ResourceLimitExceeded).
* StartPipelineExecution idempotency: per pipeline, for the engine's lifetime. Same ClientRequestToken
  + same request (parameters as given, display name, description, parallelism, selective config,
  version) -> the same ARN and no new execution, whatever that execution's status; same token +
  different request -> ``ConflictException``. The default display name is ``execution-<epoch ms>``.
* A failing step stops new steps from starting; steps already running run to their end; then the
  execution is Failed with FailureReason ``Step <name> failed: <reason>`` (a Fail step: its ErrorMessage).
* A step that depends on a step that will not run (branch not taken, or itself skipped) does not run
  either (it is not listed). Condition and Fail steps take the step duration like any other step.
* StopPipelineExecution on an execution that is not Executing -> ``ValidationException`` "Only pipelines
  with 'Executing' status can be stopped..." (the message the Amazon provider's hook matches on), except
  a repeat with a ClientRequestToken already used to stop it, which returns the ARN. On stop, running
  steps go Stopping -> Stopped, Lambda steps run to their end, a waiting callback goes Stopping and gets a
  second SQS message (same token, pipelineExecutionArn, arguments, plus ``"status": "Stopping"``); it ends
  Succeeded or Failed by its answer. The execution is Stopped once nothing runs.
* Callback answers: unknown token -> ResourceNotFound; a token already answered (or of an attempt that is
  no longer waiting) -> ConflictException, except a repeat of the accepted answer (same kind, same
  ClientRequestToken) which returns the ARN again. Output values are checked against the declared
  OutputType (ValidationException, the token stays unanswered); undeclared outputs are kept as strings.
  The callback message body is ``{"token", "pipelineExecutionArn", "arguments"}`` with argument values
  as strings (containers as JSON). If the message cannot be sent the step fails with that reason.
* RetryPipelineExecution: only a Failed execution (else ConflictException); idempotent per
  ClientRequestToken. Failed/Stopped steps and the steps that had not run are run again; succeeded steps
  are kept. A re-run step keeps one ListPipelineExecutionSteps entry (previous attempt shown until the
  re-run starts) with AttemptCount + 1 and a new job name/ARN.
* ParallelismConfiguration.MaxParallelExecutionSteps bounds the running steps of one execution
  (waiting callbacks count); execution level (Start, Retry, UpdatePipelineExecution) overrides the
  pipeline's level captured at start.
* SelectiveExecutionConfig: only the selected steps run and are listed; references to (and
  dependencies on) unselected steps resolve from the source execution (its source, recursively),
  which must exist (ResourceNotFound), belong to the pipeline and be Succeeded or Failed, and in which
  every such step must have Succeeded (ValidationException). A selected step inside a branch of an
  unselected Condition runs.
* RetryPolicies and CacheConfig are accepted and not simulated (no CacheHitResult); executions never
  time out (AWS: 28 days).
* List calls default to MaxResults 100 (AWS documents no default); NextToken is an opaque cursor.
  ListPipelineExecutions default order CreationTime Descending; ListPipelineExecutionSteps newest
  start first; CreatedAfter/CreatedBefore are exclusive.
* DeletePipeline forgets the pipeline and its executions at once (running ones stop silently, no
  events; their callback tokens become unknown).
* EventBridge: execution and step events on every status change (``engine_events``).
* A step goes Starting -> Executing on the next scheduler tick. A step whose inputs cannot be resolved
  (a ``Get`` to a missing property, ``Std:JsonGet`` on a missing property file or path, a failed
  CreateModelPackage) goes Starting -> Failed with that reason.
* RegisterModel calls CreateModelPackage when the step starts (Metadata shows the ARN while it runs),
  except for an attempt a behaviour makes fail. Model steps create nothing (no SideEffects call).
* Lambda outputs come from the behaviour's ``properties["OutputParameters"]``, typed by the declared
  OutputType (a value that does not fit fails the step). Callback steps ignore a behaviour's
  ``duration`` and ``fail``: they end by their answer.
* UpdatePipelineExecution works whatever the execution's status; StartPipelineExecution's
  PipelineVersionId runs that version of the definition (each UpdatePipeline with a definition adds one).
* ``stats()`` is keyed by pipeline name and counts Executing + Stopping executions as active; the
  concurrency cap counts the same.

Module layout: ``engine_errors`` (error codes), ``engine_requests`` (request fields, pagination),
``engine_state`` (records), ``engine_scheduler`` (the time heap), ``engine_steps`` (what each step
type produces), ``engine_events`` (EventBridge details), ``expressions`` (evaluating values).
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import random
import re
import string
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sagemaker_pipelines_provider.definition import (
    DefinitionError,
    ParameterError,
    PipelineDefinition,
    coerce_value,
    format_value,
    parse_definition,
    resolve_parameters,
    thaw,
)
from sagemaker_pipelines_provider.local import engine_requests as requests
from sagemaker_pipelines_provider.local.engine_errors import (
    ConflictError,
    EngineError,
    EngineValidationError,
    ResourceLimitExceeded,
    ResourceNotFound,
)
from sagemaker_pipelines_provider.local.engine_events import (
    EXECUTION_EVENT,
    STEP_EVENT,
    execution_event,
    step_event,
)
from sagemaker_pipelines_provider.local.engine_scheduler import Scheduler
from sagemaker_pipelines_provider.local.engine_state import (
    ACTIVE_EXECUTION,
    Behaviour,
    Execution,
    Pipeline,
    StepRun,
    iso,
    utcnow,
)
from sagemaker_pipelines_provider.local.engine_steps import (
    job_name,
    job_outputs,
    merge_properties,
    model_package_request,
)
from sagemaker_pipelines_provider.local.expressions import (
    ExpressionError,
    Scope,
    evaluate,
    evaluate_conditions,
)

__all__ = [
    "ConflictError",
    "EngineError",
    "EngineValidationError",
    "PipelineEngine",
    "ResourceLimitExceeded",
    "ResourceNotFound",
    "SideEffects",
]

log = logging.getLogger(__name__)

MAX_PIPELINES_PER_REGION = 500
MAX_OUTPUT_PARAMETERS = 50

_PIPELINE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")
_PIPELINE_ARN = re.compile(r"^arn:aws[a-z\-]*:sagemaker:([a-z0-9\-]*):([0-9]{12}|aws):pipeline/(.+)$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN_ALPHABET = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------------------
# the side-effect boundary


class SideEffects(Protocol):
    """What the engine needs from the other AWS services (implemented by the server with moto).

    ``send_sqs_message`` and ``put_event`` are called without the engine lock, in the order the engine
    produced them (an exception is logged; for a first callback message it fails the step).
    ``create_model_package`` and ``read_s3_object`` are called WITH the engine lock held (their results
    are needed at once), so an implementation must not call back into the engine.
    """

    def send_sqs_message(self, queue_url: str, body: str) -> None: ...

    def create_model_package(self, request: dict[str, Any], region: str) -> str: ...

    def put_event(
        self, detail_type: str, detail: dict[str, Any], resources: list[str], region: str
    ) -> None: ...

    def read_s3_object(self, s3_uri: str) -> bytes | None: ...


@dataclass(eq=False)
class _CallbackTicket:
    execution: Execution
    step: StepRun
    answer: tuple[str, str | None] | None = None


# --------------------------------------------------------------------------------------------------
# the engine


class PipelineEngine:
    """SageMaker Pipelines, simulated in memory. Thread-safe. See the module docstring for semantics."""

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
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._scheduler = Scheduler(self._lock, self._flush)
        # ids and callback tokens need uniqueness, not secrecy: a seeded PRNG (SystemRandom is a syscall
        # per character, which dominated the cost of StartPipelineExecution)
        self._random = random.Random()
        self._time_scale = 1.0
        self._default_duration = 1.0
        self._handlers: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            action: getattr(self, "_" + re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower())
            for action in self.ACTIONS
        }
        self._clear_state()

    def _clear_state(self) -> None:
        self._pipelines: dict[tuple[str, str], Pipeline] = {}
        self._executions: dict[str, Execution] = {}
        self._tickets: dict[str, _CallbackTicket] = {}
        self._deleted_tokens: dict[str, str] = {}
        self._behaviours: dict[tuple[str, str], Behaviour] = {}
        self._caps: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._active: dict[str, int] = {}
        self._sequence = 0

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
            with self._lock:
                return handler(request or {}, region)
        finally:
            self._flush()

    def set_time_scale(self, scale: float) -> None:
        """Multiply every step duration by ``scale`` (>= 0) from now on; steps already timed keep theirs."""
        if scale < 0:
            raise ValueError(f"time scale must be >= 0, got {scale}")
        with self._lock:
            self._time_scale = float(scale)

    def set_default_step_duration(self, seconds: float) -> None:
        """Duration (before scaling) of steps without a behaviour duration; default 1.0."""
        if seconds < 0:
            raise ValueError(f"step duration must be >= 0, got {seconds}")
        with self._lock:
            self._default_duration = float(seconds)

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
        behaviour = Behaviour(
            duration, fail, fail_attempts, copy.deepcopy(property_files), copy.deepcopy(properties)
        )
        with self._lock:
            self._behaviours[(self._pipeline_key(pipeline), step)] = behaviour

    def set_concurrency_cap(self, pipeline: str, cap: int | None) -> None:
        """At most ``cap`` Executing/Stopping executions of ``pipeline``: StartPipelineExecution and
        RetryPipelineExecution beyond it raise ResourceLimitExceeded. None removes the cap."""
        with self._lock:
            if cap is None:
                self._caps.pop(self._pipeline_key(pipeline), None)
            else:
                self._caps[self._pipeline_key(pipeline)] = int(cap)

    def stats(self) -> dict[str, Any]:
        """``peak_concurrency``: most Executing/Stopping executions seen at once; ``executions``: started;
        ``active``: Executing/Stopping now -- each keyed by pipeline name."""
        with self._lock:
            return {
                "peak_concurrency": dict(self._peak),
                "executions": dict(self._total),
                "active": dict(self._active),
            }

    def reset(self) -> None:
        """Forget pipelines, executions, callback tokens, behaviours, caps and stats; pending timers are
        dropped. The time scale and default step duration are controls, not state: they are kept."""
        with self._lock:
            self._scheduler.clear()
            for execution in self._executions.values():
                execution.alive = False
            self._outbox.clear()
            self._clear_state()

    def shutdown(self) -> None:
        """Stop the scheduler thread (idempotent). A later call that needs it starts it again."""
        self._scheduler.shutdown()
        self._flush()

    # -- lookups -------------------------------------------------------------------------------------

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

    def _behaviour(self, execution: Execution, step: str) -> Behaviour | None:
        return self._behaviours.get((execution.pipeline.key, step))

    # -- pipelines -----------------------------------------------------------------------------------

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

    def _describe_pipeline(self, request: dict[str, Any], region: str) -> dict[str, Any]:
        pipeline = self._pipeline(request, region)
        text = pipeline.definition_json
        version = request.get("PipelineVersionId")
        if version is not None:
            if not isinstance(version, int) or not 1 <= version <= pipeline.version_id:
                raise ResourceNotFound(f"Pipeline '{pipeline.arn}' has no version {version!r}.")
            text = pipeline.versions[version - 1][0]
        response: dict[str, Any] = {
            "PipelineArn": pipeline.arn,
            "PipelineName": pipeline.name,
            "PipelineDisplayName": pipeline.display_name,
            "PipelineDefinition": text,
            "PipelineStatus": "Active",
            "CreationTime": pipeline.creation_time,
            "LastModifiedTime": pipeline.last_modified_time,
        }
        if pipeline.description is not None:
            response["PipelineDescription"] = pipeline.description
        if pipeline.role_arn:
            response["RoleArn"] = pipeline.role_arn
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
        for execution in pipeline.executions:
            execution.alive = False
            self._executions.pop(execution.arn, None)
        if pipeline.active:
            self._active[pipeline.name] = self._active.get(pipeline.name, 0) - pipeline.active
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
            summary: dict[str, Any] = {
                "PipelineArn": p.arn,
                "PipelineName": p.name,
                "PipelineDisplayName": p.display_name,
                "CreationTime": p.creation_time,
                "LastModifiedTime": p.last_modified_time,
            }
            if p.description is not None:
                summary["PipelineDescription"] = p.description
            if p.role_arn:
                summary["RoleArn"] = p.role_arn
            if p.last_run_time is not None:
                summary["LastExecutionTime"] = p.last_run_time
            summaries.append(summary)
        response: dict[str, Any] = {"PipelineSummaries": summaries}
        if next_token:
            response["NextToken"] = next_token
        return response

    # -- starting executions -------------------------------------------------------------------------

    def _new_id(self, length: int, alphabet: str) -> str:
        return "".join(self._random.choices(alphabet, k=length))

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
        cap = self._caps.get(pipeline.key)
        if cap is not None and pipeline.active >= cap:
            raise ResourceLimitExceeded(
                f"Pipeline {pipeline.name!r} already has {pipeline.active} running executions (the local "
                f"concurrency cap is {cap}); wait for one to finish."
            )
        given_values = {str(p.get("Name")): format_value(p.get("Value")) for p in given}
        parameters = [
            {"Name": p.name, "Value": given_values.get(p.name, format_value(p.default))}
            for p in definition.parameters
        ]
        now = utcnow()
        execution_id = self._new_id(12, _ID_ALPHABET)
        while f"{pipeline.arn}/execution/{execution_id}" in self._executions:
            execution_id = self._new_id(12, _ID_ALPHABET)
        self._sequence += 1
        execution = Execution(
            arn=f"{pipeline.arn}/execution/{execution_id}",
            id=execution_id,
            seq=self._sequence,
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
        self._total[pipeline.name] = self._total.get(pipeline.name, 0) + 1
        self._activate(execution)
        self._emit_execution(execution, None)
        self._advance(execution)
        return {"PipelineExecutionArn": execution.arn}

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
                found = self._reference_run(source, upstream)
                if found is None or found[1].status != "Succeeded":
                    raise EngineValidationError(
                        f"Selected step {name!r} depends on unselected step {upstream!r}, which did not "
                        f"succeed in source execution {source.arn}"
                    )
        return selected, source

    def _activate(self, execution: Execution) -> None:
        pipeline = execution.pipeline
        pipeline.active += 1
        active = self._active.get(pipeline.name, 0) + 1
        self._active[pipeline.name] = active
        self._peak[pipeline.name] = max(self._peak.get(pipeline.name, 0), active)

    # -- scheduling ----------------------------------------------------------------------------------

    def _readiness(self, execution: Execution, run: StepRun) -> str:
        spec = run.spec
        for upstream in spec.upstream:
            if execution.selected is not None and upstream not in execution.selected:
                continue
            other = execution.steps[upstream]
            if other.phase == "skipped":
                return "skip"
            if other.phase != "done" or other.status != "Succeeded":
                return "wait"
        branch = spec.branch
        gated = branch is not None and (execution.selected is None or branch.condition in execution.selected)
        if gated and branch is not None and execution.steps[branch.condition].outcome != branch.outcome:
            return "skip"
        return "ready"

    def _advance(self, execution: Execution) -> None:
        """Start what may start; finish the execution when nothing runs and nothing more can start."""
        if not execution.alive or execution.status not in ACTIVE_EXECUTION:
            return
        if execution.status == "Executing" and execution.first_failure is None:
            limit = execution.parallelism
            changed = True
            while changed:
                changed = False
                for name in execution.definition.order:
                    run = execution.steps[name]
                    if run.phase != "waiting":
                        continue
                    verdict = self._readiness(execution, run)
                    if verdict == "skip":
                        run.phase = "skipped"
                        changed = True
                    elif verdict == "ready" and (limit is None or execution.running < limit):
                        self._start_step(execution, run)
        if execution.running == 0:
            self._finish_execution(execution)

    def _duration(self, execution: Execution, run: StepRun) -> float:
        behaviour = self._behaviour(execution, run.name)
        seconds = (
            behaviour.duration if behaviour and behaviour.duration is not None else self._default_duration
        )
        return seconds * self._time_scale

    def _set_step_status(self, execution: Execution, run: StepRun, status: str) -> None:
        previous = run.status
        run.status = status
        self._emit_step(execution, run, previous)

    def _start_step(self, execution: Execution, run: StepRun) -> None:
        previous = run.status
        self._sequence += 1
        run.start_seq = self._sequence
        run.attempt_count += 1
        run.run_id += 1
        run.phase = "active"
        run.status = "Starting"
        run.start_time = utcnow()
        run.end_time = None
        run.failure_reason = None
        run.error = None
        run.metadata = {}
        run.properties = None
        run.arguments = None
        run.outcome = None
        run.fail_message = None
        run.callback_token = None
        run.property_file_cache = {}
        execution.running += 1
        try:
            self._prepare(execution, run)
        except (ExpressionError, ValueError) as err:
            run.error = str(err)
        except Exception as err:  # a side effect (CreateModelPackage) failed
            run.error = f"{type(err).__name__}: {err}"
        self._emit_step(execution, run, previous)
        self._scheduler.call_later(0, partial(self._on_executing, execution, run, run.run_id))

    def _scope(self, execution: Execution) -> Scope:
        pipeline = execution.pipeline
        variables = {
            "PipelineExecutionId": execution.id,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionDisplayName": execution.display_name,
            "PipelineName": pipeline.name,
            "PipelineArn": pipeline.arn,
            "StartDateTime": iso(execution.creation_time),
        }

        def step_properties(name: str) -> Mapping[str, Any] | None:
            found = self._reference_run(execution, name)
            if found is None or found[1].status != "Succeeded":
                return None
            return found[1].properties

        return Scope(
            parameters=execution.values,
            execution=variables,
            step_properties=step_properties,
            property_file=partial(self._property_file, execution),
            read_json=self._read_json,
            now=lambda: iso(utcnow()) or "",
        )

    def _reference_run(self, execution: Execution, name: str) -> tuple[Execution, StepRun] | None:
        """The run whose results ``name`` means in ``execution`` (the source's for unselected steps)."""
        while execution.selected is not None and name not in execution.selected:
            if execution.source is None:
                return None
            execution = execution.source
        run = execution.steps.get(name)
        return None if run is None else (execution, run)

    def _read_json(self, uri: str) -> Any:
        data = self.side_effects.read_s3_object(uri)
        if data is None:
            raise ExpressionError(f"no JSON document at {uri}")
        try:
            return json.loads(data)
        except ValueError as err:
            raise ExpressionError(f"the document at {uri} is not valid JSON: {err}") from None

    def _property_file(self, execution: Execution, step: str, file_name: str) -> Any:
        found = self._reference_run(execution, step)
        if found is None or found[1].status != "Succeeded" or found[1].properties is None:
            raise ExpressionError(
                f"property file {file_name!r} of step {step!r} is not available: that step has not succeeded"
            )
        owner, run = found
        if file_name in run.property_file_cache:
            return run.property_file_cache[file_name]
        spec = run.spec.property_file(file_name)
        if spec is None:
            raise ExpressionError(f"step {step!r} declares no property file {file_name!r}")
        behaviour = self._behaviour(owner, step)
        if behaviour and behaviour.property_files and file_name in behaviour.property_files:
            document = copy.deepcopy(behaviour.property_files[file_name])
        else:
            outputs = ((run.properties or {}).get("ProcessingOutputConfig") or {}).get("Outputs") or []
            output = next(
                (o for o in outputs if isinstance(o, Mapping) and o.get("OutputName") == spec.output_name),
                None,
            )
            uri = (output or {}).get("S3Output", {}).get("S3Uri") if output else None
            if not uri:
                raise ExpressionError(
                    f"property file {file_name!r} of step {step!r}: the step has no output "
                    f"{spec.output_name!r} with an S3Uri"
                )
            location = f"{str(uri).rstrip('/')}/{spec.file_path.lstrip('/')}"
            data = self.side_effects.read_s3_object(location)
            if data is None:
                raise ExpressionError(
                    f"property file {file_name!r} of step {step!r} was not found at {location}"
                )
            try:
                document = json.loads(data)
            except ValueError as err:
                raise ExpressionError(
                    f"property file {file_name!r} of step {step!r} at {location} is not valid JSON: {err}"
                ) from None
        run.property_file_cache[file_name] = document
        return document

    def _prepare(self, execution: Execution, run: StepRun) -> None:
        """Resolve a starting step's inputs and what it shows while it runs. Raising fails the step."""
        spec = run.spec
        scope = self._scope(execution)
        behaviour = self._behaviour(execution, spec.name)
        if spec.type == "Condition":
            run.outcome = evaluate_conditions(spec.conditions, scope)
            return
        if spec.type == "Fail":
            message = format_value(evaluate(spec.arguments.get("ErrorMessage", ""), scope))
            run.fail_message = message
            run.metadata = {"Fail": {"ErrorMessage": message}}
            return
        arguments = evaluate(spec.arguments, scope)
        if not isinstance(arguments, dict):
            arguments = {"Arguments": arguments}
        run.arguments = arguments
        suffix = self._new_id(10, _ID_ALPHABET)
        name = job_name(execution.id, spec.name, suffix)
        region = execution.region
        if spec.type == "Callback":
            token = self._new_id(10, _TOKEN_ALPHABET)
            while token in self._tickets:
                token = self._new_id(10, _TOKEN_ALPHABET)
            run.callback_token = token
            run.properties = {"OutputParameters": {}}
            run.metadata = {"Callback": {"CallbackToken": token, "SqsQueueUrl": spec.sqs_queue_url}}
            self._tickets[token] = _CallbackTicket(execution, run)
            self._send_callback_message(execution, run, stopping=False)
            return
        if spec.type == "Lambda":
            run.properties = {"OutputParameters": {}}
            function_arn = evaluate(spec.raw.get("FunctionArn", ""), scope)
            run.metadata = {"Lambda": {"Arn": format_value(function_arn)}}
        elif spec.type == "RegisterModel":
            request = model_package_request(arguments)
            if behaviour is not None and behaviour.fails(run.attempt_count):
                package_arn = f"arn:aws:sagemaker:{region}:{self.account_id}:model-package/{name.lower()}"
            else:
                package_arn = self.side_effects.create_model_package(request, region)
            run.properties = {**arguments, "ModelPackageArn": package_arn}
            run.metadata = {"RegisterModel": {"Arn": package_arn}}
        else:
            run.properties, run.metadata = job_outputs(
                spec.type, spec.name, arguments, thaw(spec.raw), name, region, self.account_id
            )
        if behaviour is not None and behaviour.properties and spec.type != "Lambda":
            run.properties = merge_properties(run.properties or {}, behaviour.properties)

    def _send_callback_message(self, execution: Execution, run: StepRun, *, stopping: bool) -> None:
        body: dict[str, Any] = {
            "token": run.callback_token,
            "pipelineExecutionArn": execution.arn,
            "arguments": {k: format_value(v) for k, v in (run.arguments or {}).items()},
        }
        if stopping:
            body["status"] = "Stopping"
        url = run.spec.sqs_queue_url or ""
        on_error = None if stopping else partial(self._callback_send_failed, execution, run, run.run_id, url)
        self._outbox.append(("sqs", url, json.dumps(body), on_error))

    def _callback_send_failed(
        self, execution: Execution, run: StepRun, run_id: int, url: str, error: Exception
    ) -> None:
        if not execution.alive or run.run_id != run_id or run.phase != "active":
            return
        ticket = self._tickets.get(run.callback_token or "")
        if ticket is not None and ticket.answer is None:
            ticket.answer = ("undeliverable", None)
        self._end_step(execution, run, "Failed", f"Could not send the callback message to {url}: {error}")

    def _on_executing(self, execution: Execution, run: StepRun, run_id: int) -> None:
        if not execution.alive or run.run_id != run_id or run.status != "Starting":
            return
        if run.error is not None:
            self._end_step(execution, run, "Failed", run.error)
            return
        self._set_step_status(execution, run, "Executing")
        if run.spec.type != "Callback":
            self._scheduler.call_later(
                self._duration(execution, run), partial(self._on_complete, execution, run, run_id)
            )

    def _on_complete(self, execution: Execution, run: StepRun, run_id: int) -> None:
        if not execution.alive or run.run_id != run_id or run.phase != "active":
            return
        spec = run.spec
        behaviour = self._behaviour(execution, spec.name)
        if behaviour is not None and behaviour.fails(run.attempt_count):
            self._end_step(execution, run, "Failed", behaviour.fail)
        elif spec.type == "Fail":
            self._end_step(execution, run, "Failed", run.fail_message or "")
        elif spec.type == "Condition":
            run.metadata = {"Condition": {"Outcome": "True" if run.outcome else "False"}}
            run.properties = {"Outcome": bool(run.outcome)}
            self._end_step(execution, run, "Succeeded")
        elif spec.type == "Lambda":
            configured = (behaviour.properties or {}) if behaviour else {}
            try:
                typed, listed = self._outputs(run, configured.get("OutputParameters") or {})
            except ValueError as err:
                self._end_step(execution, run, "Failed", str(err))
                return
            run.properties = merge_properties(
                {**(run.arguments or {}), "OutputParameters": typed},
                {k: v for k, v in configured.items() if k != "OutputParameters"},
            )
            run.metadata["Lambda"]["OutputParameters"] = listed
            self._end_step(execution, run, "Succeeded")
        else:
            self._end_step(execution, run, "Succeeded")

    @staticmethod
    def _outputs(run: StepRun, values: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Typed outputs (declared OutputType, default String) and their API list form."""
        if isinstance(values, list):
            values = {str(item.get("Name")): item.get("Value") for item in values}
        typed: dict[str, Any] = {}
        listed: list[dict[str, str]] = []
        for name, value in values.items():
            declared = run.spec.output_parameter(name)
            output_type = declared.type if declared else "String"
            try:
                typed[name] = coerce_value(output_type, value)
            except ValueError as err:
                raise ValueError(
                    f"output {name!r} of step {run.name!r} is declared {output_type}: {err}"
                ) from None
            listed.append({"Name": name, "Value": format_value(value)})
        return typed, listed

    def _end_step(self, execution: Execution, run: StepRun, status: str, reason: str | None = None) -> None:
        run.phase = "done"
        run.run_id += 1
        run.end_time = utcnow()
        run.failure_reason = reason if status == "Failed" else None
        execution.running -= 1
        if status == "Failed" and execution.first_failure is None:
            execution.first_failure = run
        self._set_step_status(execution, run, status)
        self._advance(execution)

    def _on_stopped(self, execution: Execution, run: StepRun, run_id: int) -> None:
        if execution.alive and run.run_id == run_id and run.phase == "active":
            self._end_step(execution, run, "Stopped")

    def _finish_execution(self, execution: Execution) -> None:
        previous = execution.status
        if execution.stop_requested:
            status = "Stopped"
        elif execution.first_failure is not None:
            status = "Failed"
            failed = execution.first_failure
            if failed.spec.type == "Fail":
                execution.failure_reason = failed.fail_message or failed.failure_reason or ""
            else:
                execution.failure_reason = f"Step {failed.name} failed: {failed.failure_reason}"
        else:
            status = "Succeeded"
        now = utcnow()
        execution.status = status
        execution.end_time = now
        execution.last_modified_time = now
        pipeline = execution.pipeline
        pipeline.active -= 1
        self._active[pipeline.name] = self._active.get(pipeline.name, 1) - 1
        self._emit_execution(execution, previous)

    # -- stop, retry, callbacks ----------------------------------------------------------------------

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
        execution.stop_requested = True
        self._set_execution_status(execution, "Stopping")
        for run in execution.steps.values():
            if run.phase != "active":
                continue
            if run.spec.type == "Lambda":
                continue
            if run.spec.type == "Callback" and run.error is None:
                self._set_step_status(execution, run, "Stopping")
                self._send_callback_message(execution, run, stopping=True)
                continue
            run.run_id += 1
            self._set_step_status(execution, run, "Stopping")
            self._scheduler.call_later(0, partial(self._on_stopped, execution, run, run.run_id))
        if execution.running == 0:
            self._advance(execution)
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
        pipeline = execution.pipeline
        cap = self._caps.get(pipeline.key)
        if cap is not None and pipeline.active >= cap:
            raise ResourceLimitExceeded(
                f"Pipeline {pipeline.name!r} already has {pipeline.active} running executions (the local "
                f"concurrency cap is {cap})."
            )
        if token:
            execution.retry_tokens.add(token)
        if parallelism is not None:
            execution.parallelism = parallelism
            execution.parallelism_given = True
        for run in execution.steps.values():
            if run.phase == "done" and run.status in ("Failed", "Stopped"):
                run.phase = "waiting"
        execution.first_failure = None
        execution.failure_reason = None
        execution.end_time = None
        self._activate(execution)
        self._set_execution_status(execution, "Executing")
        self._advance(execution)
        return {"PipelineExecutionArn": execution.arn}

    def _ticket(self, request: Mapping[str, Any], region: str) -> _CallbackTicket:
        token = request.get("CallbackToken")
        ticket = self._tickets.get(token) if isinstance(token, str) else None
        if ticket is None or not ticket.execution.alive or ticket.execution.region != region:
            raise ResourceNotFound(f"Callback token '{token}' does not exist.")
        return ticket

    def _check_answer(self, ticket: _CallbackTicket, kind: str, request: Mapping[str, Any]) -> bool:
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
            typed, listed = self._outputs(run, list(outputs))
        except ValueError as err:
            raise EngineValidationError(str(err)) from None
        ticket.answer = ("success", request.get("ClientRequestToken"))
        base = {**(run.arguments or {}), "OutputParameters": typed}
        behaviour = self._behaviour(execution, run.name)
        if behaviour is not None and behaviour.properties:
            base = merge_properties(
                base, {k: v for k, v in behaviour.properties.items() if k != "OutputParameters"}
            )
        run.properties = base
        run.metadata["Callback"]["OutputParameters"] = listed
        self._end_step(execution, run, "Succeeded")
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
        self._end_step(execution, run, "Failed", str(reason))
        return {"PipelineExecutionArn": execution.arn}

    # -- describing executions -----------------------------------------------------------------------

    def _set_execution_status(self, execution: Execution, status: str) -> None:
        previous = execution.status
        execution.status = status
        execution.last_modified_time = utcnow()
        self._emit_execution(execution, previous)

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
                resolved = evaluate(experiment, self._scope(execution))
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
            self._advance(execution)
        return {"PipelineExecutionArn": execution.arn}

    # -- events and side effects ---------------------------------------------------------------------

    def _emit_execution(self, execution: Execution, previous: str | None) -> None:
        self._outbox.append(
            ("event", EXECUTION_EVENT, *execution_event(execution, previous), execution.region)
        )

    def _emit_step(self, execution: Execution, run: StepRun, previous: str | None) -> None:
        self._outbox.append(("event", STEP_EVENT, *step_event(execution, run, previous), execution.region))

    def _flush(self) -> None:
        """Deliver queued side effects in order, outside the engine lock (one deliverer at a time)."""
        with self._flush_lock:
            while self._outbox:
                try:
                    item = self._outbox.popleft()
                except IndexError:
                    return
                kind = item[0]
                try:
                    if kind == "event":
                        _, detail_type, detail, resources, region = item
                        self.side_effects.put_event(detail_type, detail, resources, region)
                    else:
                        _, url, body, _on_error = item
                        self.side_effects.send_sqs_message(url, body)
                except Exception as err:
                    log.warning("pipeline engine side effect %s failed: %s", kind, err)
                    if kind == "sqs" and item[3] is not None:
                        with self._lock:
                            item[3](err)
