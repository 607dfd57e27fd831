"""One loopback AWS endpoint: SageMaker pipeline actions -> the local engine, everything else -> moto.

:class:`LocalEndpoint` runs a single threaded werkzeug server (``127.0.0.1``, a free port by default)
in a daemon thread. Its WSGI app (:class:`LocalEndpointApp`) routes each request:

* ``X-Amz-Target: SageMaker.<Action>`` with ``<Action>`` in ``engine.ACTIONS`` -> :mod:`.api`
  (validated by botocore's service model) -> :class:`~.engine.PipelineEngine`;
* ``/_local/...`` -> the control API (documented in :mod:`.controls`);
* anything else (SQS, S3, Glue, ECS, EventBridge, IAM, STS, SageMaker model packages, ``/moto-api``)
  -> moto's server app (``DomainDispatcherApplication(create_backend_app)``, exactly what moto's
  ``ThreadedMotoServer`` serves), in the same process, sharing moto's in-process backends. When moto
  fails, the answer is still AWS-shaped for the service's protocol (an action moto lacks: 501
  ``NotImplemented``, not retried by botocore; an operation the service does not have: 400
  ``UnknownOperationException``; a crash: 500 ``InternalFailure``), never werkzeug's HTML page.
  moto's successful answers to the Glue job-run and ECS task actions of :data:`.job_outcomes.ACTIONS`
  are decoded and rewritten by :class:`~.job_outcomes.JobOutcomes` (failures moto cannot produce,
  containers that stop with their task) before they are sent. SQS ``DeleteMessage`` and
  ``ChangeMessageVisibility`` with an outdated receipt handle are answered as SQS does by
  :class:`~.sqs_receipts.OutdatedReceipts` (moto would act on the message).

Every request except the control API and ``/moto-api`` is recorded (:class:`CallRecorder`: service from
the SigV4 credential scope, action from ``X-Amz-Target`` or the form ``Action``, or ``"<METHOD> <path>"``
for S3 and other REST calls; time; HTTP status and error code; a whitelist of key arguments — never
credentials, never message bodies) and may be answered by an injected fault (:class:`FaultInjector`)
instead of being served.

The engine reaches moto through :class:`MotoSideEffects` (in-process backends, no HTTP): callback
messages to SQS, model packages, EventBridge events, property files from S3.
"""

from __future__ import annotations

import collections
import datetime as dt
import inspect
import io
import itertools
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from .api import SageMakerJsonProtocol
from .job_outcomes import DEFAULT_JOB_FAILURE, JobOutcomes
from .sqs_receipts import OutdatedReceipts

if TYPE_CHECKING:
    from .controls import LocalControls

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account: what credentials "testing" map to
DEFAULT_REGION = "us-east-1"
DEFAULT_TIME_SCALE = 1.0  # the engine's own defaults, restored by a reset
DEFAULT_STEP_DURATION = 1.0
CONTROL_PREFIX = "/_local/"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# --------------------------------------------------------------------------------------------------------
# Side effects: the engine's view of moto (in-process backends).


