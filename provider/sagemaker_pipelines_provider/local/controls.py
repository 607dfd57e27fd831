"""Controls of the local AWS endpoint: a small client for its ``/_local/...`` HTTP API.

The local endpoint (``sagemaker-pipelines-local serve``, the ``local_aws`` pytest fixture or
:class:`~sagemaker_pipelines_provider.local.server.LocalEndpoint`) serves AWS on one port and, beside
it, a JSON control API under ``/_local/``. :class:`LocalControls` wraps it with the standard library
only (``urllib``), so it works from tests, scripts and DAG test harnesses alike::

    from sagemaker_pipelines_provider.local.controls import LocalControls

    controls = LocalControls("http://127.0.0.1:5055")
    controls.set_time_scale(0.01)  # every simulated duration runs 100x faster

Controls (method — HTTP route — effect):

``reset()`` — ``POST /_local/reset``
    Forget everything: the engine's pipelines, executions, step behaviours and concurrency caps, every
    moto resource (queues, buckets, jobs, rules, model packages...), the call record, the fault rules
    and the job outcomes; the time scale and default step duration return to the endpoint's start-up
    settings (``--time-scale`` ..., else 1). The ``local_aws`` fixture resets before each test.
``set_time_scale(scale)`` — ``POST /_local/time-scale {"scale"}``
    Multiply every simulated duration by ``scale`` (>= 0): ``0.01`` makes a 60 s training step take
    0.6 s; ``1`` (the default) is real time; ``0`` runs steps back to back.
``set_default_step_duration(seconds)`` — ``POST /_local/default-step-duration {"seconds"}``
    Simulated duration of steps that have no behaviour of their own (before time scaling; default 1 s).
``set_step_behaviour(pipeline, step, duration=, fail=, fail_attempts=, property_files=, properties=)`` —
``POST /_local/step-behaviour``
    How one step of one pipeline (name or ARN) behaves in the steps that start after the call:
    ``duration`` (seconds, before scaling); ``fail`` (a FailureReason: the step fails with it at the end
    of its duration); ``fail_attempts`` (with ``fail``: fail only the first N attempts, then succeed —
    for RetryPipelineExecution tests); ``property_files`` (``{PropertyFileName: JSON document}`` a
    Processing step "writes", read by ``Std:JsonGet``, instead of reading the file from S3);
    ``properties`` (deep-merged over the properties the step reports, e.g.
    ``{"ModelArtifacts": {"S3ModelArtifacts": "s3://..."}}``; for a Lambda step
    ``{"OutputParameters": {name: value}}``). Each call replaces the step's earlier behaviour.
``set_faults(action="*", throttle_rate=0.0, error_rate=0.0, seed=None, delay=0.0)`` — ``POST /_local/faults``
    Answer that fraction of the calls to ``action`` (an API action name such as
    ``DescribePipelineExecution`` or ``SendMessage``, or ``"*"`` for every AWS call; a rule for the
    exact action wins over ``"*"``) with a throttle (``ThrottlingException``, 400, for JSON services;
    ``Throttling`` for query services; ``SlowDown``, 503, for S3) or a server error (500
    ``InternalFailure`` or 503 ``ServiceUnavailable``, shaped per protocol). ``seed`` makes the draw
    reproducible. ``delay`` (seconds, at most 60): every call the rule does not fault is served at once
    and its answer held that long — a slow answer, not a slow request: a client that dies or gives up
    meanwhile leaves the call's effect behind (e.g. an execution started whose ARN the caller never
    saw); such calls are recorded with ``fault: "delay"``. Both rates and the delay 0 removes the rule.
    The control API itself is never faulted.
``clear_faults(action=None)`` — ``DELETE /_local/faults[?action=]``
    Remove one rule, or all of them.
``faults()`` — ``GET /_local/faults``
    The active rules.
``set_concurrency_cap(pipeline, cap)`` — ``POST /_local/concurrency-cap {"pipeline", "cap"}``
    At most ``cap`` executions of the pipeline (name or ARN) may be Executing or Stopping at once;
    StartPipelineExecution and RetryPipelineExecution beyond it answer ``ResourceLimitExceeded``.
    ``None`` removes the cap.
``set_job_outcome(service, name, fail=DEFAULT_JOB_FAILURE, exit_code=1, fail_runs=None)`` —
``POST /_local/job-outcomes {"service", "name", "fail", "exit_code", "fail_runs"}``
    Make the Glue job runs (``service="glue"``, ``name`` = the job name) or ECS tasks (``"ecs"``,
    ``name`` = the task definition family) that start from now on through the endpoint fail, which
    moto never does. Glue: the run ends ``JobRunState: FAILED`` with ``ErrorMessage`` = ``fail`` where it
    would have succeeded. ECS: the task's containers stop with ``exitCode`` = ``exit_code`` (non-zero)
    and the task reports ``stoppedReason`` = ``fail``, ``stopCode: EssentialContainerExited``.
    ``fail_runs=N``: only the first N runs/tasks started fail, later ones succeed (Airflow retries).
    Each run is decided once, when it starts, so repeated reads agree; a new call replaces the rule
    and restarts its count; ``fail=None`` removes the rule (runs already started keep their outcome).
    Independently of any rule, ECS containers follow their task (moto leaves them ``PENDING``): they
    report ``STOPPED`` with exit code 0 when the task stops, ``stopCode``/``stoppedReason`` are set, and
    a task stopped with StopTask exits 143 (``UserInitiated``). Timing is moto's: a Glue run is terminal
    at its first GetJobRun; an ECS task stops at its 4th DescribeTasks (one state per call). Details:
    :mod:`.job_outcomes`.
``clear_job_outcomes()`` — ``DELETE /_local/job-outcomes``
    Remove every job-outcome rule (a reset does too, and also forgets the decisions).
``job_outcomes()`` — ``GET /_local/job-outcomes``
    The active rules, with ``failed`` (runs failed so far) and ``remaining`` (None: unlimited).
``calls(action=None, service=None, since=None, limit=None)`` — ``GET /_local/calls``
    The record of the AWS calls the endpoint received (oldest first; the last 200,000), each a dict:
    ``seq`` (strictly increasing, never reused; pass the last one seen as ``since`` to get only newer
    calls), ``time`` (epoch seconds), ``service`` (from the SigV4 credential scope), ``region``,
    ``action`` (the ``X-Amz-Target`` action, the query ``Action``, or ``"<METHOD> <path>"`` for S3),
    ``method``, ``path``, ``protocol`` (``json``, ``query`` or ``rest``), ``status``, ``error_code``,
    ``fault`` (``throttle``, ``error500``, ``error503``, ``delay`` or None), ``routed_to`` (``engine``,
    ``moto`` or ``fault``), ``duration_ms`` and ``args`` (key arguments only: PipelineName,
    PipelineExecutionArn, ClientRequestToken, CallbackToken, QueueUrl, JobName, Bucket/Key ..., the names
    of PipelineParameters, the length of a MessageBody; never credentials, never bodies). ``action`` and
    ``service`` filter; ``limit`` caps the number returned.
``stats()`` — ``GET /_local/stats``
    ``{"engine": {...}, "server": {...}}``: the engine's counters keyed by pipeline name
    (``peak_concurrency``: most Executing/Stopping executions at once; ``executions``: started;
    ``active``: running now) and the server's (``requests_total``, ``requests`` by ``service:action``,
    ``in_flight``, ``peak_in_flight``, ``faults_injected``, ``uptime_seconds``).
``peak_concurrency(pipeline)``
    The highest number of executions of ``pipeline`` (name or ARN) that ran at the same time since the
    last reset (from ``stats()``).
``health()`` — ``GET /_local/health``
    ``{"status": "ok", "engine_actions": [...]}``; :meth:`LocalControls.wait_until_healthy` polls it.

Errors answer ``{"error": "..."}`` with status 400 (bad input), 404 (unknown control) or 405; the
client raises :class:`LocalControlError` carrying both.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

from .job_outcomes import DEFAULT_JOB_FAILURE

__all__ = ["LocalControlError", "LocalControls"]


class LocalControlError(RuntimeError):
    """A control call failed: ``status`` is the HTTP status (0 when the endpoint was unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"local endpoint control failed ({status}): {message}")
        self.status = status
        self.message = message


