"""The built wheel is what `pip install .` registers: entry points, console script and package data."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

#: pip builds the wheel in a child process.
pytestmark = pytest.mark.subprocess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the repository's build/ folder: xdist workers running this module's tests at
    # once must take turns, or one finds the other's half-written wheel tree ("File exists").
    with open(Path(tempfile.gettempdir()) / "smp-wheel-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                str(out),
                str(REPO),
            ],
            check=True,
            timeout=300,
        )
    (built,) = out.glob("airflow_provider_sagemaker_pipelines-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_registers_the_provider_plugin_and_command(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[apache_airflow_provider]" in text
    assert "sagemaker_pipelines_provider:get_provider_info" in text
    assert "sagemaker_pipelines_provider.local.pytest_plugin" in text
    assert "sagemaker-pipelines-local = sagemaker_pipelines_provider.local.cli:main" in text


def test_wheel_ships_type_marker_and_pipeline_definitions(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "sagemaker_pipelines_provider/py.typed" in names
    packaged = {n for n in names if n.startswith("sagemaker_pipelines_provider/local/pipelines/")}
    on_disk = {
        f"sagemaker_pipelines_provider/local/pipelines/{p.name}"
        for p in (REPO / "provider/sagemaker_pipelines_provider/local/pipelines").glob("*.json")
    }
    assert on_disk and packaged == on_disk
