"""The endpoint's WSGI app: routes each request to the engine (through :mod:`..protocol`), the control
API (:mod:`.control_api`) or moto; records calls and injects faults. See docs/local-endpoint.md.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..protocol import Engine, SageMakerJsonProtocol
from .calls import CallRecorder
from .control_api import CONTROL_PREFIX, ControlApi
from .environ import DEFAULT_REGION
from .event_faults import EventFaults
from .faults import FaultInjector, fault_response
from .identity import RequestInfo, identify
from .job_outcomes import JobOutcomes, release_ecs_task_capacity
from .sqs_receipts import OutdatedReceipts
from .wire import StartResponse, WSGIApp, protocol_error, status_line

__all__ = ["LocalEndpointApp", "ServedEngine"]

log = logging.getLogger(__name__)


class ServedEngine(Engine, Protocol):
    """What the app and its control API need of the engine (:class:`~..engine.PipelineEngine`)."""

    def set_time_scale(self, scale: float) -> None: ...

    def set_default_step_duration(self, seconds: float) -> None: ...

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
    ) -> None: ...

    def set_concurrency_cap(self, pipeline: str, cap: int | None) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def shutdown(self) -> None: ...


class LocalEndpointApp:
    """The WSGI app: engine actions, control API, moto for the rest; records calls, injects faults.

    :param engine: a ``PipelineEngine`` (any :class:`ServedEngine`).
    :param moto_app: moto's WSGI app; created lazily when omitted.
    :param on_reset: called after a reset (the endpoint re-applies its start-up settings there).
    :param event_faults: the event faults of the engine's side effects (drop, duplicate, reorder).
    """

    def __init__(
        self,
        engine: ServedEngine,
        *,
        moto_app: WSGIApp | None = None,
        strict: bool = True,
        on_reset: Callable[[], None] | None = None,
        event_faults: EventFaults | None = None,
    ) -> None:
        self.engine = engine
        self.protocol = SageMakerJsonProtocol(engine, strict=strict)
        self.recorder = CallRecorder()
        self.faults = FaultInjector()
        self.event_faults = event_faults or EventFaults()
        self.job_outcomes = JobOutcomes()
        self.receipts = OutdatedReceipts()
        self._moto_app = moto_app
        self._moto_lock = threading.Lock()
        self._on_reset = on_reset
        self._stats_lock = threading.Lock()
        self._started = time.time()
        self._requests: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self._peak_in_flight = 0
        self._reset_lock = threading.Lock()
        self.control_api = ControlApi(self)

    # -- moto -------------------------------------------------------------------------------------------

    @property
    def moto_app(self) -> WSGIApp:
        with self._moto_lock:
            if self._moto_app is None:
                from ..aws_session import isolate_moto
                from .moto_speedups import install as install_moto_speedups

                isolate_moto()  # moto's own boto3 sessions must not read the user's AWS profile
                install_moto_speedups()
                from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

                self._moto_app = DomainDispatcherApplication(create_backend_app)
            return self._moto_app

    def reset(self) -> None:
        """Reset the engine, moto's backends (as ``POST /moto-api/reset`` does), calls, faults, event
        faults and job outcomes. moto's state-manager transitions (``/moto-api/state-manager/...``) are
        process-wide and are not reset, as moto's own reset does not reset them."""
        from moto.moto_api._internal.models import moto_api_backend

        with self._reset_lock:
            self.engine.reset()
            moto_api_backend.reset()
            self.recorder.clear()
            self.faults.clear()
            self.event_faults.clear()
            self.job_outcomes.reset()
            with self._stats_lock:
                self._requests.clear()
                self._peak_in_flight = self._in_flight
            if self._on_reset is not None:
                self._on_reset()

    # -- WSGI -------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path.startswith(CONTROL_PREFIX) or path.rstrip("/") == CONTROL_PREFIX.rstrip("/"):
            return self.control_api(environ, start_response)
        if path.startswith("/moto-api") or path == "/favicon.ico":
            return self.moto_app(environ, start_response)
        return self._serve_aws(environ, start_response)

    def _serve_aws(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.time()
        try:
            info = identify(environ)
        except Exception:  # a request we cannot parse still gets served (by moto) and recorded
            log.debug("could not identify request %s", environ.get("PATH_INFO"), exc_info=True)
            info = RequestInfo(
                "unknown",
                DEFAULT_REGION,
                f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}",
                "rest",
            )
        with self._stats_lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._requests[f"{info.service}:{info.action}"] += 1
        record: dict[str, Any] = {
            "time": started,
            "service": info.service,
            "region": info.region,
            "action": info.action,
            "method": environ.get("REQUEST_METHOD", "GET"),
            "path": environ.get("PATH_INFO", "/"),
            "args": info.args,
            "routed_to": "moto",
            "fault": None,
            "protocol": info.protocol,
        }
        try:
            fault = self.faults.decide(info.action)
            if fault is not None:
                status, headers, body, code = fault_response(info, fault)
                record.update(fault=fault, status=status, error_code=code, routed_to="fault")
                headers["Content-Length"] = str(len(body))
                start_response(status_line(status), list(headers.items()))
                return [body]
            if info.service == "sqs" and info.protocol == "json":
                outdated = self.receipts.answer(info.action, info.region, info.body)
                if outdated is not None:  # an outdated receipt handle: answered as SQS does, not as moto
                    status, headers, body, error_code = outdated
                    record.update(status=status, error_code=error_code, routed_to="sqs_receipts")
                    headers["Content-Length"] = str(len(body))
                    start_response(status_line(status), list(headers.items()))
                    return [body]
            if info.target_prefix == "SageMaker" and self.protocol.handles(info.action):
                record["routed_to"] = "engine"
                response = self.protocol.handle(info.action, info.body or b"", info.region)
                record.update(status=response.status, error_code=response.error_code)
                start_response(status_line(response.status), list(response.headers.items()))
                answer: Iterable[bytes] = [response.body]
            else:
                answer = self._call_moto(environ, start_response, record, info)
            delay = self.faults.delay(info.action)
            if delay:  # served already: a client that gives up meanwhile leaves the call's effect behind
                record["fault"] = "delay"
                time.sleep(delay)
            return answer
        except Exception:
            record.update(status=500, error_code="InternalFailure")
            raise
        finally:
            record.setdefault("status", None)
            record.setdefault("error_code", None)
            record["duration_ms"] = round((time.time() - started) * 1000, 3)
            self.recorder.add(record)
            with self._stats_lock:
                self._in_flight -= 1

    def _call_moto(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        record: dict[str, Any],
        info: RequestInfo,
    ) -> Iterable[bytes]:
        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = int(status.split(" ", 1)[0])
            record["status"] = code
            if code >= 400:
                lowered = {k.lower(): v for k, v in headers}
                error_type = lowered.get("x-amzn-errortype")
                record["error_code"] = error_type.split(":", 1)[0] if error_type else None
            return start_response(status, headers, exc_info)

        try:
            if self.job_outcomes.handles(info.service, info.action):
                return self._call_moto_rewriting(environ, capture, info)
            return self.moto_app(environ, capture)
        except Exception as exc:
            # werkzeug would answer an HTML 500 (which botocore retries); answer AWS-shaped instead.
            from botocore.model import OperationNotFoundError

            if isinstance(exc, NotImplementedError):
                status, code = 501, "NotImplemented"
                message = (
                    f"the local AWS endpoint (moto) does not implement {info.service}:{info.action}: {exc}"
                )
            elif isinstance(exc, OperationNotFoundError):
                status, code = 400, "UnknownOperationException"
                message = f"{info.service} has no operation {info.action!r}"
            else:
                log.warning("moto failed on %s:%s", info.service, info.action, exc_info=True)
                status, code = 500, "InternalFailure"
                message = f"moto failed on {info.service}:{info.action}: {type(exc).__name__}: {exc}"
            status, headers, body, code = protocol_error(info, status, code, message)
            record.update(status=status, error_code=code)
            headers["Content-Length"] = str(len(body))
            start_response(status_line(status), list(headers.items()))
            return [body]

    def _call_moto_rewriting(
        self, environ: dict[str, Any], start_response: StartResponse, info: RequestInfo
    ) -> Iterable[bytes]:
        """Serve with moto, buffer the answer and let :attr:`job_outcomes` rewrite a successful one."""
        chunks: list[bytes] = []
        answered: list[tuple[str, list[tuple[str, str]]]] = []

        def buffer(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            answered[:] = [(status, list(headers))]
            return chunks.append

        iterable = self.moto_app(environ, buffer)
        try:
            chunks.extend(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        status, headers = answered[0]
        body = b"".join(chunks)
        if status.startswith("200"):
            try:
                response, request = json.loads(body or b"null"), json.loads(info.body or b"{}")
            except (ValueError, UnicodeDecodeError):
                response, request = None, None
            if isinstance(response, dict) and isinstance(request, dict):
                for task_arn in self.job_outcomes.rewrite(info.service, info.action, request, response):
                    release_ecs_task_capacity(task_arn)
                body = json.dumps(response).encode()
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    # -- control API -------------------------------------------------------------------------------------

    def _calls(self, query: dict[str, str]) -> dict[str, Any]:
        since = int(query["since"]) if query.get("since") else None
        limit = int(query["limit"]) if query.get("limit") else None
        calls = self.recorder.query(
            since=since, action=query.get("action") or None, service=query.get("service") or None, limit=limit
        )
        cursor = calls[-1]["seq"] if calls else since
        return {"calls": calls, "cursor": cursor}

    def stats(self) -> dict[str, Any]:
        """``{"engine": engine.stats(), "server": {...}}``."""
        with self._stats_lock:
            server = {
                "uptime_seconds": round(time.time() - self._started, 3),
                "requests_total": sum(self._requests.values()),
                "requests": dict(self._requests),
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "faults_injected": dict(self.faults.injected),
            }
        return {"engine": self.engine.stats(), "server": server}
