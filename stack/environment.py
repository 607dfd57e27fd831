"""The Airflow configuration of the stack: ``x-airflow-common`` of ``docker-compose.yaml``, rewritten
for one machine (service hosts → 127.0.0.1 ports, ``/opt/airflow`` → the state folder, plus
:data:`STACK_ONLY`). The rewrites and why: ``docs/stack.md``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .compose import REPO

#: Where the Airflow image keeps everything (``AIRFLOW_HOME``; compose mounts config/, dags/, logs/ there).
CONTAINER_HOME = "/opt/airflow"
#: The compose services other services reach by host name, and the port each listens on there.
SERVICE_PORTS = {"postgres": 5432, "redis": 6379, "sagemaker-local": 5055, "airflow-apiserver": 8080}
LOOPBACK = "127.0.0.1"
HOSTNAME_CALLABLE = "stack.hostname.from_environment"
#: Variables the stack adds to the compose file's environment, and why.
STACK_ONLY = {
    "AIRFLOW_HOME": "the image's AIRFLOW_HOME (/opt/airflow) is the state folder",
    "AIRFLOW__CORE__DAGS_FOLDER": "compose mounts ./dags at /opt/airflow/dags",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "one hostname per process, as one per container",
    "PYTHONPATH": "imports the hostname callable (stack.hostname)",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "the health server binds 127.0.0.1",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "a free port instead of the container's 8974",
}


def rewrite_value(value: str, ports: Mapping[str, int], home: Path) -> str:
    """A compose value for one machine: service URLs -> 127.0.0.1:<port>, /opt/airflow paths -> ``home``.

    ``ports`` maps compose service names to the stack's port of each. Anything else is returned as is.
    """
    if value == CONTAINER_HOME or value.startswith(CONTAINER_HOME + "/"):
        return str(home) + value[len(CONTAINER_HOME) :]
    if "://" not in value:
        return value
    parts = urlsplit(value)
    host = parts.hostname
    if host is None or host not in ports:
        return value
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@" if "@" in parts.netloc else ""
    netloc += f"{LOOPBACK}:{ports[host]}"
    return urlunsplit(parts._replace(netloc=netloc))


def airflow_environment(
    compose_env: Mapping[str, str],
    ports: Mapping[str, int],
    home: Path,
    scheduler_health_port: int,
    dags_folder: Path = REPO / "dags",
) -> dict[str, str]:
    """The stack's Airflow environment: ``compose_env`` rewritten, plus :data:`STACK_ONLY`."""
    env = {name: rewrite_value(value, ports, home) for name, value in compose_env.items()}
    added = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        "PYTHONPATH": str(REPO),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": LOOPBACK,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(scheduler_health_port),
    }
    assert added.keys() == STACK_ONLY.keys()
    clash = sorted(added.keys() & env.keys())
    if clash:
        raise ValueError(f"docker-compose.yaml now sets {clash}, which the stack sets itself: reconcile them")
    env.update(added)
    return env
