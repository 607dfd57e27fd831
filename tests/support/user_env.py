"""Run things the way a user of the provider would: a fresh process, an environment with nothing of this
test session's (no ``AIRFLOW_*``, no ``AWS_*``, no ``SMP_*``), the virtualenv's ``bin`` first on PATH.

``hostile_aws=True`` also gives it an AWS set-up that breaks anything reading it: ``AWS_PROFILE`` naming a
profile that does not exist, ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` pointing at files that do
not exist. The local tools must not care.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MISSING_PROFILE = "profile-that-does-not-exist"
_SESSION_PREFIXES = ("AIRFLOW", "_AIRFLOW", "AWS_", "SMP_", "PYTEST_", "PYTHONPATH")


def user_environ(scratch: Path, *, hostile_aws: bool = True) -> dict[str, str]:
    """A user's environment for a child process (``scratch``: a folder the child may write to)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SESSION_PREFIXES)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if hostile_aws:
        nowhere = scratch / "no-aws-config-here"
        env["AWS_PROFILE"] = MISSING_PROFILE
        env["AWS_CONFIG_FILE"] = str(nowhere / "config")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(nowhere / "credentials")
    return env


def run_pytest(target: Path, scratch: Path, *, cwd: Path | None = None, timeout: float = 600) -> str:
    """``python -m pytest target`` as a user runs it; returns its output, raises with it on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(target), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=cwd or scratch,
        env=user_environ(scratch),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"pytest {target} exited {result.returncode}:\n{output[-6000:]}"
    return output
