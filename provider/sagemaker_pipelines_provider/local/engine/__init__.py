"""The pipeline engine of the local endpoint: API handlers (:mod:`.actions`) over an execution state
machine (:mod:`.machine`) and its scheduler (:mod:`.scheduler`). No HTTP, no moto: other AWS services
are reached through :class:`SideEffects`. See docs/local-endpoint.md.
"""

from __future__ import annotations

from .actions import PipelineEngine
from .errors import ConflictError, EngineError, EngineValidationError, ResourceLimitExceeded, ResourceNotFound
from .machine import SideEffects

__all__ = [
    "ConflictError",
    "EngineError",
    "EngineValidationError",
    "PipelineEngine",
    "ResourceLimitExceeded",
    "ResourceNotFound",
    "SideEffects",
]
