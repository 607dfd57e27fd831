"""The stack's configuration against ``docker-compose.yaml`` (offline: nothing is started), and the
process bookkeeping that lets ``make stack-down`` stop exactly what ``make stack`` started.

The stack reads its Airflow environment from the compose file itself (``stack.environment``); these
tests fail when the two drift apart: a variable of the compose file not carried over, a value the stack
changes beyond its documented rewrites (service host -> 127.0.0.1:<port>, /opt/airflow -> state folder),
a variable the stack adds that is not documented, or a setting only one Airflow service of the compose
file has.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from stack import POOL, Stack, free_port
from stack.compose import environment, load_compose
from stack.environment import CONTAINER_HOME, SERVICE_PORTS, STACK_ONLY, rewrite_value
from stack.processes import ProcessRecord, spawn, stop

#: Variables compose sets on single services for the image's entrypoint and airflow-init's script (the
#: stack reads the UI login from airflow-init too); anything else set on one Airflow service only is drift.
CONTAINER_ONLY = {
    "DUMB_INIT_SETSID",
    "_AIRFLOW_DB_MIGRATE",
    "_AIRFLOW_WWW_USER_USERNAME",
    "_AIRFLOW_WWW_USER_PASSWORD",
}
AIRFLOW_COMPOSE_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)


def drift(
    compose_env: Mapping[str, str], stack_env: Mapping[str, str], ports: Mapping[str, int], home: Path
) -> list[str]:
    """How ``stack_env`` departs from ``compose_env`` beyond the documented rewrites and additions."""
    problems = []
    for name, value in compose_env.items():
        if name not in stack_env:
            problems.append(f"{name} is in docker-compose.yaml but not in the stack")
            continue
        got = stack_env[name]
        if value.startswith(CONTAINER_HOME + "/"):
            expected = str(home) + value[len(CONTAINER_HOME) :]
            if got != expected:
                problems.append(f"{name}: {got!r}, expected the path {expected!r}")
        elif "://" in value and urlsplit(value).hostname in ports:
            want, have = urlsplit(value), urlsplit(got)
            same = (want.scheme, want.username, want.password, want.path, want.query, want.fragment) == (
                have.scheme,
                have.username,
                have.password,
                have.path,
                have.query,
                have.fragment,
            )
            if not same or have.hostname != "127.0.0.1" or have.port != ports[str(want.hostname)]:
                problems.append(f"{name}: {got!r} is not {value!r} on 127.0.0.1:{ports[str(want.hostname)]}")
        elif got != value:
            problems.append(f"{name}: the stack sets {got!r}, docker-compose.yaml {value!r}")
    for name in sorted(stack_env.keys() - compose_env.keys() - STACK_ONLY.keys()):
        problems.append(f"{name} is set by the stack only and not documented in stack.environment.STACK_ONLY")
    return problems


@pytest.fixture
def configured(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path / "state", variables={"AIRFLOW_API_PORT": str(free_port())})
    stack.configure()
    return stack


def _service_ports(stack: Stack) -> dict[str, int]:
    assert stack.ports is not None
    return {
        "postgres": stack.ports.postgres,
        "redis": stack.ports.redis,
        "sagemaker-local": stack.ports.local,
        "airflow-apiserver": stack.ports.api,
    }


def _common(stack: Stack) -> dict[str, str]:
    return environment(stack.compose()["x-airflow-common"])


def test_stack_environment_is_the_compose_environment(configured: Stack) -> None:
    problems = drift(
        _common(configured), configured.airflow_env, _service_ports(configured), configured.state_dir
    )
    assert problems == [], "\n".join(problems)
    # The rewrites did happen: nothing of the stack names a container host or path.
    for value in configured.airflow_env.values():
        assert CONTAINER_HOME not in value
        assert not any(f"@{host}" in value or f"//{host}" in value for host in SERVICE_PORTS), value


def test_drift_check_catches_what_it_is_for(configured: Stack) -> None:
    common, ports, home = _common(configured), _service_ports(configured), configured.state_dir
    new_key = {**common, "AIRFLOW__CORE__PARALLELISM": "64"}
    assert drift(new_key, configured.airflow_env, ports, home) == [
        "AIRFLOW__CORE__PARALLELISM is in docker-compose.yaml but not in the stack"
    ]
    changed = {**configured.airflow_env, "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    assert drift(common, changed, ports, home) == [
        "AIRFLOW__CORE__EXECUTOR: the stack sets 'LocalExecutor', docker-compose.yaml 'CeleryExecutor'"
    ]
    wrong_db = configured.airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("/airflow", "/other")
    assert (
        len(
            drift(
                common,
                {**configured.airflow_env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": wrong_db},
                ports,
                home,
            )
        )
        == 1
    )
    undocumented = {**configured.airflow_env, "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "8"}
    assert drift(common, undocumented, ports, home) == [
        "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT is set by the stack only and not documented in "
        "stack.environment.STACK_ONLY"
    ]


def test_stack_reads_the_compose_file_it_is_given(tmp_path: Path) -> None:
    """A variable added to x-airflow-common reaches the stack with no change to the stack."""
    source = (Path(__file__).resolve().parents[2] / "docker-compose.yaml").read_text(encoding="utf-8")
    anchor = "    AIRFLOW__CORE__LOAD_EXAMPLES: 'false'\n"
    assert source.count(anchor) == 1
    copy_path = tmp_path / "docker-compose.yaml"
    copy_path.write_text(
        source.replace(anchor, anchor + "    AIRFLOW__CORE__PARALLELISM: '64'\n"), encoding="utf-8"
    )
    document = load_compose({}, copy_path)
    assert environment(document["x-airflow-common"])["AIRFLOW__CORE__PARALLELISM"] == "64"


def test_every_airflow_service_has_the_common_environment() -> None:
    document = load_compose({})
    common = environment(document["x-airflow-common"])
    for service in AIRFLOW_COMPOSE_SERVICES:
        env = environment(document["services"][service])
        only_here = env.keys() - common.keys() - CONTAINER_ONLY
        assert not only_here, f"{service} alone sets {sorted(only_here)}: move it to x-airflow-common"
        changed = {k for k in common if env.get(k) != common[k]}
        assert not changed, f"{service} overrides {sorted(changed)} of x-airflow-common"


def test_ports_and_settings_follow_the_compose_variables(tmp_path: Path) -> None:
    default = Stack(tmp_path / "a", variables={})
    default.configure()
    assert default.ports is not None and (default.ports.api, default.ports.local) == (8080, 5055)
    assert default.airflow_env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5055"
    assert (
        default.airflow_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    )
    assert default.login() == ("airflow", "airflow")

    real_aws = Stack(
        tmp_path / "b",
        variables={
            "AIRFLOW_API_PORT": "18080",
            "SMP_LOCAL_PORT": "15055",
            "SMP_AWS_ENDPOINT_URL": "",
            "SMP_AWS_ACCESS_KEY_ID": "",
            "SMP_AWS_SECRET_ACCESS_KEY": "",
            "SMP_AWS_REGION": "eu-west-1",
        },
    )
    env = real_aws.configure()
    assert real_aws.ports is not None and (real_aws.ports.api, real_aws.ports.local) == (18080, 15055)
    assert env["AWS_ENDPOINT_URL"] == "" and env["AWS_ACCESS_KEY_ID"] == ""
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-west-1"
    assert env["AIRFLOW_CONN_AWS_DEFAULT"] == "aws://?region_name=eu-west-1"


def test_compose_init_creates_the_stacks_pool() -> None:
    script = " ".join(load_compose({})["services"]["airflow-init"]["command"])
    expected = f'airflow pools set {POOL.name} {POOL.slots} "{POOL.description}" --include-deferred'
    assert expected in script and POOL.include_deferred


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "postgresql+psycopg2://airflow:airflow@postgres/airflow",
            "postgresql+psycopg2://airflow:airflow@127.0.0.1:1/airflow",
        ),
        ("redis://:@redis:6379/0", "redis://:@127.0.0.1:2/0"),
        ("http://sagemaker-local:5055", "http://127.0.0.1:3"),
        ("http://airflow-apiserver:8080/execution/", "http://127.0.0.1:4/execution/"),
        ("/opt/airflow/config/airflow.cfg", "/state/config/airflow.cfg"),
        ("http://elsewhere:5055", "http://elsewhere:5055"),
        ("aws://?region_name=us-east-1", "aws://?region_name=us-east-1"),
        ("/opt/airflowish", "/opt/airflowish"),
        ("CeleryExecutor", "CeleryExecutor"),
    ],
)
def test_rewrite_value(value: str, expected: str) -> None:
    ports = {"postgres": 1, "redis": 2, "sagemaker-local": 3, "airflow-apiserver": 4}
    assert rewrite_value(value, ports, Path("/state")) == expected


# ---------------------------------------------------------------------------------------------------------
# make stack-down stops exactly what make stack started


def _sleeper(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    # A parent with a child: stopping must reach the whole family.
    code = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    return spawn(
        name, [sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"}, tmp_path / f"{name}.log", cwd=tmp_path
    )


def _children(pid: int) -> list[Any]:
    import psutil

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children(recursive=True)
        if kids:
            return kids
        time.sleep(0.05)
    raise AssertionError("the child never started")


def test_stop_ends_the_recorded_family_and_nothing_else(tmp_path: Path) -> None:
    ours, record = _sleeper(tmp_path, "ours")
    other, other_record = _sleeper(tmp_path, "other")
    try:
        child = _children(ours.pid)[0]
        assert stop([record], timeout=10) == ["ours"]
        ours.wait(timeout=10)
        assert not child.is_running() or child.status() == "zombie"
        assert other.poll() is None and other_record.alive()
        # A record whose pid now belongs to another process (start time differs) is never signalled.
        stale = dataclasses.replace(other_record, create_time=other_record.create_time - 100)
        assert stale.process() is None
        assert stop([stale], timeout=1) == []
        assert other.poll() is None
    finally:
        stop([record, other_record], timeout=10)
        for proc in (ours, other):
            proc.wait(timeout=10)
