"""Client of the local endpoint's ``/_local/`` control API, with the standard library only::

    from sagemaker_pipelines_provider.local.controls import LocalControls

    LocalControls(endpoint.url).set_time_scale(0.01)

Its server side is :mod:`.server.control_api`. Every call, its HTTP route and its effect:
docs/local-endpoint.md ("Control API").
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

from sagemaker_pipelines_provider.utils.arn import as_pipeline_name

from .server.job_outcomes import DEFAULT_JOB_FAILURE

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

    def set_event_faults(
        self,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Drop, duplicate (same event ``id`` twice) or reorder (delivered after the next event) that
        fraction of the EventBridge events the engine emits from now on; ``seed`` makes the choices
        reproducible for the same order of events. All zero: every event once, in order."""
        payload = {
            "drop_rate": drop_rate,
            "duplicate_rate": duplicate_rate,
            "reorder_rate": reorder_rate,
            "seed": seed,
        }
        return self._request("POST", "event-faults", payload)  # type: ignore[no-any-return]

    def clear_event_faults(self) -> None:
        """Deliver every event once, in order (the default)."""
        self._request("DELETE", "event-faults")

    def event_faults(self) -> dict[str, Any]:
        """The event fault settings and counts so far (``delivered``, ``dropped``, ``duplicated``,
        ``reordered``)."""
        return self._request("GET", "event-faults")  # type: ignore[no-any-return]

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
    name = as_pipeline_name(pipeline).lower()
    peaks = engine.get("peak_concurrency") or {}
    return max((int(v) for k, v in peaks.items() if k.lower() == name), default=0)
