"""The errors the pipeline engine raises: each carries the AWS error code the protocol layer returns."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "EngineError",
    "EngineValidationError",
    "ResourceLimitExceeded",
    "ResourceNotFound",
]


class EngineError(Exception):
    """Base of the errors ``dispatch`` raises: ``code`` is the AWS error code, ``message`` the text."""

    code: str = "InternalFailure"
    http_status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ResourceNotFound(EngineError):
    code = "ResourceNotFound"


class EngineValidationError(EngineError):
    code = "ValidationException"


class ConflictError(EngineError):
    code = "ConflictException"


class ResourceLimitExceeded(EngineError):
    code = "ResourceLimitExceeded"
