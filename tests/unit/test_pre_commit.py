"""The pre-commit config runs what ``make test`` lints: the Makefile's lint targets, and nothing fetched."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _hooks() -> list[dict]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def _prerequisites(target: str) -> list[str]:
    match = re.search(rf"^{re.escape(target)}:([^=\n]*)$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"no target {target!r} in the Makefile"
    return match.group(1).split()


def _dry_run(target: str) -> str:
    """The commands ``make <target>`` would run (``make -n``: nothing runs), the install step left out."""
    out = subprocess.run(
        ["make", "-n", "-s", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    install = ("pip install", " -m venv ", "touch ")
    return "\n".join(line for line in out.splitlines() if not any(step in line for step in install))


def test_every_hook_is_local_and_runs_a_make_target() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"] * len(config["repos"])
    for hook in _hooks():
        assert hook["language"] == "system", hook["id"]
        assert hook["pass_filenames"] is False, hook["id"]
        command = shlex.split(hook["entry"])
        assert command[0] == "make" and len(command) == 2, hook["entry"]


def test_the_hooks_run_exactly_the_lint_targets_of_make_test() -> None:
    hook_targets = {shlex.split(hook["entry"])[1] for hook in _hooks()}
    lint_targets = {
        target
        for target in _prerequisites("test")
        if re.search(r"\b(ruff|mypy)\b", _dry_run(target)) and "pytest" not in _dry_run(target)
    }
    assert lint_targets, "make test lints nothing"
    assert hook_targets == lint_targets


def test_the_hooks_cover_ruff_check_ruff_format_and_mypy() -> None:
    commands = "\n".join(_dry_run(shlex.split(hook["entry"])[1]) for hook in _hooks())
    for tool in (r"ruff check\b", r"ruff format --check\b", r"\bmypy\b"):
        assert re.search(tool, commands), tool
    assert "pytest" not in commands
