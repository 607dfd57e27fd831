"""The execution state machine: steps start, run, stop and end on one scheduler thread.

It owns the engine lock, the scheduler, the side-effect outbox, behaviours and callback tickets; the
API handlers (:mod:`.actions`) validate requests and call it with the lock held. See
docs/local-endpoint.md for the execution model and modelling choices.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import string
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sagemaker_pipelines_provider.definition import format_value, thaw

from .events import EXECUTION_EVENT, STEP_EVENT, execution_event, step_event
from .expressions import ExpressionError, Scope, evaluate, evaluate_conditions
from .scheduler import Scheduler
from .state import ACTIVE_EXECUTION, Behaviour, Execution, Pipeline, StepRun, iso, reference_run, utcnow
from .steps import job_name, job_outputs, merge_properties, model_package_request, typed_outputs

__all__ = ["ID_ALPHABET", "CallbackTicket", "ExecutionMachine", "SideEffects"]

log = logging.getLogger(__name__)

ID_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_ALPHABET = string.ascii_letters + string.digits


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
class CallbackTicket:
    """A callback token's step and the answer it accepted (kind, ClientRequestToken)."""

    execution: Execution
    step: StepRun
    answer: tuple[str, str | None] | None = None


class ExecutionMachine:
    """Runs executions. Every method except :meth:`flush`, :meth:`shutdown` and the setters expects
    :attr:`lock` to be held; side effects queued meanwhile are delivered by :meth:`flush`."""

    def __init__(self, side_effects: SideEffects, account_id: str) -> None:
        self.side_effects = side_effects
        self.account_id = account_id
        self.lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._outbox: deque[tuple[Any, ...]] = deque()
        self._scheduler = Scheduler(self.lock, self.flush)
        # ids and callback tokens need uniqueness, not secrecy: a seeded PRNG (SystemRandom is a syscall
        # per character, which dominated the cost of StartPipelineExecution)
        self._random = random.Random()
        self._time_scale = 1.0
        self._default_duration = 1.0
        self.clear()

    def clear(self) -> None:
        """Forget behaviours, callback tickets, counters and pending timers and side effects."""
        self._scheduler.clear()
        self._outbox.clear()
        self.tickets: dict[str, CallbackTicket] = {}
        self._behaviours: dict[tuple[str, str], Behaviour] = {}
        self._peak: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._active: dict[str, int] = {}
        self._sequence = 0

    def shutdown(self) -> None:
        """Stop the scheduler thread (idempotent). A later call that needs it starts it again."""
        self._scheduler.shutdown()
        self.flush()

    def next_seq(self) -> int:
        self._sequence += 1
        return self._sequence

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "peak_concurrency": dict(self._peak),
                "executions": dict(self._total),
                "active": dict(self._active),
            }

    # -- controls --------------------------------------------------------------------------------------

    def set_time_scale(self, scale: float) -> None:
        """Multiply every step duration by ``scale`` (>= 0) from now on; steps already timed keep theirs."""
        if scale < 0:
            raise ValueError(f"time scale must be >= 0, got {scale}")
        with self.lock:
            self._time_scale = float(scale)

    def set_default_step_duration(self, seconds: float) -> None:
        """Duration (before scaling) of steps without a behaviour duration; default 1.0."""
        if seconds < 0:
            raise ValueError(f"step duration must be >= 0, got {seconds}")
        with self.lock:
            self._default_duration = float(seconds)

    def set_step_behaviour(self, pipeline_key: str, step: str, behaviour: Behaviour) -> None:
        """How ``step`` of the pipeline keyed ``pipeline_key`` behaves from now on (replaces any earlier)."""
        with self.lock:
            self._behaviours[(pipeline_key, step)] = behaviour

    # -- lifecycle of an execution --------------------------------------------------------------

    def start(self, execution: Execution) -> None:
        """Count a new execution as started and run what may run."""
        pipeline = execution.pipeline
        self._total[pipeline.name] = self._total.get(pipeline.name, 0) + 1
        self.activate(execution)
        self.emit_execution(execution, None)
        self.advance(execution)

    def retry(self, execution: Execution, parallelism: int | None) -> None:
        """Run a Failed execution's failed and stopped steps (and what had not run) again."""
        if parallelism is not None:
            execution.parallelism = parallelism
            execution.parallelism_given = True
        for run in execution.steps.values():
            if run.phase == "done" and run.status in ("Failed", "Stopped"):
                run.phase = "waiting"
        execution.first_failure = None
        execution.failure_reason = None
        execution.end_time = None
        self.activate(execution)
        self.set_execution_status(execution, "Executing")
        self.advance(execution)

    def stop(self, execution: Execution) -> None:
        """Stop an Executing execution: running steps go Stopping (Lambda steps run on; a waiting
        callback gets a second message and ends by its answer)."""
        execution.stop_requested = True
        self.set_execution_status(execution, "Stopping")
        for run in execution.steps.values():
            if run.phase != "active":
                continue
            if run.spec.type == "Lambda":
                continue
            if run.spec.type == "Callback" and run.error is None:
                self.set_step_status(execution, run, "Stopping")
                self.send_callback_message(execution, run, stopping=True)
                continue
            run.run_id += 1
            self.set_step_status(execution, run, "Stopping")
            self._scheduler.call_later(0, partial(self._on_stopped, execution, run, run.run_id))
        if execution.running == 0:
            self.advance(execution)

    def forget(self, pipeline: Pipeline) -> None:
        """A deleted pipeline's executions stop silently (no events) and stop counting as active."""
        for execution in pipeline.executions:
            execution.alive = False
        if pipeline.active:
            self._active[pipeline.name] = self._active.get(pipeline.name, 0) - pipeline.active

    def activate(self, execution: Execution) -> None:
        pipeline = execution.pipeline
        pipeline.active += 1
        active = self._active.get(pipeline.name, 0) + 1
        self._active[pipeline.name] = active
        self._peak[pipeline.name] = max(self._peak.get(pipeline.name, 0), active)

    # -- lookups --------------------------------------------------------------------------------

    def behaviour(self, execution: Execution, step: str) -> Behaviour | None:
        return self._behaviours.get((execution.pipeline.key, step))

    def new_id(self, length: int, alphabet: str) -> str:
        return "".join(self._random.choices(alphabet, k=length))

    # -- scheduling -----------------------------------------------------------------------------

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

    def advance(self, execution: Execution) -> None:
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
        behaviour = self.behaviour(execution, run.name)
        seconds = (
            behaviour.duration if behaviour and behaviour.duration is not None else self._default_duration
        )
        return seconds * self._time_scale

    def set_step_status(self, execution: Execution, run: StepRun, status: str) -> None:
        previous = run.status
        run.status = status
        self.emit_step(execution, run, previous)

    def _start_step(self, execution: Execution, run: StepRun) -> None:
        previous = run.status
        run.start_seq = self.next_seq()
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
        self.emit_step(execution, run, previous)
        self._scheduler.call_later(0, partial(self._on_executing, execution, run, run.run_id))

    # -- resolving values -----------------------------------------------------------------------

    def scope(self, execution: Execution) -> Scope:
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
            found = reference_run(execution, name)
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

    def _read_json(self, uri: str) -> Any:
        data = self.side_effects.read_s3_object(uri)
        if data is None:
            raise ExpressionError(f"no JSON document at {uri}")
        try:
            return json.loads(data)
        except ValueError as err:
            raise ExpressionError(f"the document at {uri} is not valid JSON: {err}") from None

    def _property_file(self, execution: Execution, step: str, file_name: str) -> Any:
        found = reference_run(execution, step)
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
        behaviour = self.behaviour(owner, step)
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
        scope = self.scope(execution)
        behaviour = self.behaviour(execution, spec.name)
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
        suffix = self.new_id(10, ID_ALPHABET)
        name = job_name(execution.id, spec.name, suffix)
        region = execution.region
        if spec.type == "Callback":
            token = self.new_id(10, TOKEN_ALPHABET)
            while token in self.tickets:
                token = self.new_id(10, TOKEN_ALPHABET)
            run.callback_token = token
            run.properties = {"OutputParameters": {}}
            run.metadata = {"Callback": {"CallbackToken": token, "SqsQueueUrl": spec.sqs_queue_url}}
            self.tickets[token] = CallbackTicket(execution, run)
            self.send_callback_message(execution, run, stopping=False)
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

    # -- running and ending steps ---------------------------------------------------------------

    def send_callback_message(self, execution: Execution, run: StepRun, *, stopping: bool) -> None:
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
        ticket = self.tickets.get(run.callback_token or "")
        if ticket is not None and ticket.answer is None:
            ticket.answer = ("undeliverable", None)
        self.end_step(execution, run, "Failed", f"Could not send the callback message to {url}: {error}")

    def _on_executing(self, execution: Execution, run: StepRun, run_id: int) -> None:
        if not execution.alive or run.run_id != run_id or run.status != "Starting":
            return
        if run.error is not None:
            self.end_step(execution, run, "Failed", run.error)
            return
        self.set_step_status(execution, run, "Executing")
        if run.spec.type != "Callback":
            self._scheduler.call_later(
                self._duration(execution, run), partial(self._on_complete, execution, run, run_id)
            )

    def _on_complete(self, execution: Execution, run: StepRun, run_id: int) -> None:
        if not execution.alive or run.run_id != run_id or run.phase != "active":
            return
        spec = run.spec
        behaviour = self.behaviour(execution, spec.name)
        if behaviour is not None and behaviour.fails(run.attempt_count):
            self.end_step(execution, run, "Failed", behaviour.fail)
        elif spec.type == "Fail":
            self.end_step(execution, run, "Failed", run.fail_message or "")
        elif spec.type == "Condition":
            run.metadata = {"Condition": {"Outcome": "True" if run.outcome else "False"}}
            run.properties = {"Outcome": bool(run.outcome)}
            self.end_step(execution, run, "Succeeded")
        elif spec.type == "Lambda":
            configured = (behaviour.properties or {}) if behaviour else {}
            try:
                typed, listed = typed_outputs(run, configured.get("OutputParameters") or {})
            except ValueError as err:
                self.end_step(execution, run, "Failed", str(err))
                return
            run.properties = merge_properties(
                {**(run.arguments or {}), "OutputParameters": typed},
                {k: v for k, v in configured.items() if k != "OutputParameters"},
            )
            run.metadata["Lambda"]["OutputParameters"] = listed
            self.end_step(execution, run, "Succeeded")
        else:
            self.end_step(execution, run, "Succeeded")

    def end_step(self, execution: Execution, run: StepRun, status: str, reason: str | None = None) -> None:
        run.phase = "done"
        run.run_id += 1
        run.end_time = utcnow()
        run.failure_reason = reason if status == "Failed" else None
        execution.running -= 1
        if status == "Failed" and execution.first_failure is None:
            execution.first_failure = run
        self.set_step_status(execution, run, status)
        self.advance(execution)

    def _on_stopped(self, execution: Execution, run: StepRun, run_id: int) -> None:
        if execution.alive and run.run_id == run_id and run.phase == "active":
            self.end_step(execution, run, "Stopped")

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
        self.emit_execution(execution, previous)

    def set_execution_status(self, execution: Execution, status: str) -> None:
        previous = execution.status
        execution.status = status
        execution.last_modified_time = utcnow()
        self.emit_execution(execution, previous)

    # -- events and side effects ----------------------------------------------------------------

    def emit_execution(self, execution: Execution, previous: str | None) -> None:
        self._outbox.append(
            ("event", EXECUTION_EVENT, *execution_event(execution, previous), execution.region)
        )

    def emit_step(self, execution: Execution, run: StepRun, previous: str | None) -> None:
        self._outbox.append(("event", STEP_EVENT, *step_event(execution, run, previous), execution.region))

    def flush(self) -> None:
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
                        with self.lock:
                            item[3](err)