class MotoSideEffects:
    """The engine's ``SideEffects`` implemented with moto's in-process backends (no HTTP).

    Calls are serialised by one lock (moto's backends are not designed for concurrent mutation; moto's
    own server threads still run unlocked, as in ``ThreadedMotoServer``). Raises ``LookupError`` when
    a queue does not exist, so the engine can fail the callback step with that message.
    """

    EVENT_SOURCE = "aws.sagemaker"

    def __init__(self, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self.account_id = account_id
        self._lock = threading.RLock()

    @staticmethod
    def _backend(service: str) -> Any:
        from moto.backends import get_backend

        from .aws_session import isolate_moto

        isolate_moto()
        return get_backend(service)  # type: ignore[call-overload]

    def _parse_queue_url(self, queue_url: str) -> tuple[str, str, str | None]:
        """(account, queue name, region or None) from an SQS queue URL of any host (AWS or loopback)."""
        parts = urlsplit(queue_url)
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) < 2:
            raise LookupError(f"not an SQS queue URL: {queue_url!r} (expected .../<account>/<queue name>)")
        account, name = segments[-2], segments[-1]
        host = parts.hostname or ""
        match = re.match(r"^(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d)\.", host)
        return account, name, match.group(1) if match else None

    def send_sqs_message(self, queue_url: str, body: str) -> None:
        """Send ``body`` to the queue; the region comes from the URL or, for a loopback URL, from the
        region that holds a queue of that name."""
        account, name, region = self._parse_queue_url(queue_url)
        with self._lock:
            per_account = self._backend("sqs")[account]
            regions = [region] if region else [r for r, b in list(per_account.items()) if name in b.queues]
            for candidate in regions:
                backend = per_account[candidate]
                if name in backend.queues:
                    backend.send_message(name, body)
                    return
        raise LookupError(f"SQS queue {queue_url!r} does not exist (account {account}, queue {name!r})")

    def create_model_package(self, request: dict[str, Any], region: str) -> str:
        """Create a model package from a CreateModelPackage-shaped request; returns its ARN.

        The model package group is created first when it does not exist (a RegisterModel step on AWS
        requires it to exist; the local endpoint creates it so demo pipelines need no set-up)."""
        from moto.core.utils import camelcase_to_underscores

        with self._lock:
            backend = self._backend("sagemaker")[self.account_id][region]
            request = dict(request)
            group = request.get("ModelPackageGroupName")
            if isinstance(group, str) and group.startswith("arn:"):
                group = group.rsplit("/", 1)[-1]
                request["ModelPackageGroupName"] = group
            if group and group not in backend.model_package_groups:
                backend.create_model_package_group(
                    model_package_group_name=group, model_package_group_description=None, tags=None
                )
            params = inspect.signature(backend.create_model_package).parameters
            by_snake = {camelcase_to_underscores(k): v for k, v in request.items()}
            kwargs = {name: by_snake.get(name) for name in params}
            kwargs["certify_for_marketplace"] = bool(by_snake.get("certify_for_marketplace", False))
            kwargs["client_token"] = request.get("ClientToken")
            ignored = sorted(set(by_snake) - set(params))
            if ignored:
                log.debug("CreateModelPackage members moto does not model, ignored: %s", ignored)
            return str(backend.create_model_package(**kwargs))

    def put_event(self, detail_type: str, detail: dict[str, Any], resources: list[str], region: str) -> None:
        """Put one ``aws.sagemaker`` event on the default bus, so matching rules deliver to targets.

        moto stamps the event's ``time`` itself, as epoch seconds (AWS delivers an ISO-8601 string):
        consumers should read times from ``detail`` (``executionStartTime`` ...) rather than ``time``."""
        entry = {
            "Source": self.EVENT_SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=_json_default),
            "Resources": list(resources),
        }
        with self._lock:
            results = self._backend("events")[self.account_id][region].put_events([entry])
        failed = [r for r in results if r.get("ErrorCode")]
        if failed:
            log.warning("EventBridge rejected a %s event: %s", detail_type, failed)

    def read_s3_object(self, s3_uri: str) -> bytes | None:
        """The object's bytes, or None when the bucket or key does not exist."""
        parts = urlsplit(s3_uri)
        if parts.scheme != "s3" or not parts.netloc:
            return None
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        with self._lock:
            backend = self._backend("s3")[self.account_id]["global"]
            try:
                obj = backend.get_object(bucket, key)
            except Exception:  # MissingBucket, MissingKey ...
                return None
        return None if obj is None else bytes(obj.value)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------------------------------------
# Request identity.


@dataclass
class RequestInfo:
    """What the app learned about one AWS request before serving it."""

    service: str
    region: str
    action: str
    protocol: str  # "json" | "query" | "rest"
    target_prefix: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    body: bytes | None = None


_CREDENTIAL_RE = re.compile(r"Credential=([^,\s]+)")

# Request members worth recording (values truncated); everything else, bodies and credentials are not.
KEY_ARGS = (
    "PipelineName",
    "PipelineExecutionArn",
    "PipelineExecutionDisplayName",
    "ClientRequestToken",
    "CallbackToken",
    "FailureReason",
    "QueueUrl",
    "QueueName",
    "MaxNumberOfMessages",
    "WaitTimeSeconds",
    "JobName",
    "JobRunId",
    "RunId",
    "cluster",
    "taskDefinition",
    "family",
    "tasks",
    "ModelPackageGroupName",
    "ModelPackageName",
    "ModelPackageArn",
    "RoleName",
    "Name",
    "EventBusName",
    "Rule",
    "MaxResults",
    "SortBy",
    "SortOrder",
)
_MAX_ARG_CHARS = 256


