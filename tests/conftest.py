"""Test harness: a throwaway AIRFLOW_HOME with SQLite, migrated once per test session.

The environment is set at import time, before anything imports Airflow, because Airflow reads its
configuration once on first import. The fixtures ``local_aws``, ``airflow_db`` and ``dag_runner`` come
from this package's own pytest plugin (``sagemaker_pipelines_provider.local.pytest_plugin``), the one
users get: the suite runs its DAGs the way users are told to. Test-support modules are the package
``tests.support`` (the repository root is on ``sys.path``: pytest's ``pythonpath`` option); the session
fixture ``example_runs`` runs the example DAGs once for every check that needs them.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.example_dags import ExampleRuns

REPO = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO / "dags"

_home = Path(tempfile.mkdtemp(prefix="airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home / 'airflow.db'}"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
# One Fernet key for this process and every Airflow process the tests start (triggerers, `airflow dags
# test`): in unit-test mode each process would otherwise make up its own key unless airflow.cfg already
# holds one, and a triggerer could not decrypt the trigger arguments this process wrote.
os.environ["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# Never let a test reach real AWS with whatever credentials the machine has.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def example_runs(local_aws_endpoint: Any, airflow_db: Path) -> ExampleRuns:
    """The example DAGs, the failure paths and the token error paths, run once per session on the reset
    endpoint (with xdist: one worker runs all the tests using it, :func:`pytest_xdist_make_scheduler`)."""
    from sagemaker_pipelines_provider.local import dag_runs
    from sagemaker_pipelines_provider.local.pytest_plugin import LocalAws

    from tests.support.example_dags import run_examples

    local_aws_endpoint.app.reset()
    return run_examples(LocalAws(local_aws_endpoint), dag_runs)


#: The fast lane (``make unit``): these paths hold no test that needs the local endpoint or the metadata DB.
_UNIT_PATHS = ("tests/unit/", "tests/compose/", "tests/dags/test_dag_integrity.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests under :data:`_UNIT_PATHS` ``unit`` unless they start child processes."""
    for item in items:
        path = item.path.relative_to(REPO).as_posix()
        if path.startswith(_UNIT_PATHS) and item.get_closest_marker("subprocess") is None:
            item.add_marker(pytest.mark.unit)


#: The test files that use ``example_runs``: xdist sends them to one worker, which runs the examples once.
EXAMPLE_RUNS_TESTS = (
    "tests/dags/test_example_dags.py",
    "tests/integration/test_iam_policy.py",
    "tests/integration/test_no_secret_in_logs.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Load scheduling (any test to any free worker) except :data:`EXAMPLE_RUNS_TESTS`, one unit.

    (xdist's own ``--dist loadgroup`` does not group under pytest 9: it renames ``item._nodeid``, which
    pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "example_runs" if nodeid.startswith(EXAMPLE_RUNS_TESTS) else nodeid

    return Scheduling(config, log)
