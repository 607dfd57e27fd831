"""pytest fixtures for tests against the local AWS endpoint (the ``pytest11`` plugin
``sagemaker_pipelines_local``, installed with the ``[local]`` extra): ``local_aws_endpoint``,
``local_aws``, ``airflow_db`` and ``dag_runner``. What each fixture does and the scratch
``AIRFLOW_HOME``: docs/testing-your-dags.md.

This module imports neither Airflow (it is loaded before a test suite's conftest configures it) nor
boto3 or moto at import time: they are imported when a fixture is first used.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .controls import LocalControls
    from .server import LocalEndpoint

_SCRATCH_HOME_KEY = pytest.StashKey[tuple[Path, dict[str, str | None]]]()


def pytest_configure(config: pytest.Config) -> None:
    """Give the session a scratch ``AIRFLOW_HOME`` unless one is configured (module doc)."""
    if "airflow" in sys.modules or os.environ.get("AIRFLOW_HOME"):
        return
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return
    home = Path(tempfile.mkdtemp(prefix="airflow-home-"))
    (home / "dags").mkdir()
    values = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": os.environ.get("AIRFLOW__CORE__LOAD_EXAMPLES", "False"),
    }
    config.stash[_SCRATCH_HOME_KEY] = (home, {name: os.environ.get(name) for name in values})
    os.environ.update(values)


def pytest_unconfigure(config: pytest.Config) -> None:
    scratch = config.stash.get(_SCRATCH_HOME_KEY, None)
    if scratch is not None:
        home, saved = scratch
        _restore_environ(saved)
        shutil.rmtree(home, ignore_errors=True)


class _ClientCache:
    """boto3 clients for one endpoint, shared by the tests of a session (clients are thread-safe and
    hold no AWS state, so a reset does not invalidate them; creating one costs ~50-100 ms)."""

    def __init__(self, url: str, region: str) -> None:
        self.url = url
        self.region = region
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._session: Any = None

    def client(self, service: str, **kwargs: Any) -> Any:
        from .aws_session import isolated_boto3_session

        with self._lock:
            if not kwargs and service in self._clients:
                return self._clients[service]
            if self._session is None:
                self._session = isolated_boto3_session(self.region)
            options: dict[str, Any] = {"endpoint_url": self.url, "region_name": self.region}
            options.update(kwargs)
            client = self._session.client(service, **options)
            if not kwargs:
                self._clients[service] = client
            return client


class LocalAws:
    """What the ``local_aws`` fixture returns: the endpoint's URL, controls and boto3 clients."""

    def __init__(self, endpoint: LocalEndpoint, clients: _ClientCache | None = None) -> None:
        self.endpoint = endpoint
        self.url: str = endpoint.url
        self.region: str = endpoint.region
        self._clients = clients or _ClientCache(self.url, self.region)

    @property
    def controls(self) -> LocalControls:
        return self.endpoint.controls

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` against the endpoint; ``kwargs`` go to ``Session.client``
        (e.g. ``config=``). Without kwargs the client is shared by the session's tests."""
        return self._clients.client(service, **kwargs)

    def seed(self) -> dict[str, Any]:
        """Create the demo resources (queues, event rule, bucket, pipelines, role, Glue job, ECS) — see
        :mod:`.seed`."""
        from .seed import seed

        return seed(self)


def _apply_environ(values: dict[str, str]) -> dict[str, str | None]:
    """Set ``values``, unset the variables that would redirect clients; return what to restore."""
    from .server import variables_to_unset

    saved: dict[str, str | None] = {}
    for name in list(variables_to_unset(os.environ)):
        saved[name] = os.environ.pop(name)
    for name, value in values.items():
        saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value
    return saved


def _restore_environ(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def local_aws_endpoint() -> Iterator[LocalEndpoint]:
    """One local AWS endpoint for the session, with the AWS env vars pointing at it."""
    from .server import LocalEndpoint

    endpoint = LocalEndpoint().start()
    saved = _apply_environ(endpoint.environ())
    try:
        yield endpoint
    finally:
        _restore_environ(saved)
        endpoint.stop()


@pytest.fixture(scope="session")
def _local_aws_clients(local_aws_endpoint: LocalEndpoint) -> _ClientCache:
    return _ClientCache(local_aws_endpoint.url, local_aws_endpoint.region)


@pytest.fixture
def local_aws(local_aws_endpoint: LocalEndpoint, _local_aws_clients: _ClientCache) -> LocalAws:
    """The session's endpoint, reset before this test."""
    local_aws_endpoint.app.reset()
    return LocalAws(local_aws_endpoint, _local_aws_clients)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """The session's Airflow metadata database, created or migrated once; yields ``AIRFLOW_HOME``."""
    from airflow import settings
    from airflow.utils import db

    db.initdb()
    yield Path(settings.AIRFLOW_HOME)


@pytest.fixture
def dag_runner(airflow_db: Path) -> ModuleType:
    """Run DAGs in this process: :mod:`~sagemaker_pipelines_provider.local.dag_runs` (``run_dag``,
    ``sync_dag``, ``task_states``), with the metadata database ready."""
    from . import dag_runs

    return dag_runs
