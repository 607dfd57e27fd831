"""Test harness: a throwaway AIRFLOW_HOME with SQLite, migrated once per test session.

The environment is set at import time, before anything imports Airflow, because Airflow reads its
configuration once on first import. The fixtures ``local_aws``, ``airflow_db`` and ``dag_runner`` come
from this package's own pytest plugin (``sagemaker_pipelines_provider.local.pytest_plugin``), the one
users get: the suite runs its DAGs the way users are told to.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
from pathlib import Path

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

# Test-support modules imported by name (importlib import mode puts nothing on sys.path by itself); the
# repository root for the ``stack`` package (``make stack``).
for _path in (REPO, DAGS_FOLDER, REPO / "tests", REPO / "tests" / "integration", REPO / "tests" / "compose"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
