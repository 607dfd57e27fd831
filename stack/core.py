"""The stack of ``docker-compose.yaml`` as local processes: :class:`Stack`.

``make stack`` / ``make stack-down`` and the system tests drive it. Its state folder, services, start
order and health: ``docs/stack.md``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import health
from .compose import REPO, compose_variables, environment, load_compose, published_port
from .environment import LOOPBACK, SERVICE_PORTS, airflow_environment
from .errors import StackError
from .hostname import ENV_NAME as HOSTNAME_ENV
from .processes import ProcessRecord, spawn, stop
from .rest import AirflowApi
from .servers import Servers, ensure_servers

DEFAULT_STATE_DIR = REPO / ".stack"
BIN = Path(sys.executable).parent


#: The pool of the example DAGs (``SMP_POOL``): 4 slots, deferred tasks counted. Compose's airflow-init
#: creates the same one (``airflow pools set``); a test keeps the two equal.
@dataclass(frozen=True)
class Pool:
    name: str
    slots: int
    description: str
    include_deferred: bool


POOL = Pool("sagemaker_pipelines", 4, "SageMaker pipeline executions", include_deferred=True)
BASE_SERVICES = ("postgres", "redis", "sagemaker-local")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer-1", "triggerer-2", "worker")
CELERY_APP = "airflow.providers.celery.executors.celery_executor.app"
#: Inherited variables dropped from every service's environment: the stack passes exactly what the
#: compose file passes (a shell's AIRFLOW_HOME or AWS_PROFILE must not leak in).
DROPPED_PREFIXES = ("AIRFLOW", "_AIRFLOW", "AWS_", "SMP_", "PYTHONPATH", HOSTNAME_ENV)
#: PostgreSQL settings for a throwaway development database (not crash-safe; faster migrations).
POSTGRES_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


@dataclass
class Ports:
    api: int
    local: int
    postgres: int
    redis: int
    scheduler_health: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _reachable_by(user: str, folder: Path) -> bool:
    """Whether ``user`` can traverse ``folder`` (and so every folder above it)."""
    try:
        return subprocess.run(["test", "-x", str(folder)], user=user, group=user, check=False).returncode == 0
    except OSError:
        return False


class Stack:
    """One stack: its state folder, configuration and processes.

    ``variables``: what the compose file is interpolated with (default: ``.env`` and the shell, as
    Compose does; ``AIRFLOW_API_PORT``, ``SMP_LOCAL_PORT`` and the ``SMP_AWS_*`` settings come from
    there). ``extra_env``: variables added to every Airflow service (tests:
    ``AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL``).
    ``endpoint_args``: extra ``sagemaker-pipelines-local serve`` options (tests:
    ``--default-step-duration``).
    """

    def __init__(
        self,
        state_dir: Path | str = DEFAULT_STATE_DIR,
        *,
        variables: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        endpoint_args: Sequence[str] = (),
        install: bool = True,
        report: Callable[[str], None] = print,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.variables = dict(variables) if variables is not None else compose_variables(os.environ)
        self.extra_env = dict(extra_env or {})
        self.endpoint_args = list(endpoint_args)
        self.install = install
        self.report = report
        self.records: dict[str, ProcessRecord] = {}
        self.ports: Ports | None = None
        self.airflow_env: dict[str, str] = {}
        self.started_in: float | None = None
        self._popens: dict[str, subprocess.Popen[bytes]] = {}
        self._api: AirflowApi | None = None
        self._load_state()

    # ---------------------------------------------------------------------------------------------
    # layout and configuration

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _ports(self) -> Ports:
        if self.ports is None:
            raise StackError(f"the stack in {self.state_dir} was never started (make stack)")
        return self.ports

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self._ports().api}"

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self._ports().local}"

    def compose(self) -> dict[str, Any]:
        return load_compose(self.variables)

    def login(self) -> tuple[str, str]:
        """The UI login: ``_AIRFLOW_WWW_USER_USERNAME`` / ``_PASSWORD`` of compose's airflow-init."""
        init = environment(self.compose()["services"]["airflow-init"])
        return init["_AIRFLOW_WWW_USER_USERNAME"], init["_AIRFLOW_WWW_USER_PASSWORD"]

    def _postgres_login(self) -> tuple[str, str, str]:
        env = environment(self.compose()["services"]["postgres"])
        return env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]

    def configure(self) -> dict[str, str]:
        """Choose the ports and compute the Airflow environment (what :meth:`up` starts with)."""
        document = self.compose()
        self.ports = Ports(
            api=published_port(document, "airflow-apiserver", SERVICE_PORTS["airflow-apiserver"]),
            local=published_port(document, "sagemaker-local", SERVICE_PORTS["sagemaker-local"]),
            postgres=free_port(),
            redis=free_port(),
            scheduler_health=free_port(),
        )
        service_ports = {
            "postgres": self.ports.postgres,
            "redis": self.ports.redis,
            "sagemaker-local": self.ports.local,
            "airflow-apiserver": self.ports.api,
        }
        common = environment(document["x-airflow-common"])
        self.airflow_env = {
            **airflow_environment(common, service_ports, self.state_dir, self.ports.scheduler_health),
            **self.extra_env,
        }
        return self.airflow_env

    def base_env(self) -> dict[str, str]:
        """The inherited environment every service starts from: the caller's, minus Airflow and AWS
        settings (:data:`DROPPED_PREFIXES`), with the venv's ``bin`` first on the PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES)}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def env(self, hostname: str | None = None) -> dict[str, str]:
        """The full environment of an Airflow process (``hostname``: its ``STACK_HOSTNAME``); without
        one it is what ``airflow`` CLI commands against this stack need."""
        env = {**self.base_env(), **self.airflow_env}
        if hostname:
            env[HOSTNAME_ENV] = hostname
        return env

    # ---------------------------------------------------------------------------------------------
    # state

    def _load_state(self) -> None:
        if not self.state_file.is_file():
            return
        state = json.loads(self.state_file.read_text(encoding="utf-8"))
        self.ports = Ports(**state["ports"])
        self.airflow_env = dict(state["airflow_env"])
        self.records = {n: ProcessRecord.from_json(r) for n, r in state["processes"].items()}

    def _save_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "ports": asdict(self._ports()),
            "airflow_env": self.airflow_env,
            "processes": {n: r.to_json() for n, r in self.records.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def running(self) -> dict[str, bool]:
        """Each recorded service and whether its process is alive."""
        return {name: record.alive() for name, record in self.records.items()}

    # ---------------------------------------------------------------------------------------------
    # start

    def up(self, timeout: float = 300.0) -> None:
        """Start every service and return once all are healthy (see the module docstring)."""
        status = self.running()
        if status and all(status.values()) and set(status) >= {*BASE_SERVICES, *AIRFLOW_SERVICES}:
            self.report(f"the stack is already running\n{self.summary()}")
            return
        if any(status.values()):
            dead = ", ".join(n for n, alive in status.items() if not alive) or "none"
            raise StackError(
                f"the stack is partly running (not running: {dead}): run `make stack-down` first"
            )
        started = time.monotonic()
        self.records = {}
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            servers = ensure_servers(self.logs_dir / "install.log", self.install)
            self.configure()
            ports = self._ports()
            for variable, port in (("AIRFLOW_API_PORT", ports.api), ("SMP_LOCAL_PORT", ports.local)):
                if not _port_free(port):
                    raise StackError(
                        f"port {port} is in use: stop what holds it or set {variable} to a free port"
                    )
            self._save_state()
            self.report(f"starting the stack in {self.state_dir} ...")
            self._start_base(servers)
            self._init_airflow(servers)
            for name in AIRFLOW_SERVICES:
                self._start_airflow_service(name)
            health.wait_healthy(
                {name: self._health_check(name) for name in AIRFLOW_SERVICES},
                self.records,
                timeout,
                self.report,
            )
            self.api().ensure_pool(POOL.name, POOL.slots, POOL.description, POOL.include_deferred)
        except BaseException:
            self.down()
            raise
        self.started_in = time.monotonic() - started
        self.report(self.summary())
        self.report(f"the stack started in {self.started_in:.1f}s")

    def summary(self) -> str:
        user, password = self.login()
        return "\n".join(
            [
                f"Airflow UI and REST API: {self.api_url}  (login: {user} / {password})",
                f"Local AWS endpoint:      {self.endpoint_url}",
                f"Logs:                    {self.logs_dir}/<service>.log",
                "Airflow CLI:             .venv/bin/python -m stack airflow <command>",
                "Stop:                    make stack-down",
            ]
        )

    def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        record_env: Mapping[str, str] | None = None,
    ) -> ProcessRecord:
        popen, record = spawn(
            name,
            argv,
            env,
            self.logs_dir / f"{name}.log",
            cwd=REPO,
            user=user,
            stop_signal=stop_signal,
            record_env=record_env,
        )
        self._popens[name] = popen
        self.records[name] = record
        self._save_state()
        return record

    def _start_base(self, servers: Servers) -> None:
        ports = self._ports()
        pgdata, pg_user = self._init_postgres(servers)
        self._spawn(
            "postgres",
            [
                str(servers.postgres_bin / "postgres"),
                "-D",
                str(pgdata),
                "-p",
                str(ports.postgres),
                "-c",
                f"listen_addresses={LOOPBACK}",
                "-c",
                "unix_socket_directories=",
                *(arg for setting in POSTGRES_SETTINGS for arg in ("-c", setting)),
            ],
            self.base_env(),
            user=pg_user,
            stop_signal=signal.SIGINT,  # PostgreSQL's fast shutdown (SIGTERM waits for clients)
        )
        redis_dir = self.state_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        self._spawn(
            "redis",
            [
                str(servers.redis_server),
                "--bind",
                LOOPBACK,
                "--port",
                str(ports.redis),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(redis_dir),
            ],
            self.base_env(),
        )
        endpoint_env = {**self.base_env(), **environment(self.compose()["services"]["sagemaker-local"])}
        self._spawn(
            "sagemaker-local",
            [
                str(BIN / "sagemaker-pipelines-local"),
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                str(ports.local),
                "--seed",
                *self.endpoint_args,
            ],
            endpoint_env,
        )
        pg_user_name = self._postgres_login()[0]
        health.wait_healthy(
            {
                "postgres": lambda: health.command_ok(
                    [
                        str(servers.postgres_bin / "pg_isready"),
                        "-h",
                        LOOPBACK,
                        "-p",
                        str(ports.postgres),
                        "-U",
                        pg_user_name,
                    ],
                    timeout=10,
                ),
                "redis": lambda: health.redis_ping(ports.redis),
                "sagemaker-local": lambda: health.http_ok(f"{self.endpoint_url}/_local/health"),
            },
            self.records,
            timeout=120,
            report=self.report,
        )

    def _pgdata(self) -> tuple[Path, str | None]:
        """The cluster's folder and the user to run PostgreSQL as (it refuses to run as root)."""
        link = self.state_dir / "pgdata"
        if os.geteuid() != 0:
            return link, None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise StackError(
                "running as root, PostgreSQL needs the unprivileged 'postgres' user (created by Debian's "
                "postgresql package): create it, or run make stack as a normal user"
            ) from None
        if link.is_symlink():
            return link.resolve(), "postgres"
        if link.exists() or _reachable_by("postgres", self.state_dir):
            return link, "postgres"
        # The postgres user cannot reach the state folder (e.g. a home folder with mode 700): keep the
        # cluster in the temp dir, linked from the state folder.
        digest = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:12]
        target = Path(tempfile.gettempdir()) / f"smp-stack-pgdata-{digest}"
        target.mkdir(mode=0o700, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
        return target, "postgres"

    def _init_postgres(self, servers: Servers) -> tuple[Path, str | None]:
        pgdata, pg_user = self._pgdata()
        if (pgdata / "PG_VERSION").is_file():
            return pgdata, pg_user
        pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if pg_user:
            shutil.chown(pgdata, pg_user, pg_user)
        user, password, _ = self._postgres_login()
        self.report("  postgres         initdb ...")
        # The password goes through a file only the server's user can read (a pipe would stay root's).
        fd, pwfile = tempfile.mkstemp(prefix="smp-stack-pw-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{password}\n")
            if pg_user:
                shutil.chown(pwfile, pg_user, pg_user)
            with (self.logs_dir / "postgres.log").open("ab") as log:
                result = subprocess.run(
                    [
                        str(servers.postgres_bin / "initdb"),
                        "-D",
                        str(pgdata),
                        "-U",
                        user,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.base_env(),
                    cwd="/",
                    user=pg_user,
                    group=pg_user,
                    extra_groups=[] if pg_user else None,
                    check=False,
                )
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            raise StackError(
                f"initdb failed; end of {self.logs_dir / 'postgres.log'}:\n"
                f"{health.log_tail(self.logs_dir / 'postgres.log')}"
            )
        return pgdata, pg_user

    def _init_airflow(self, servers: Servers) -> None:
        """What compose's airflow-init does: the database, ``airflow db migrate``, the UI password."""
        user, password, database = self._postgres_login()
        psql = [
            str(servers.postgres_bin / "psql"),
            "-h",
            LOOPBACK,
            "-p",
            str(self._ports().postgres),
            "-U",
            user,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
        ]
        pg_env = {**self.base_env(), "PGPASSWORD": password}
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
            env=pg_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if exists.returncode != 0:
            raise StackError(f"cannot query PostgreSQL: {exists.stderr.strip()}")
        if exists.stdout.strip() != "1":
            subprocess.run(
                [*psql, f'CREATE DATABASE "{database}"'], env=pg_env, capture_output=True, check=True
            )
        self.report("  airflow db migrate ...")
        began = time.monotonic()
        with (self.logs_dir / "airflow-init.log").open("ab") as log:
            code = subprocess.call(
                [str(BIN / "airflow"), "db", "migrate"],
                env=self.env("airflow-init"),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if code != 0:
            log_path = self.logs_dir / "airflow-init.log"
            raise StackError(f"airflow db migrate failed; end of {log_path}:\n{health.log_tail(log_path)}")
        self.report(f"  airflow db migrate done in {time.monotonic() - began:.1f}s")
        passwords = Path(self.airflow_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        passwords.parent.mkdir(parents=True, exist_ok=True)
        if not passwords.is_file() or passwords.stat().st_size == 0:  # as airflow-init: written once
            login_user, login_password = self.login()
            passwords.write_text(json.dumps({login_user: login_password}) + "\n", encoding="utf-8")

    def _airflow_argv(self, name: str) -> list[str]:
        airflow = str(BIN / "airflow")
        if name == "api-server":
            return [airflow, "api-server", "--host", LOOPBACK, "--port", str(self._ports().api)]
        if name == "scheduler":
            return [airflow, "scheduler", "--skip-serve-logs"]
        if name == "dag-processor":
            return [airflow, "dag-processor"]
        if name.startswith("triggerer"):
            return [airflow, "triggerer", "--skip-serve-logs"]
        if name == "worker":
            return [airflow, "celery", "worker", "--skip-serve-logs"]
        raise KeyError(name)

    def _start_airflow_service(self, name: str) -> ProcessRecord:
        return self._spawn(name, self._airflow_argv(name), self.env(name), record_env={HOSTNAME_ENV: name})

    def celery_node(self) -> str:
        """The worker's Celery node name (Celery's default: ``celery@<host name>``)."""
        return f"celery@{socket.gethostname()}"

    def _health_check(self, name: str) -> health.Check:
        if name == "api-server":
            return lambda: health.http_ok(f"{self.api_url}/api/v2/monitor/health")
        if name == "scheduler":
            return lambda: health.http_ok(f"http://{LOOPBACK}:{self._ports().scheduler_health}/health")
        if name == "worker":
            argv = [str(BIN / "celery"), "--app", CELERY_APP, "inspect", "ping", "-d", self.celery_node()]
            return lambda: health.command_ok(argv, self.env(), timeout=60)
        job_type = "DagProcessorJob" if name == "dag-processor" else "TriggererJob"
        return lambda: self._job_alive(job_type, name)

    def _job_alive(self, job_type: str, hostname: str) -> bool:
        if not health.http_ok(f"{self.api_url}/api/v2/monitor/health"):
            return False
        try:
            return bool(self.api().alive_jobs(job_type, hostname))
        except (StackError, OSError):
            return False

    # ---------------------------------------------------------------------------------------------
    # use

    def api(self) -> AirflowApi:
        """A REST client logged in as the UI user."""
        if self._api is None:
            user, password = self.login()
            self._api = AirflowApi(self.api_url, user, password)
        return self._api

    def airflow(
        self, *args: str, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` against this stack (its environment), output captured."""
        result = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise StackError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a service's whole process group (as when its container dies)."""
        record = self.records[name]
        if record.process() is None:
            raise StackError(f"{name} is not running")
        os.killpg(record.pid, sig)
        popen = self._popens.get(name)
        if popen is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=30)

    def restart(self, name: str, timeout: float = 180.0) -> ProcessRecord:
        """Start an Airflow service again (after :meth:`kill`; a running one is stopped first), and wait
        until it is healthy."""
        if name not in AIRFLOW_SERVICES:
            raise StackError(f"only Airflow services restart alone, not {name!r}")
        if self.records[name].alive():
            stop([self.records[name]])
        record = self._start_airflow_service(name)
        health.wait_healthy({name: self._health_check(name)}, self.records, timeout, self.report)
        return record

    # ---------------------------------------------------------------------------------------------
    # stop

    def down(self, remove_data: bool = False) -> list[str]:
        """Stop exactly the processes this stack recorded (Airflow first, then the endpoint, Redis and
        PostgreSQL); the names that were running. ``remove_data``: also delete the database, Redis's
        folder, the configuration and the state file (the logs stay)."""
        airflow = [self.records[n] for n in AIRFLOW_SERVICES if n in self.records]
        others = [r for n, r in self.records.items() if n not in AIRFLOW_SERVICES]
        stopped = stop(airflow, timeout=30) + stop(others, timeout=30)
        for popen in self._popens.values():  # reap our own children
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
        self._popens.clear()
        if remove_data:
            link = self.state_dir / "pgdata"
            if link.is_symlink():
                shutil.rmtree(link.resolve(), ignore_errors=True)
                link.unlink()
            for name in ("pgdata", "redis", "config"):
                shutil.rmtree(self.state_dir / name, ignore_errors=True)
            self.state_file.unlink(missing_ok=True)
            self.records = {}
        elif self.ports is not None:
            self._save_state()
        return stopped
