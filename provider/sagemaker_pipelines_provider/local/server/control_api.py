"""The server side of the ``/_local/`` control API; its client is :mod:`..controls`."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .identity import read_body
from .job_outcomes import DEFAULT_JOB_FAILURE
from .wire import StartResponse, json_default, status_line

if TYPE_CHECKING:
    from .app import LocalEndpointApp

__all__ = ["CONTROL_PREFIX", "ControlApi", "ControlError"]

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_local/"


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ControlApi:
    """Answers ``/_local/<name>`` requests with JSON; acts on the app's engine, faults, event faults, job
    outcomes and call record."""

    def __init__(self, app: LocalEndpointApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        name = environ.get("PATH_INFO", "/")[len(CONTROL_PREFIX) :].strip("/")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            body = read_body(environ)
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ControlError("the request body must be a JSON object")
            result = self._route(method, name, payload, query)
            status = 200
        except ControlError as exc:
            result, status = {"error": str(exc)}, exc.status
        except (ValueError, TypeError, KeyError) as exc:
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
        except Exception as exc:  # a bug, but the control API must answer
            log.exception("control %s %s failed", method, name)
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
        data = json.dumps(result, default=json_default).encode()
        start_response(
            status_line(status), [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def _route(self, method: str, name: str, payload: dict[str, Any], query: dict[str, str]) -> Any:
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "health"): self._health,
            ("POST", "reset"): self._reset,
            ("POST", "time-scale"): lambda: self._set_time_scale(payload),
            ("POST", "default-step-duration"): lambda: self._set_default_duration(payload),
            ("POST", "step-behaviour"): lambda: self._set_step_behaviour(payload),
            ("GET", "faults"): lambda: {"faults": self.app.faults.rules()},
            ("POST", "faults"): lambda: self._set_faults(payload),
            ("DELETE", "faults"): lambda: self._clear_faults(query.get("action")),
            ("GET", "event-faults"): self.app.event_faults.settings,
            ("POST", "event-faults"): lambda: self._set_event_faults(payload),
            ("DELETE", "event-faults"): self._clear_event_faults,
            ("POST", "concurrency-cap"): lambda: self._set_cap(payload),
            ("GET", "job-outcomes"): lambda: {"job_outcomes": self.app.job_outcomes.rules()},
            ("POST", "job-outcomes"): lambda: self._set_job_outcome(payload),
            ("DELETE", "job-outcomes"): self._clear_job_outcomes,
            ("GET", "calls"): lambda: self._calls(query),
            ("GET", "stats"): self.app.stats,
        }
        handler = routes.get((method, name))
        if handler is None:
            if any(route_name == name for _, route_name in routes):
                raise ControlError(f"{method} is not allowed on {CONTROL_PREFIX}{name}", 405)
            known = ", ".join(sorted({f"{m} {CONTROL_PREFIX}{n}" for m, n in routes}))
            raise ControlError(f"unknown control {CONTROL_PREFIX}{name}; known: {known}", 404)
        return handler()

    def _reset(self) -> dict[str, Any]:
        self.app.reset()
        return {"status": "ok"}

    def _clear_faults(self, action: str | None) -> dict[str, Any]:
        self.app.faults.clear(action)
        return {"faults": self.app.faults.rules()}

    def _health(self) -> dict[str, Any]:
        return {"status": "ok", "engine_actions": sorted(self.app.engine.ACTIONS)}

    def _set_time_scale(self, payload: dict[str, Any]) -> dict[str, Any]:
        scale = float(_require(payload, "scale"))
        if scale < 0:
            raise ControlError(f"scale must be >= 0, got {scale}")
        self.app.engine.set_time_scale(scale)
        return {"scale": scale}

    def _set_default_duration(self, payload: dict[str, Any]) -> dict[str, Any]:
        seconds = float(_require(payload, "seconds"))
        if seconds < 0:
            raise ControlError(f"seconds must be >= 0, got {seconds}")
        self.app.engine.set_default_step_duration(seconds)
        return {"seconds": seconds}

    def _set_step_behaviour(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"pipeline", "step", "duration", "fail", "fail_attempts", "property_files", "properties"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown step-behaviour fields {unknown}; allowed: {sorted(allowed)}")
        pipeline, step = str(_require(payload, "pipeline")), str(_require(payload, "step"))
        options = {k: payload[k] for k in allowed - {"pipeline", "step"} if k in payload}
        self.app.engine.set_step_behaviour(pipeline, step, **options)
        return {"pipeline": pipeline, "step": step, **options}

    def _set_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"action", "throttle_rate", "error_rate", "seed", "delay"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown fault fields {unknown}; allowed: {sorted(allowed)}")
        seed = payload.get("seed")
        rule = self.app.faults.set(
            str(payload.get("action") or "*"),
            float(payload.get("throttle_rate") or 0.0),
            float(payload.get("error_rate") or 0.0),
            None if seed is None else int(seed),
            float(payload.get("delay") or 0.0),
        )
        return {"rule": rule.as_dict(), "faults": self.app.faults.rules()}

    def _set_event_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"drop_rate", "duplicate_rate", "reorder_rate", "seed"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown event-fault fields {unknown}; allowed: {sorted(allowed)}")
        seed = payload.get("seed")
        self.app.event_faults.set(
            float(payload.get("drop_rate") or 0.0),
            float(payload.get("duplicate_rate") or 0.0),
            float(payload.get("reorder_rate") or 0.0),
            None if seed is None else int(seed),
        )
        return self.app.event_faults.settings()

    def _clear_event_faults(self) -> dict[str, Any]:
        self.app.event_faults.clear()
        return self.app.event_faults.settings()

    def _set_cap(self, payload: dict[str, Any]) -> dict[str, Any]:
        pipeline = str(_require(payload, "pipeline"))
        cap = payload.get("cap")
        if cap is not None:
            cap = int(cap)
            if cap < 1:
                raise ControlError(f"cap must be >= 1 or null, got {cap}")
        self.app.engine.set_concurrency_cap(pipeline, cap)
        return {"pipeline": pipeline, "cap": cap}

    def _set_job_outcome(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"service", "name", "fail", "exit_code", "fail_runs"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown job-outcome fields {unknown}; allowed: {sorted(allowed)}")
        rule = self.app.job_outcomes.set(
            str(_require(payload, "service")),
            str(_require(payload, "name")),
            payload.get("fail", DEFAULT_JOB_FAILURE),
            payload.get("exit_code", 1),
            payload.get("fail_runs"),
        )
        return {"rule": rule, "job_outcomes": self.app.job_outcomes.rules()}

    def _clear_job_outcomes(self) -> dict[str, Any]:
        self.app.job_outcomes.clear()
        return {"job_outcomes": self.app.job_outcomes.rules()}

    def _calls(self, query: dict[str, str]) -> dict[str, Any]:
        since = int(query["since"]) if query.get("since") else None
        limit = int(query["limit"]) if query.get("limit") else None
        calls = self.app.recorder.query(
            since=since, action=query.get("action") or None, service=query.get("service") or None, limit=limit
        )
        cursor = calls[-1]["seq"] if calls else since
        return {"calls": calls, "cursor": cursor}


def _require(payload: dict[str, Any], key: str) -> Any:
    if payload.get(key) is None:
        raise ControlError(f"missing required field {key!r}")
    return payload[key]