def _truncate(value: Any) -> Any:
    """A JSON-safe, bounded rendering of one recorded argument."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_ARG_CHARS else value[:_MAX_ARG_CHARS] + "..."
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, list):
        return [_truncate(v) for v in value[:20]]
    if isinstance(value, dict):
        return "{...}"
    return _truncate(str(value))


def _key_args(params: dict[str, Any]) -> dict[str, Any]:
    args = {k: _truncate(params[k]) for k in KEY_ARGS if k in params}
    parameters = params.get("PipelineParameters")
    if isinstance(parameters, list):
        args["PipelineParameterNames"] = [p.get("Name") for p in parameters if isinstance(p, dict)]
    for body_key in ("MessageBody", "Detail"):
        if isinstance(params.get(body_key), str):
            args[f"{body_key}Length"] = len(params[body_key])
    return args


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body (Content-Length bounded) and put it back for the next reader."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b""
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def identify(environ: dict[str, Any]) -> RequestInfo:
    """Service, region, action, protocol and key arguments of an AWS request (reads non-S3 bodies)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope = None
    match = _CREDENTIAL_RE.search(auth)
    if match:
        scope = match.group(1)
    else:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        scope = (query.get("X-Amz-Credential") or [None])[0]
    service, region = "unknown", DEFAULT_REGION
    if scope:
        parts = scope.split("/")
        if len(parts) >= 5:
            region, service = parts[-3], parts[-2]
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    target = environ.get("HTTP_X_AMZ_TARGET")
    if service == "s3":
        segments = [s for s in path.split("/") if s]
        args: dict[str, Any] = {}
        if segments:
            args["Bucket"] = segments[0]
        if len(segments) > 1:
            args["Key"] = _truncate(unquote("/".join(segments[1:])))
        return RequestInfo(service, region, f"{method} {path}", "rest", args=args)
    body = _read_body(environ)
    if target:
        prefix, _, action = target.partition(".")
        params: dict[str, Any] = {}
        if body:
            try:
                decoded = json.loads(body)
                params = decoded if isinstance(decoded, dict) else {}
            except (ValueError, UnicodeDecodeError):
                params = {}
        return RequestInfo(service, region, action, "json", prefix, _key_args(params), body)
    content_type = environ.get("CONTENT_TYPE", "")
    form: dict[str, list[str]] = {}
    if content_type.startswith("application/x-www-form-urlencoded") and body:
        form = parse_qs(body.decode("utf-8", "replace"))
    elif method == "GET":
        form = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in form:
        flat = {k: v[0] for k, v in form.items() if v}
        return RequestInfo(service, region, flat["Action"], "query", None, _key_args(flat), body)
    return RequestInfo(service, region, f"{method} {path}", "rest", body=body)


# --------------------------------------------------------------------------------------------------------
# Call record.


class CallRecorder:
    """A bounded, thread-safe record of calls; each record has a strictly increasing ``seq``.

    ``since`` cursors stay valid across :meth:`clear` (sequence numbers are never reused).
    """

    def __init__(self, maxlen: int = 200_000) -> None:
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record["seq"] = next(self._seq)
            self._records.append(record)
        return record

    def query(
        self,
        *,
        since: int | None = None,
        action: str | None = None,
        service: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            records = list(self._records)
        selected = [
            r
            for r in records
            if (since is None or r["seq"] > since)
            and (action is None or r["action"] == action)
            and (service is None or r["service"] == service)
        ]
        return selected[:limit] if limit else selected

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


# --------------------------------------------------------------------------------------------------------
# Fault injection.


#: Upper bound of a fault rule's ``delay`` (seconds): a longer one would outlast botocore's read timeout.
MAX_FAULT_DELAY = 60.0


@dataclass
class FaultRule:
    """Answer a fraction of the calls to one action (or ``"*"``) with a throttle or a 5xx error, and hold
    the answer of every call it serves for ``delay`` seconds (the call takes effect first)."""

    action: str
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)
    delay: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "throttle_rate": self.throttle_rate,
            "error_rate": self.error_rate,
            "seed": self.seed,
            "delay": self.delay,
        }


