"""The SageMaker JSON 1.1 protocol for the pipeline engine: decode, validate against botocore's service
model, convert timestamps and blobs, dispatch, shape the answer by the output shape.

It knows nothing of moto or of the HTTP server: :meth:`SageMakerJsonProtocol.handle` takes ``(action,
body, region)`` and returns an :class:`ApiResponse`. The per-request contract and its choices:
docs/local-endpoint.md.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
SERVICE_NAME = "sagemaker"


class Engine(Protocol):
    """What the protocol layer needs from the engine (:class:`~.engine.PipelineEngine`)."""

    ACTIONS: frozenset[str]

    def dispatch(self, action: str, request: dict[str, Any], *, region: str) -> dict[str, Any]: ...


@dataclass
class ApiResponse:
    """One encoded HTTP answer: status, headers and body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400


class ProtocolError(Exception):
    """An error the protocol layer answers itself (decode or validation), with AWS's code."""

    def __init__(self, code: str, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


class OutputShapeError(Exception):
    """The engine returned something the service model's output shape cannot carry (an engine bug)."""


def error_response(
    code: str, message: str, http_status: int = 400, request_id: str | None = None
) -> ApiResponse:
    """AWS's JSON error encoding: ``{"__type", "message"}`` plus the ``x-amzn-ErrorType`` header."""
    request_id = request_id or str(uuid.uuid4())
    body = json.dumps({"__type": code, "message": message}).encode()
    headers = {
        "Content-Type": JSON_CONTENT_TYPE,
        "x-amzn-RequestId": request_id,
        "x-amzn-ErrorType": code,
        "Content-Length": str(len(body)),
    }
    return ApiResponse(http_status, headers, body, error_code=code)


# --------------------------------------------------------------------------------------------------------
# The service model (loaded once per process; botocore's loader is not free).

_MODEL_LOCK = threading.Lock()
_SERVICE_MODEL: ServiceModel | None = None


def service_model() -> ServiceModel:
    """botocore's SageMaker service model, loaded once and shared (read-only, thread-safe)."""
    global _SERVICE_MODEL
    with _MODEL_LOCK:
        if _SERVICE_MODEL is None:
            from .aws_session import isolated_botocore_session

            _SERVICE_MODEL = isolated_botocore_session().get_service_model(SERVICE_NAME)
        return _SERVICE_MODEL


# --------------------------------------------------------------------------------------------------------
# Patterns: botocore's are Java regular expressions without anchors; AWS applies them to the whole value.

_PATTERN_LOCK = threading.Lock()
_PATTERNS: dict[str, Callable[[str], bool] | None] = {}
_SURROGATE_RANGE = "\\uD800\\uDC00-\\uDBFF\\uDFFF"  # Java's UTF-16 spelling of U+10000..U+10FFFF


def _compile_pattern(pattern: str) -> Callable[[str], bool] | None:
    """A full-match predicate for a model pattern, or None when it cannot be checked in Python."""
    translated = pattern.replace(_SURROGATE_RANGE, "\\U00010000-\\U0010FFFF")
    try:
        compiled = re.compile(translated)
        return lambda value: compiled.fullmatch(value) is not None
    except re.error:
        pass
    try:
        import regex  # optional: understands \p{L} and friends
    except ImportError:
        log.debug("pattern %r not checked: needs the 'regex' module", pattern)
        return None
    try:
        compiled_x = regex.compile(translated)
    except regex.error:
        log.debug("pattern %r not checked: not translatable", pattern)
        return None
    return lambda value: compiled_x.fullmatch(value) is not None


def _pattern_predicate(pattern: str) -> Callable[[str], bool] | None:
    with _PATTERN_LOCK:
        if pattern not in _PATTERNS:
            _PATTERNS[pattern] = _compile_pattern(pattern)
        return _PATTERNS[pattern]


# --------------------------------------------------------------------------------------------------------
# Input validation.


@dataclass
class _Violations:
    validation: list[str] = field(default_factory=list)
    serialization: list[str] = field(default_factory=list)


def _coral_name(member: str) -> str:
    return member[:1].lower() + member[1:]


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 256 else value[:256] + "..."
        return f"'{text}'"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, int | float):
        return f"'{value}'"
    if isinstance(value, list):
        return "'[...]'"
    return "'{...}'"


def _violation(value: Any, path: str, constraint: str) -> str:
    return f"Value {_render(value)} at '{path}' failed to satisfy constraint: Member {constraint}"


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "structure": (dict,),
    "map": (dict,),
    "list": (list,),
    "string": (str,),
    "blob": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "timestamp": (int, float, str),
}