class LocalControls:
    """Client for the local endpoint's control API at ``endpoint_url`` (thread-safe: no shared state)."""

    def __init__(self, endpoint_url: str, *, timeout: float = 30.0) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"LocalControls({self.endpoint_url!r})"

    # -- transport ---------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        name: str,
        payload: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = f"{self.endpoint_url}/_local/{name}"
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode())
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", "replace")
            raise LocalControlError(exc.code, message) from exc
        except urllib.error.URLError as exc:
            raise LocalControlError(0, f"{url} unreachable: {exc.reason}") from exc
        return json.loads(body) if body else None

    # -- controls ----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "engine_actions": [...]}``."""
        return self._request("GET", "health")  # type: ignore[no-any-return]

    def wait_until_healthy(self, timeout: float = 30.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll :meth:`health` until it answers or ``timeout`` seconds pass (then raise the last error)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except LocalControlError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(interval)

    def reset(self) -> None:
        """Forget all engine and moto state, the call record and fault rules."""
        self._request("POST", "reset", {})

    def set_time_scale(self, scale: float) -> None:
        """Multiply every simulated duration by ``scale`` (>= 0)."""
        self._request("POST", "time-scale", {"scale": scale})

    def set_default_step_duration(self, seconds: float) -> None:
        """Simulated duration (before scaling) of steps without a behaviour of their own."""
        self._request("POST", "default-step-duration", {"seconds": seconds})

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
        """Set how ``step`` of ``pipeline`` behaves from now on (replacing its earlier behaviour)."""
        payload: dict[str, Any] = {"pipeline": pipeline, "step": step}
        options = {
            "duration": duration,
            "fail": fail,
            "fail_attempts": fail_attempts,
            "property_files": property_files,
            "properties": properties,
        }
        payload.update({k: v for k, v in options.items() if v is not None})
        self._request("POST", "step-behaviour", payload)

    def set_faults(
        self,
        action: str = "*",
        throttle_rate: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
        delay: float = 0.0,
    ) -> None:
        """Fault a fraction of the calls to ``action`` (or every AWS call with ``"*"``); ``delay``: hold
        the answer of every other call to it that many seconds (the call takes effect at once)."""
        payload = {
            "action": action,
            "throttle_rate": throttle_rate,
            "error_rate": error_rate,
            "seed": seed,
            "delay": delay,
        }
        self._request("POST", "faults", payload)

    def clear_faults(self, action: str | None = None) -> None:
        """Remove the rule for ``action``, or every rule."""
        self._request("DELETE", "faults", query={"action": action})

    def faults(self) -> list[dict[str, Any]]:
        """The active fault rules."""
        return self._request("GET", "faults")["faults"]  # type: ignore[no-any-return]

    def set_concurrency_cap(self, pipeline: str, cap: int | None) -> None:
        """Cap the running executions of ``pipeline`` (``None`` removes the cap)."""
        self._request("POST", "concurrency-cap", {"pipeline": pipeline, "cap": cap})

    def set_job_outcome(
        self,
        service: Literal["glue", "ecs"],
        name: str,
        *,
        fail: str | None = DEFAULT_JOB_FAILURE,
        exit_code: int = 1,
        fail_runs: int | None = None,
    ) -> None:
        """Fail the Glue job runs of job ``name`` / the ECS tasks of family ``name`` started from now on
        (the first ``fail_runs`` only, when given): Glue ``FAILED`` with ``ErrorMessage`` = ``fail``; ECS
        containers exit ``exit_code`` with ``stoppedReason`` = ``fail``. ``fail=None`` removes the rule."""
        payload = {
            "service": service,
            "name": name,
            "fail": fail,
            "exit_code": exit_code,
            "fail_runs": fail_runs,
        }
        self._request("POST", "job-outcomes", payload)

    def clear_job_outcomes(self) -> None:
        """Remove every job-outcome rule (runs already started keep their outcome)."""
        self._request("DELETE", "job-outcomes")

    def job_outcomes(self) -> list[dict[str, Any]]:
        """The active job-outcome rules."""
        return self._request("GET", "job-outcomes")["job_outcomes"]  # type: ignore[no-any-return]

    def calls(
        self,
        action: str | None = None,
        service: str | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded AWS calls, oldest first, optionally filtered; ``since`` is a ``seq`` cursor."""
        query = {"action": action, "service": service, "since": since, "limit": limit}
        return self._request("GET", "calls", query=query)["calls"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        """``{"engine": {...}, "server": {...}}``."""
        return self._request("GET", "stats")  # type: ignore[no-any-return]

    def peak_concurrency(self, pipeline: str) -> int:
        """Highest number of simultaneously running executions of ``pipeline`` (name or ARN) since the
        last reset; 0 for a pipeline that never ran."""
        engine = self.stats().get("engine", {})
        return _peak_from_engine_stats(engine, pipeline)


def _peak_from_engine_stats(engine: dict[str, Any], pipeline: str) -> int:
    """A pipeline's peak from the engine's ``peak_concurrency`` (keyed by pipeline name; an ARN or a
    different letter case names the same pipeline)."""
    name = pipeline.rsplit(":pipeline/", 1)[-1].lower()
    peaks = engine.get("peak_concurrency") or {}
    return max((int(v) for k, v in peaks.items() if k.lower() == name), default=0)