class FaultInjector:
    """Per-action fault rules; a rule for the exact action wins over ``"*"``. Thread-safe and, with a
    seed, reproducible for a given order of calls."""

    def __init__(self) -> None:
        self._rules: dict[str, FaultRule] = {}
        self._lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()

    def set(
        self, action: str, throttle_rate: float, error_rate: float, seed: int | None, delay: float = 0.0
    ) -> FaultRule:
        for name, rate in (("throttle_rate", throttle_rate), ("error_rate", error_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if throttle_rate + error_rate > 1.0:
            raise ValueError(
                f"throttle_rate + error_rate must not exceed 1, got {throttle_rate + error_rate}"
            )
        if not 0.0 <= delay <= MAX_FAULT_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_FAULT_DELAY:g} seconds, got {delay}")
        rule = FaultRule(action, throttle_rate, error_rate, seed, random.Random(seed), delay)
        with self._lock:
            if throttle_rate == 0.0 and error_rate == 0.0 and delay == 0.0:
                self._rules.pop(action, None)
            else:
                self._rules[action] = rule
        return rule

    def clear(self, action: str | None = None) -> None:
        with self._lock:
            if action is None:
                self._rules.clear()
            else:
                self._rules.pop(action, None)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.as_dict() for r in self._rules.values()]

    def decide(self, action: str) -> str | None:
        """None to serve the call, or "throttle", "error500" or "error503"."""
        with self._lock:
            rule = self._rules.get(action) or self._rules.get("*")
            if rule is None:
                return None
            draw = rule.rng.random()
            if draw < rule.throttle_rate:
                outcome = "throttle"
            elif draw < rule.throttle_rate + rule.error_rate:
                outcome = "error500" if rule.rng.random() < 0.5 else "error503"
            else:
                return None
            self.injected[outcome] += 1
            return outcome

    def delay(self, action: str) -> float:
        """Seconds to hold the answer of a served call to ``action`` (its rule's ``delay``, else 0)."""
        with self._lock:
            rule = self._rules.get(action) or self._rules.get("*")
            if rule is None or rule.delay <= 0.0:
                return 0.0
            self.injected["delay"] += 1
            return rule.delay


# fault -> (HTTP status, JSON-protocol code, query-protocol code, S3 status, S3 code, message)
_FAULTS: dict[str, tuple[int, str, str, int, str, str]] = {
    "throttle": (400, "ThrottlingException", "Throttling", 503, "SlowDown", "Rate exceeded"),
    "error500": (
        500,
        "InternalFailure",
        "InternalFailure",
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "error503": (
        503,
        "ServiceUnavailable",
        "ServiceUnavailable",
        503,
        "ServiceUnavailable",
        "Service is unable to handle request.",
    ),
}


def protocol_error(
    info: RequestInfo, status: int, code: str, message: str, *, query_code: str | None = None
) -> tuple[int, dict[str, str], bytes, str]:
    """An error encoded for the request's protocol: (status, headers, body, error code).

    JSON services (``X-Amz-Target``) and other REST services get ``{"__type", "message"}`` with
    ``x-amzn-ErrorType``; query services (form ``Action``) get ``<ErrorResponse>``; S3 gets ``<Error>``.
    """
    request_id = str(uuid.uuid4())
    text = escape(message)
    if info.protocol == "query":
        code = query_code or code
        kind = "Sender" if status < 500 else "Receiver"
        body = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{text}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body, code
    if info.service == "s3":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{text}</Message>'
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        return status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, body, code
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "x-amzn-ErrorType": code,
        "x-amzn-RequestId": request_id,
    }
    return status, headers, body, code


def fault_response(info: RequestInfo, fault: str) -> tuple[int, dict[str, str], bytes, str]:
    """An injected fault (``throttle``, ``error500``, ``error503``) shaped for the request's protocol."""
    status, json_code, query_code, s3_status, s3_code, message = _FAULTS[fault]
    if info.service == "s3" and info.protocol != "query":
        return protocol_error(info, s3_status, s3_code, message)
    return protocol_error(info, status, json_code, message, query_code=query_code)


# --------------------------------------------------------------------------------------------------------
# The WSGI app.


class ControlError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    501: "Not Implemented",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _status_line(status: int) -> str:
    return f"{status} {_STATUS_TEXT.get(status, 'Unknown')}"


