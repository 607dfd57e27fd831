"""The README's "The full stack without Docker" commands, run as written against a running stack.

``tests/docs/test_readme.py`` runs every other block of README.md; the REST calls of this section need
the stack, so they run here, against the session's stack (its port in place of the README's 8080): the
commands must unpause ``retraining_chain`` and create a run with no logical date, which must succeed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from stack import AirflowApi, Stack

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "The full stack without Docker"
README_API_URL = "http://127.0.0.1:8080"
_FENCE = re.compile(r"^[ \t]*```bash[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)


def section_rest_blocks() -> list[str]:
    """The bash blocks of the section that call the REST API (the others start and stop the stack)."""
    text = README.read_text()
    start = text.index(f"## {SECTION}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    return [block for block in _FENCE.findall(section) if "curl" in block]


def test_the_section_has_the_rest_calls() -> None:
    blocks = section_rest_blocks()
    assert len(blocks) == 1, f"expected one block of REST calls in {SECTION!r}, found {len(blocks)}"
    assert README_API_URL in blocks[0]


def test_readme_rest_calls_trigger_a_manual_run(
    airflow_stack: Stack, airflow_api: AirflowApi, stack_aws: Any
) -> None:
    (block,) = section_rest_blocks()
    airflow_api.wait_for_dag("retraining_chain")
    before = {run["dag_run_id"] for run in airflow_api.dag_runs("retraining_chain")}
    script = "set -euo pipefail\n" + block.replace(README_API_URL, airflow_stack.api_url)
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"README block exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )

    manual = [
        run
        for run in airflow_api.dag_runs("retraining_chain")
        if run["dag_run_id"] not in before and run["run_type"] == "manual"
    ]
    assert len(manual) == 1, manual
    assert manual[0]["logical_date"] is None
    run = airflow_api.wait_for_run("retraining_chain", manual[0]["dag_run_id"])
    assert run["state"] == "success", run
    airflow_api.wait_until_idle("retraining_chain")  # the scheduled run the unpause created, if any
