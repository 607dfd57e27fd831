"""The local AWS endpoint (the ``[local]`` extra): SageMaker Pipelines by a local engine, the rest by moto.

Public names, importable from here (each is loaded on first use, so importing this package stays light —
moto and boto3 are imported only when an endpoint is created):

- :class:`LocalEndpoint` — the endpoint (:mod:`.server`): ``LocalEndpoint().start()``, ``.url``,
  ``.environ()``, ``.controls``, ``.stop()``; a context manager;
- :class:`LocalControls` — client of its ``/_local/`` control API (:mod:`.controls`);
- :func:`load_definition` — a demo pipeline's JSON (the demo resources: ``seed.seed()``, :mod:`.seed`);
- :func:`endpoint_environ` — the environment variables that point boto3 and Airflow at an endpoint;
- :class:`LocalAws` — what the ``local_aws`` pytest fixture returns (:mod:`.pytest_plugin`);
- :func:`run_dag`, :func:`sync_dag`, :func:`task_states` — run a DAG in a test (:mod:`.dag_runs`).

The ``sagemaker-pipelines-local`` command is :mod:`.cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