class LocalEndpointApp:
    """The WSGI app: engine actions, control API, moto for the rest; records calls, injects faults.

    :param engine: a ``PipelineEngine`` (anything with ``ACTIONS``, ``dispatch``, ``reset``, ``stats``
        and the behaviour setters).
    :param moto_app: moto's WSGI app; created lazily when omitted.
    :param on_reset: called after a reset (the endpoint re-applies its start-up settings there).
    """

    def __init__(
        self,
        engine: Any,
        *,
        moto_app: WSGIApp | None = None,
        strict: bool = True,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.protocol = SageMakerJsonProtocol(engine, strict=strict)
        self.recorder = CallRecorder()
        self.faults = FaultInjector()
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

    # -- moto -------------------------------------------------------------------------------------------

    @property
    def moto_app(self) -> WSGIApp:
        with self._moto_lock:
            if self._moto_app is None:
                from .aws_session import isolate_moto

                isolate_moto()  # moto's own boto3 sessions must not read the user's AWS profile
                from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

                self._moto_app = DomainDispatcherApplication(create_backend_app)
            return self._moto_app

    def reset(self) -> None:
        """Reset the engine, moto's backends (as ``POST /moto-api/reset`` does), calls, faults and job
        outcomes. moto's state-manager transitions (``/moto-api/state-manager/...``) are process-wide
        and are not reset, as moto's own reset does not reset them."""
        from moto.moto_api._internal.models import moto_api_backend

        with self._reset_lock:
            self.engine.reset()
            moto_api_backend.reset()
            self.recorder.clear()
            self.faults.clear()
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
            return self._control(environ, start_response)
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
                start_response(_status_line(status), list(headers.items()))
                return [body]
            if info.service == "sqs" and info.protocol == "json":
                outdated = self.receipts.answer(info.action, info.region, info.body)
                if outdated is not None:  # an outdated receipt handle: answered as SQS does, not as moto
                    status, headers, body, code = outdated
                    record.update(status=status, error_code=code, routed_to="sqs_receipts")
                    headers["Content-Length"] = str(len(body))
                    start_response(_status_line(status), list(headers.items()))
                    return [body]
            if info.target_prefix == "SageMaker" and self.protocol.handles(info.action):
                record["routed_to"] = "engine"
                response = self.protocol.handle(info.action, info.body or b"", info.region)
                record.update(status=response.status, error_code=response.error_code)
                start_response(_status_line(response.status), list(response.headers.items()))
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
            start_response(_status_line(status), list(headers.items()))
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

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        name = environ.get("PATH_INFO", "/")[len(CONTROL_PREFIX) :].strip("/")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            body = _read_body(environ)
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise ControlError("the request body must be a JSON object")
            result = self._control_route(method, name, payload, query)
            status = 200
        except ControlError as exc:
            result, status = {"error": str(exc)}, exc.status
        except (ValueError, TypeError, KeyError) as exc:
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 400
        except Exception as exc:  # a bug, but the control API must answer
            log.exception("control %s %s failed", method, name)
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, 500
        data = json.dumps(result, default=_json_default).encode()
        start_response(
            _status_line(status), [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    def _control_route(self, method: str, name: str, payload: dict[str, Any], query: dict[str, str]) -> Any:
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "health"): self._health,
            ("POST", "reset"): self._reset,
            ("POST", "time-scale"): lambda: self._set_time_scale(payload),
            ("POST", "default-step-duration"): lambda: self._set_default_duration(payload),
            ("POST", "step-behaviour"): lambda: self._set_step_behaviour(payload),
            ("GET", "faults"): lambda: {"faults": self.faults.rules()},
            ("POST", "faults"): lambda: self._set_faults(payload),
            ("DELETE", "faults"): lambda: self._clear_faults(query.get("action")),
            ("POST", "concurrency-cap"): lambda: self._set_cap(payload),
            ("GET", "job-outcomes"): lambda: {"job_outcomes": self.job_outcomes.rules()},
            ("POST", "job-outcomes"): lambda: self._set_job_outcome(payload),
            ("DELETE", "job-outcomes"): self._clear_job_outcomes,
            ("GET", "calls"): lambda: self._calls(query),
            ("GET", "stats"): self.stats,
        }
        handler = routes.get((method, name))
        if handler is None:
            if any(route_name == name for _, route_name in routes):
                raise ControlError(f"{method} is not allowed on {CONTROL_PREFIX}{name}", 405)
            known = ", ".join(sorted({f"{m} {CONTROL_PREFIX}{n}" for m, n in routes}))
            raise ControlError(f"unknown control {CONTROL_PREFIX}{name}; known: {known}", 404)
        return handler()

    def _reset(self) -> dict[str, Any]:
        self.reset()
        return {"status": "ok"}

    def _clear_faults(self, action: str | None) -> dict[str, Any]:
        self.faults.clear(action)
        return {"faults": self.faults.rules()}

    def _health(self) -> dict[str, Any]:
        return {"status": "ok", "engine_actions": sorted(self.engine.ACTIONS)}

    def _set_time_scale(self, payload: dict[str, Any]) -> dict[str, Any]:
        scale = float(_require(payload, "scale"))
        if scale < 0:
            raise ControlError(f"scale must be >= 0, got {scale}")
        self.engine.set_time_scale(scale)
        return {"scale": scale}

    def _set_default_duration(self, payload: dict[str, Any]) -> dict[str, Any]:
        seconds = float(_require(payload, "seconds"))
        if seconds < 0:
            raise ControlError(f"seconds must be >= 0, got {seconds}")
        self.engine.set_default_step_duration(seconds)
        return {"seconds": seconds}

    def _set_step_behaviour(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"pipeline", "step", "duration", "fail", "fail_attempts", "property_files", "properties"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown step-behaviour fields {unknown}; allowed: {sorted(allowed)}")
        pipeline, step = str(_require(payload, "pipeline")), str(_require(payload, "step"))
        options = {k: payload[k] for k in allowed - {"pipeline", "step"} if k in payload}
        self.engine.set_step_behaviour(pipeline, step, **options)
        return {"pipeline": pipeline, "step": step, **options}

    def _set_faults(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"action", "throttle_rate", "error_rate", "seed", "delay"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown fault fields {unknown}; allowed: {sorted(allowed)}")
        seed = payload.get("seed")
        rule = self.faults.set(
            str(payload.get("action") or "*"),
            float(payload.get("throttle_rate") or 0.0),
            float(payload.get("error_rate") or 0.0),
            None if seed is None else int(seed),
            float(payload.get("delay") or 0.0),
        )
        return {"rule": rule.as_dict(), "faults": self.faults.rules()}

    def _set_cap(self, payload: dict[str, Any]) -> dict[str, Any]:
        pipeline = str(_require(payload, "pipeline"))
        cap = payload.get("cap")
        if cap is not None:
            cap = int(cap)
            if cap < 1:
                raise ControlError(f"cap must be >= 1 or null, got {cap}")
        self.engine.set_concurrency_cap(pipeline, cap)
        return {"pipeline": pipeline, "cap": cap}

    def _set_job_outcome(self, payload: dict[str, Any]) -> dict[str, Any]:
        allowed = {"service", "name", "fail", "exit_code", "fail_runs"}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise ControlError(f"unknown job-outcome fields {unknown}; allowed: {sorted(allowed)}")
        rule = self.job_outcomes.set(
            str(_require(payload, "service")),
            str(_require(payload, "name")),
            payload.get("fail", DEFAULT_JOB_FAILURE),
            payload.get("exit_code", 1),
            payload.get("fail_runs"),
        )
        return {"rule": rule, "job_outcomes": self.job_outcomes.rules()}

    def _clear_job_outcomes(self) -> dict[str, Any]:
        self.job_outcomes.clear()
        return {"job_outcomes": self.job_outcomes.rules()}

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


def _require(payload: dict[str, Any], key: str) -> Any:
    if payload.get(key) is None:
        raise ControlError(f"missing required field {key!r}")
    return payload[key]


# --------------------------------------------------------------------------------------------------------
# The server.


def _server_classes() -> tuple[type, type]:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import ThreadedWSGIServer

    class QuietHandler(MotoRequestHandler):  # type: ignore[misc]
        """moto's request handler (keeps underscored S3 metadata headers), HTTP/1.1 keep-alive, and
        request logging at DEBUG instead of werkzeug's INFO line per request."""

        protocol_version = "HTTP/1.1"

        def log(self, type: str, message: str, *args: Any) -> None:
            log.debug("%s " + message, self.address_string(), *args)

    class Server(ThreadedWSGIServer):  # type: ignore[misc]
        request_queue_size = 1024  # many concurrent clients connect at once in the load tests
        daemon_threads = True

    return Server, QuietHandler


class LocalEndpoint:
    """The local AWS endpoint: one port, pipeline actions served by the engine, the rest by moto.

    ``LocalEndpoint().start()`` binds ``host:port`` (``port=0``: a free port), serves in a daemon
    thread and returns once the socket is listening. :meth:`stop` shuts the server and the engine down.
    moto's backends are process-wide: two endpoints in one process have separate engines (pipelines)
    but share every other AWS resource, and a reset of either resets moto for both.
    Usable as a context manager. ``time_scale`` and ``default_step_duration`` (default 1.0 each) are
    applied at start and after every reset, so a reset returns to the endpoint's start-up settings.
    ``engine_factory(side_effects, account_id)`` replaces the engine (tests of the protocol layer).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        region: str = DEFAULT_REGION,
        time_scale: float | None = None,
        default_step_duration: float | None = None,
        strict: bool = True,
        engine_factory: Callable[[MotoSideEffects, str], Any] | None = None,
    ) -> None:
        if engine_factory is None:
            from .engine import PipelineEngine

            engine_factory = lambda side_effects, account: PipelineEngine(side_effects, account_id=account)  # noqa: E731
        self.host = host
        self.requested_port = port
        self.account_id = account_id
        self.region = region
        self.time_scale = time_scale
        self.default_step_duration = default_step_duration
        self.side_effects = MotoSideEffects(account_id)
        self.engine = engine_factory(self.side_effects, account_id)
        self.app = LocalEndpointApp(self.engine, strict=strict, on_reset=self._apply_settings)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._controls: LocalControls | None = None

    def _apply_settings(self) -> None:
        """Put the time scale and default step duration back to the endpoint's start-up settings."""
        time_scale = DEFAULT_TIME_SCALE if self.time_scale is None else self.time_scale
        duration = DEFAULT_STEP_DURATION if self.default_step_duration is None else self.default_step_duration
        self.engine.set_time_scale(time_scale)
        self.engine.set_default_step_duration(duration)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> LocalEndpoint:
        """Bind, start serving in a daemon thread, return self (idempotent)."""
        if self._server is not None:
            return self
        self._apply_settings()
        server_cls, handler_cls = _server_classes()
        _ = self.app.moto_app  # import moto's app before the first request, not during it
        self._server = server_cls(self.host, self.requested_port, self.app, handler=handler_cls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"local-aws-endpoint:{self.port}", daemon=True
        )
        self._thread.start()
        log.info("local AWS endpoint serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and shut the engine down (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.engine.shutdown()

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the endpoint is not started; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://<host>:<port>``; a wildcard bind address is reported as 127.0.0.1."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def controls(self) -> LocalControls:
        from .controls import LocalControls

        if self._controls is None or self._controls.endpoint_url != self.url:
            self._controls = LocalControls(self.url)
        return self._controls

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3, aiobotocore and Airflow's ``aws_default`` here."""
        return endpoint_environ(self.url, self.region)

    def stats(self) -> dict[str, Any]:
        return self.app.stats()


# Variables that would send clients elsewhere or hide our credentials: unset while the endpoint is used.
ENV_TO_UNSET_PREFIXES = ("AWS_ENDPOINT_URL_",)
ENV_TO_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def release_ecs_task_capacity(task_arn: str) -> None:
    """Give back the CPU, memory and ports an ECS task held on its container instance (EC2 launch type).

    moto does it only on ``StopTask``: a task that ends by itself keeps them, so an instance would refuse
    new tasks ("no capacity") after a dozen runs. Called once per task, when its end is first reported.
    """
    parts = task_arn.split(":")
    if len(parts) < 6 or not parts[5].startswith("task/"):
        return
    region, account = parts[3], parts[4]
    from moto.backends import get_backend

    backend: Any = get_backend("ecs")[account][region]  # type: ignore[call-overload]
    for cluster_name, tasks in list(backend.tasks.items()):
        task = tasks.get(task_arn)
        if task is None or not task.container_instance_arn:
            continue
        instance = backend.container_instances.get(cluster_name, {}).get(
            task.container_instance_arn.rsplit("/", 1)[-1]
        )
        cluster = backend.clusters.get(cluster_name)
        if instance is not None and cluster is not None:
            backend.update_container_instance_resources(instance, task.resource_requirements, removing=True)
            backend.update_cluster_resources(cluster, -1, task_state="RUNNING")


def endpoint_environ(url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The env vars for an endpoint at ``url``: AWS_* for boto3/aiobotocore, AIRFLOW_CONN_AWS_DEFAULT."""
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": region, "endpoint_url": url},
    }
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
    }


def variables_to_unset(environ: Iterable[str]) -> Iterator[str]:
    """The names in ``environ`` that :data:`ENV_TO_UNSET` / :data:`ENV_TO_UNSET_PREFIXES` cover."""
    for name in environ:
        if name in ENV_TO_UNSET or name.startswith(ENV_TO_UNSET_PREFIXES):
            yield name
