"""AWS-shaped answers shared by the server's parts: status lines, errors in the request's protocol."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from xml.sax.saxutils import escape

from .identity import RequestInfo

__all__ = ["StartResponse", "WSGIApp", "json_default", "protocol_error", "status_line"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    501: "Not Implemented",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_line(status: int) -> str:
    return f"{status} {_STATUS_TEXT.get(status, 'Unknown')}"


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
