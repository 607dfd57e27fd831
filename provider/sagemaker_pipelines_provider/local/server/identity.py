"""What a request is: service and region from the SigV4 scope, action, protocol, key arguments."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from .environ import DEFAULT_REGION

__all__ = ["KEY_ARGS", "RequestInfo", "identify", "read_body"]


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


def read_body(environ: dict[str, Any]) -> bytes:
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
    body = read_body(environ)
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
