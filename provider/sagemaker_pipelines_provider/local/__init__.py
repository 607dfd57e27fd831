"""The local AWS endpoint (the ``[local]`` extra): SageMaker Pipelines by a local engine, the rest by moto.

Public names, importable from here and loaded on first use (importing this package stays light):
:class:`LocalEndpoint`, :class:`LocalControls`, :func:`load_definition`, :func:`endpoint_environ`,
:class:`LocalAws`, :func:`run_dag`, :func:`sync_dag`, :func:`task_states`. The command is :mod:`.cli`.
Layout: :mod:`.engine` (state machine and API handlers), :mod:`.protocol` (botocore-validated JSON),
:mod:`.server` (WSGI app, control API, call record, faults, moto). See docs/local-endpoint.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from .controls import LocalControls
    from .dag_runs import run_dag, sync_dag, task_states
    from .pytest_plugin import LocalAws
    from .seed import load_definition
    from .server import LocalEndpoint, endpoint_environ

_EXPORTS = {
    "LocalAws": "pytest_plugin",
    "LocalControls": "controls",
    "LocalEndpoint": "server",
    "endpoint_environ": "server",
    "load_definition": "seed",
    "run_dag": "dag_runs",
    "sync_dag": "dag_runs",
    "task_states": "dag_runs",
}

__all__ = [
    "LocalAws",
    "LocalControls",
    "LocalEndpoint",
    "endpoint_environ",
    "load_definition",
    "run_dag",
    "sync_dag",
    "task_states",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
