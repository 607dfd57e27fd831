"""``make demo`` (``sagemaker_pipelines_provider.local.demo``) runs green and prints every row Succeeded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def restored_environ() -> Any:
    """The demo exports its own endpoint's variables: put the session's back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_demo_prints_every_row_succeeded(
    airflow_db: Path, restored_environ: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sagemaker_pipelines_provider.local import demo

    os.environ["SMP_POLL_INTERVAL"] = "0.2"
    code = demo.main(
        ["--dags-folder", str(DAGS_FOLDER), "--airflow-home", str(tmp_path), "--step-seconds", "0.05"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    header, _, *rows = out[out.index("date ") :].split("\n\n")[0].splitlines()
    for column in ("date", "pipeline", "execution", "status", "steps", "duration", "model package"):
        assert column in header
    pipelines = [row.split()[1] for row in rows]
    assert sorted(pipelines) == sorted(["features", "training", "evaluation", *["retraining"] * 3]), out
    assert all(row.split()[3] == "Succeeded" for row in rows), out
    dates = sorted({row.split()[0] for row in rows if row.split()[1] == "retraining"})
    assert dates == ["2026-01-01", "2026-01-02", "2026-01-03"], out
    assert out.count(": success") == 4, out