def _check(value: Any, shape: Shape, path: str, out: _Violations) -> None:
    """Append every constraint ``value`` breaks under ``shape`` to ``out`` (recursive)."""
    type_name = shape.type_name
    expected = _JSON_TYPES.get(type_name)
    if expected is not None:
        bad_bool = isinstance(value, bool) and type_name not in ("boolean",)
        if not isinstance(value, expected) or bad_bool:
            out.serialization.append(
                f"Value {_render(value)} at '{path}' is a {type(value).__name__}, expected a {type_name}"
            )
            return
    meta = shape.metadata
    if type_name == "structure":
        assert isinstance(shape, StructureShape)
        members = shape.members
        for name in shape.required_members:
            if value.get(name) is None:
                out.validation.append(_violation(None, _join(path, _coral_name(name)), "must not be null"))
        for name, item in value.items():
            if name not in members:
                valid = ", ".join(members)
                where = f"'{path}'" if path else "the request"
                out.validation.append(f"Unknown member '{name}' in {where}; valid members: {valid}")
                continue
            if item is None:
                continue
            _check(item, members[name], _join(path, _coral_name(name)), out)
        return
    if type_name in ("list", "map", "string", "blob"):
        length = len(value)
        if "min" in meta and length < meta["min"]:
            out.validation.append(
                _violation(value, path, f"must have length greater than or equal to {meta['min']}")
            )
            return
        if "max" in meta and length > meta["max"]:
            out.validation.append(
                _violation(value, path, f"must have length less than or equal to {meta['max']}")
            )
            return
    if type_name == "list":
        for index, item in enumerate(value, start=1):
            _check(item, shape.member, f"{path}.{index}.member", out)  # type: ignore[attr-defined]
    elif type_name == "map":
        for key, item in value.items():
            _check(key, shape.key, f"{path}.{key}.key", out)  # type: ignore[attr-defined]
            _check(item, shape.value, f"{path}.{key}.member", out)  # type: ignore[attr-defined]
    elif type_name == "string":
        enum = meta.get("enum")
        if enum and value not in enum:
            out.validation.append(
                _violation(value, path, f"must satisfy enum value set: [{', '.join(enum)}]")
            )
            return
        pattern = meta.get("pattern")
        if pattern:
            predicate = _pattern_predicate(pattern)
            if predicate is not None and not predicate(value):
                out.validation.append(
                    _violation(value, path, f"must satisfy regular expression pattern: {pattern}")
                )
    elif type_name in ("integer", "long", "float", "double"):
        if "min" in meta and value < meta["min"]:
            out.validation.append(
                _violation(value, path, f"must have value greater than or equal to {meta['min']}")
            )
        elif "max" in meta and value > meta["max"]:
            out.validation.append(
                _violation(value, path, f"must have value less than or equal to {meta['max']}")
            )
    elif type_name == "timestamp" and isinstance(value, str):
        try:
            _parse_timestamp(value)
        except ValueError:
            out.serialization.append(f"Value {_render(value)} at '{path}' is not a timestamp")
    elif type_name == "blob":
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            out.serialization.append(f"Value at '{path}' is not base64-encoded")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _summary(violations: list[str]) -> str:
    count = len(violations)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(violations)


def validate_request(operation: OperationModel, request: Any) -> None:
    """Raise :class:`ProtocolError` when ``request`` breaks the operation's input shape.

    ``ValidationException`` for constraint violations, ``SerializationException`` for JSON type
    mismatches; botocore's ``ParamValidator`` runs last as a cross-check.
    """
    shape = operation.input_shape
    if shape is None:
        if request:
            raise ProtocolError("ValidationException", f"{operation.name} takes no input members")
        return
    out = _Violations()
    _check(request, shape, "", out)
    if out.serialization:
        raise ProtocolError("SerializationException", "; ".join(out.serialization))
    if out.validation:
        raise ProtocolError("ValidationException", _summary(out.validation))
    from botocore.validate import ParamValidator

    report = ParamValidator().validate(_convert_input(request, shape), shape)
    if report.has_errors():
        raise ProtocolError("ValidationException", report.generate_report())


# --------------------------------------------------------------------------------------------------------
# Timestamp conversion.


def _parse_timestamp(value: str | float) -> dt.datetime:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    text = value.strip()
    try:
        return dt.datetime.fromtimestamp(float(text), tz=dt.UTC)
    except ValueError:
        pass
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _convert_input(value: Any, shape: Shape) -> Any:
    """A copy of ``value`` with timestamp members turned into aware datetimes."""
    type_name = shape.type_name
    if value is None:
        return None
    if type_name == "timestamp":
        return _parse_timestamp(value)
    if type_name == "blob":
        return base64.b64decode(value)
    if type_name == "structure":
        members = shape.members  # type: ignore[attr-defined]
        return {k: _convert_input(v, members[k]) if k in members else v for k, v in value.items()}
    if type_name == "list":
        return [_convert_input(item, shape.member) for item in value]  # type: ignore[attr-defined]
    if type_name == "map":
        return {k: _convert_input(v, shape.value) for k, v in value.items()}  # type: ignore[attr-defined]
    return value


# --------------------------------------------------------------------------------------------------------
# Output shaping.


