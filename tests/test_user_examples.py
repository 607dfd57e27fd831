"""``examples/``: a user's own DAG test, run as a user runs it (see ``examples/test_daily_training.py``).

A separate ``pytest examples`` process with a user's environment (no variable of this session, and an AWS
profile that does not exist): the fixtures come from the installed pytest plugin alone — ``local_aws``,
``dag_runner`` and the scratch Airflow home — and nothing from ``tests/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.user_env import REPO, run_pytest

pytestmark = pytest.mark.integration

EXAMPLES = REPO / "examples"


def test_examples_pass_with_the_plugin_alone(tmp_path: Path) -> None:
    assert not list(EXAMPLES.rglob("conftest.py")), "examples/ must not need a conftest"
    for path in EXAMPLES.rglob("*.py"):
        assert not re.search(
            r"^\s*(from|import)\s+(tests|conftest|example_dags|user_env)\b", path.read_text(), re.M
        )
    output = run_pytest(EXAMPLES, tmp_path, cwd=REPO)
    assert re.search(r"\b3 passed\b", output), output[-3000:]
