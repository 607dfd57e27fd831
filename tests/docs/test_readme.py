"""Every Python block and every command of README.md runs as written.

The blocks are read from README.md itself, so a README that drifts from the code fails here:

- a Python block with a ``def test_...`` is a user's test file: it runs in a separate ``pytest`` process
  with a user's environment (``user_env``: nothing of this session, and an AWS profile that does not
  exist), with only the installed pytest plugin;
- a Python block that builds a DAG is parsed like a DAG file and each of its DAGs is run once, as a
  manual run without a logical date (the Trigger button), against the seeded ``local_aws`` endpoint:
  the run must succeed and so must every pipeline execution it started;
- any other Python block runs as a script;
- each command of a ``bash`` block is matched against :data:`COMMANDS` and run by its runner, in a
  user's environment. A command no rule matches fails the test: a new command must get a runner, or a
  narrow entry that skips it with the reason it cannot run here.

One substitution is made: the README's fixed port 5055 becomes a free port (another endpoint may hold
5055 on a shared machine).
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.user_env import REPO, run_pytest, user_environ

pytestmark = pytest.mark.integration

README = REPO / "README.md"
SHORT_EXAMPLE = REPO / "examples" / "dags" / "daily_training.py"
README_PORT = "5055"
#: A fenced block, also indented inside a list item (its lines dedented by the fence's indentation).
_FENCE = re.compile(r"^([ \t]*)```([\w-]*)[ \t]*\n(.*?)^\1```[ \t]*$", re.M | re.S)
_HEADING = re.compile(r"^#{1,6} (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    section: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")[:40]
        return f"L{self.line}-{self.lang}-{slug}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(text)]
    blocks = []
    for match in _FENCE.finditer(text):
        section = next((title for pos, title in reversed(headings) if pos < match.start()), "")
        code = textwrap.dedent(match.group(3))
        blocks.append(Block(match.group(2), code, text.count("\n", 0, match.start()) + 1, section))
    return blocks


BLOCKS = readme_blocks()


def test_every_block_has_a_known_language() -> None:
    assert BLOCKS
    unknown = [b.id for b in BLOCKS if b.lang not in ("python", "bash")]
    assert not unknown, f"README blocks without a runner language (python or bash): {unknown}"


# --------------------------------------------------------------------------------------------------------
# bash: one rule per command


@dataclass
class Skip:
    reason: str


@dataclass
class Shell:
    """What the commands of one bash block share: a scratch folder, a user's environment, the endpoint
    ``serve`` started, and the processes to stop at the end."""

    scratch: Path
    env: dict[str, str]
    port: str = field(default_factory=lambda: str(_free_port()))
    background: list[subprocess.Popen[str]] = field(default_factory=list)
    endpoint_url: str | None = None
    airflow_home: Path | None = None

    def run(self, command: str, *, cwd: Path | None = None, timeout: float = 600) -> str:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd or self.scratch,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{output[-5000:]}"
        return result.stdout

    def close(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_make_demo(shell: Shell, command: str) -> None:
    """``make demo`` as written: every row Succeeded, the runs and dates the README describes."""
    out = shell.run(command, cwd=REPO)
    assert "demo finished" in out, out[-3000:]
    header, _, *rows = out[out.index("date ") :].split("\n\n")[0].splitlines()
    for column in ("date", "pipeline", "execution", "status", "steps", "duration", "model package"):
        assert column in header
    pipelines = [row.split()[1] for row in rows]
    assert sorted(pipelines) == sorted(["features", "training", "evaluation", *["retraining"] * 3]), out
    assert all(row.split()[3] == "Succeeded" for row in rows), out
    dates = sorted({row.split()[0] for row in rows if row.split()[1] == "retraining"})
    assert dates == ["2026-01-01", "2026-01-02", "2026-01-03"], out
    assert out.count(": success") == 4, out


def start_serve(shell: Shell, command: str) -> None:
    """The endpoint in the foreground, as written: started in the background until the block ends."""
    log = (shell.scratch / "serve.log").open("w")
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=shell.scratch,
        env=shell.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    shell.background.append(process)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = (shell.scratch / "serve.log").read_text()
        if match := re.search(r"^export AWS_ENDPOINT_URL=(\S+)$", text, re.M):
            shell.endpoint_url = match.group(1)
            seeded = re.search(r"^# seeded: (.+)$", text, re.M)
            assert "--seed" not in command or seeded, text
            return
        assert process.poll() is None, f"`{command}` exited {process.returncode}:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"`{command}` printed no export line in 120 s")


def run_seed(shell: Shell, command: str) -> None:
    created = json.loads(shell.run(command))
    assert {"features", "training", "evaluation", "scheduled-training", "retraining"} <= set(
        created["pipelines"]
    )
    assert created["container_instance_arn"].startswith("arn:aws:ecs:")


def _airflow(shell: Shell) -> Path:
    """A user's Airflow (a scratch home, this repository's dags/), its database migrated and its DAG
    files parsed into it: what the airflow commands of the README run against."""
    if shell.airflow_home is None:
        home = shell.scratch / "airflow-home"
        home.mkdir()
        shell.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
        )
        shell.run("airflow db migrate")
        shell.run("airflow dags reserialize")
        shell.airflow_home = home
    return shell.airflow_home


def _query(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "airflow.db") as db:
        return list(db.execute(sql))


def run_pools_set(shell: Shell, command: str) -> None:
    home = _airflow(shell)
    shell.run(command)
    assert _query(
        home, "SELECT slots, include_deferred FROM slot_pool WHERE pool = 'sagemaker_pipelines'"
    ) == [(4, 1)]


def run_backfill_create(shell: Shell, command: str) -> None:
    home = _airflow(shell)
    shell.run(command)
    rows = _query(
        home,
        "SELECT count(*), min(logical_date), max(logical_date) FROM dag_run "
        "WHERE dag_id = 'historical_retraining' AND run_type = 'backfill'",
    )
    (count, first, last), *_ = rows
    assert count == 365 and first.startswith("2025-01-01") and last.startswith("2025-12-31"), rows
    assert _query(home, "SELECT max_active_runs FROM backfill WHERE dag_id = 'historical_retraining'") == [
        (8,)
    ]


def run_config_get_value(shell: Shell, command: str) -> None:
    """The provider's option as Airflow reports it: the declared default, or the variable's value."""
    if "AIRFLOW_HOME" not in shell.env:  # a user's Airflow home (no database needed to read the config)
        shell.env["AIRFLOW_HOME"] = str(shell.scratch / "airflow-home")
    value = re.match(r"AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL=(\S+) ", command)
    assert shell.run(command).strip() == (value.group(1) if value else "30")


_ENV_PREFIX = r"(?:[A-Z_][A-Z0-9_]*=\S* )*"

#: (full-match pattern of a comment-stripped command, its runner or why it is skipped)
COMMANDS: list[tuple[str, Callable[[Shell, str], None] | Skip]] = [
    (r"make demo", run_make_demo),
    (r"make test", Skip("this test is part of `make test`: running it here would recurse")),
    (
        _ENV_PREFIX + r"make stack(?:-down)?(?: .*)?",
        Skip("starts or stops the full local stack, which tests/system starts and drives"),
    ),
    (
        r"(?:TOKEN=\$\()?curl -s -X (?:POST|PATCH) http://127\.0\.0\.1:8080/.*",
        Skip("REST calls to a running `make stack`: tests/system/test_readme_stack.py runs them against one"),
    ),
    (
        r'echo "AIRFLOW_UID=\$\(id -u\)" > \.env && docker compose build && docker compose up -d',
        Skip(
            "needs a Docker engine, which these machines do not have; tests/compose validates the compose "
            "file, the Dockerfile and their environment offline"
        ),
    ),
    (r"sagemaker-pipelines-local serve .*", start_serve),
    (r"sagemaker-pipelines-local seed .*", run_seed),
    (r"airflow pools set sagemaker_pipelines 4 .*", run_pools_set),
    (r"airflow backfill create --dag-id historical_retraining .*", run_backfill_create),
    (
        r"(?:AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL=\S+ )?"
        r"airflow config get-value sagemaker_pipelines default_poll_interval",
        run_config_get_value,
    ),
]


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_of(code: str) -> Iterator[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    logical = re.sub(r"\\\n\s*", " ", code)
    for line in logical.splitlines():
        command = strip_comment(line).strip()
        if command:
            yield command


def rule_for(command: str) -> Callable[[Shell, str], None] | Skip:
    for pattern, rule in COMMANDS:
        if re.fullmatch(pattern, command):
            return rule
    pytest.fail(
        f"README command {command!r} has no rule in tests/docs/test_readme.py COMMANDS: give it a runner, "
        "or a narrow Skip with the reason it cannot run here"
    )


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "bash"], ids=lambda b: b.id)
def test_bash_block(block: Block, tmp_path: Path) -> None:
    planned = [(command, rule_for(command)) for command in commands_of(block.code)]
    assert planned, f"empty bash block at README line {block.line}"
    shell = Shell(tmp_path, user_environ(tmp_path))
    skipped = []
    try:
        for command, rule in planned:
            if isinstance(rule, Skip):
                skipped.append(f"{command!r}: {rule.reason}")
                continue
            rule(shell, command.replace(README_PORT, shell.port))
    finally:
        shell.close()
    for process in shell.background:
        assert process.returncode == 0, f"a background command ended with {process.returncode}"
    if len(skipped) == len(planned):
        pytest.skip("; ".join(skipped))


# --------------------------------------------------------------------------------------------------------
# python


def test_the_short_example_is_the_tested_example_dag() -> None:
    python = [b for b in BLOCKS if b.lang == "python"]
    assert python and python[0].section == "A short example"
    assert python[0].code == SHORT_EXAMPLE.read_text(), (
        "README's short example != examples/dags/daily_training.py"
    )


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=lambda b: b.id)
def test_python_block(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if re.search(r"^def test_", block.code, re.M):
        (tmp_path / "test_readme_block.py").write_text(block.code)
        output = run_pytest(tmp_path, tmp_path)
        assert re.search(r"\b\d+ passed\b", output) and " failed" not in output, output[-3000:]
    elif re.search(r"\bDAG\(", block.code):
        run_dag_block(block, tmp_path, monkeypatch, request)
    else:
        script = tmp_path / "readme_block.py"
        script.write_text(block.code)
        result = subprocess.run(
            [sys.executable, str(script)], env=user_environ(tmp_path), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def run_dag_block(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    local_aws = request.getfixturevalue("local_aws")
    dag_runner = request.getfixturevalue("dag_runner")
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL", "0.2")
    local_aws.seed()
    local_aws.controls.set_default_step_duration(0.05)
    path = tmp_path / "readme_dag.py"
    path.write_text(block.code)
    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, bag.import_errors
    assert bag.dags, f"the block at README line {block.line} builds no DAG"
    sagemaker = local_aws.client("sagemaker")
    try:
        for dag in bag.dags.values():
            run = dag_runner.run_dag(dag, logical_date=None)
            assert str(run.state) == "success", (dag.dag_id, dag_runner.task_states(run))
        executions = [
            summary
            for pipeline in sagemaker.list_pipelines()["PipelineSummaries"]
            for summary in sagemaker.list_pipeline_executions(PipelineName=pipeline["PipelineName"])[
                "PipelineExecutionSummaries"
            ]
        ]
        assert executions, "the DAG started no pipeline execution"
        assert {e["PipelineExecutionStatus"] for e in executions} == {"Succeeded"}, executions
    finally:
        from sagemaker_pipelines_provider.callbacks import lease

        lease.release_all()