def shape_output(value: Any, shape: Shape | None, *, strict: bool = True, path: str = "") -> Any:
    """Encode an engine result for the wire by ``shape``: drop ``None``, datetimes -> epoch seconds.

    Raises :class:`OutputShapeError` (strict) for keys the model does not define, naive datetimes and
    values of the wrong JSON type; with ``strict=False`` unknown keys are dropped with a warning.
    """
    if shape is None:
        if value:
            raise OutputShapeError(f"operation has no output shape but the engine returned {sorted(value)}")
        return {}
    type_name = shape.type_name
    where = path or "<response>"
    if type_name == "structure":
        if not isinstance(value, Mapping):
            raise OutputShapeError(
                f"{where}: expected a structure ({shape.name}), got {type(value).__name__}"
            )
        members = shape.members  # type: ignore[attr-defined]
        result: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                continue
            if key not in members:
                message = (
                    f"{where}: key {key!r} is not a member of {shape.name}; members: {', '.join(members)}"
                )
                if strict:
                    raise OutputShapeError(message)
                log.warning("dropping %s", message)
                continue
            result[key] = shape_output(item, members[key], strict=strict, path=_join(path, key))
        return result
    if type_name == "list":
        if not isinstance(value, list | tuple):
            raise OutputShapeError(f"{where}: expected a list ({shape.name}), got {type(value).__name__}")
        member = shape.member  # type: ignore[attr-defined]
        return [
            shape_output(item, member, strict=strict, path=f"{path}[{i}]") for i, item in enumerate(value)
        ]
    if type_name == "map":
        if not isinstance(value, Mapping):
            raise OutputShapeError(f"{where}: expected a map ({shape.name}), got {type(value).__name__}")
        value_shape = shape.value  # type: ignore[attr-defined]
        return {
            str(k): shape_output(v, value_shape, strict=strict, path=f"{path}[{k!r}]")
            for k, v in value.items()
            if v is not None
        }
    if type_name == "timestamp":
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                if strict:
                    raise OutputShapeError(
                        f"{where}: naive datetime {value!r}; the engine must use aware datetimes"
                    )
                value = value.replace(tzinfo=dt.UTC)
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise OutputShapeError(f"{where}: expected a datetime, got {type(value).__name__} {value!r}")
    if type_name == "blob" and isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    expected = _JSON_TYPES.get(type_name)
    if expected is not None and strict:
        bad_bool = isinstance(value, bool) and type_name != "boolean"
        if not isinstance(value, expected) or bad_bool:
            raise OutputShapeError(f"{where}: expected a {type_name}, got {type(value).__name__} {value!r}")
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------------------
# The protocol handler.


class SageMakerJsonProtocol:
    """Decode, validate, dispatch to the engine, encode. Thread-safe (no per-request state is shared).

    :param engine: the pipeline engine; only actions in ``engine.ACTIONS`` are handled.
    :param strict: surface engine results that do not fit the output shape as ``InternalFailure``
        (default) instead of dropping the extra keys.
    """

    def __init__(self, engine: Engine, *, strict: bool = True) -> None:
        self.engine = engine
        self.strict = strict
        self._model = service_model()

    def handles(self, action: str) -> bool:
        """True when ``action`` is a SageMaker action the engine serves."""
        return action in self.engine.ACTIONS

    @property
    def actions(self) -> Iterable[str]:
        return self.engine.ACTIONS

    def handle(self, action: str, body: bytes, region: str) -> ApiResponse:
        """Serve one request for ``SageMaker.<action>``; never raises."""
        request_id = str(uuid.uuid4())
        try:
            operation = self._model.operation_model(action)
        except Exception:
            return error_response(
                "UnknownOperationException", f"Unknown operation SageMaker.{action}", 400, request_id
            )
        try:
            request = self._decode(body)
            validate_request(operation, request)
            converted = _convert_input(request, operation.input_shape) if operation.input_shape else {}
        except ProtocolError as exc:
            return error_response(exc.code, exc.message, exc.http_status, request_id)
        try:
            result = self.engine.dispatch(action, converted, region=region)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if isinstance(code, str) and code:
                message = getattr(exc, "message", None) or str(exc)
                status = int(getattr(exc, "http_status", 400) or 400)
                return error_response(code, message, status, request_id)
            log.error("engine failed on %s: %s", action, traceback.format_exc())
            return error_response("InternalFailure", f"{type(exc).__name__}: {exc}", 500, request_id)
        try:
            shaped = shape_output(result or {}, operation.output_shape, strict=self.strict)
            body_out = json.dumps(shaped, default=_json_default).encode()
        except (OutputShapeError, TypeError) as exc:
            log.error("engine result for %s does not fit the service model: %s", action, exc)
            return error_response(
                "InternalFailure",
                f"local engine returned an invalid {action} response: {exc}",
                500,
                request_id,
            )
        headers = {
            "Content-Type": JSON_CONTENT_TYPE,
            "x-amzn-RequestId": request_id,
            "Content-Length": str(len(body_out)),
        }
        return ApiResponse(200, headers, body_out)

    @staticmethod
    def _decode(body: bytes) -> dict[str, Any]:
        if not body or not body.strip():
            return {}
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError("SerializationException", f"request body is not valid JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise ProtocolError("SerializationException", "request body must be a JSON object")
        return decoded
