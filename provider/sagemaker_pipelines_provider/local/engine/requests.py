"""Reading request fields the way SageMaker validates them, and opaque NextToken pagination; errors are
:class:`~.errors.EngineValidationError` naming the field, the bad value and the valid choices. Defaults
(MaxResults 100) and the token format: docs/local-endpoint.md.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import EngineValidationError

__all__ = [
    "DEFAULT_MAX_RESULTS",
    "choice",
    "decode_token",
    "display_name",
    "encode_token",
    "max_results",
    "page",
    "parallelism",
    "timestamp",
]

DEFAULT_MAX_RESULTS = 100
DISPLAY_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}$")


def encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def timestamp(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                return datetime.fromtimestamp(float(value), UTC)
            except ValueError:
                pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise EngineValidationError(f"{field} {value!r} is not a timestamp")


def max_results(request: Mapping[str, Any]) -> int:
    value = request.get("MaxResults")
    if value is None:
        return DEFAULT_MAX_RESULTS
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise EngineValidationError(f"MaxResults must be an integer between 1 and 100, got {value!r}")
    return value


def choice(request: Mapping[str, Any], field: str, choices: tuple[str, ...], default: str) -> str:
    value = request.get(field)
    if value is None:
        return default
    if value not in choices:
        raise EngineValidationError(f"{field} {value!r} is invalid; valid values: {', '.join(choices)}")
    return str(value)


def parallelism(value: Any) -> int | None:
    if value is None:
        return None
    steps = value.get("MaxParallelExecutionSteps") if isinstance(value, Mapping) else None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise EngineValidationError(
            f"ParallelismConfiguration.MaxParallelExecutionSteps must be an integer >= 1, got {value!r}"
        )
    return steps


def display_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DISPLAY_NAME_PATTERN.match(value):
        raise EngineValidationError(
            f"PipelineExecutionDisplayName {value!r} is invalid: 1-82 characters matching "
            "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}"
        )
    return value


def page(
    items: list[Any], token: str | None, expected: dict[str, Any], limit: int
) -> tuple[list[Any], str | None]:
    """Offset pagination for small, stable lists (steps, parameters, pipelines)."""
    offset = 0
    if token:
        decoded = decode_token(token)
        if decoded is None or any(decoded.get(k) != v for k, v in expected.items()):
            raise EngineValidationError(f"NextToken {token!r} is invalid for this request")
        offset = int(decoded.get("offset", 0))
    page = items[offset : offset + limit]
    next_token = encode_token({**expected, "offset": offset + limit}) if offset + limit < len(items) else None
    return page, next_token
