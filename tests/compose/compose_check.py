"""Offline checks of ``docker-compose.yaml``, ``Dockerfile`` and ``.dockerignore`` (no Docker engine).

:func:`validate` returns a list of :class:`Problem` (empty when everything holds); every problem names
where it is (``service 'airflow-worker'``, ``Dockerfile``, ...) and what is wrong. The checks:

Compose file
    * Interpolation as Compose does it (``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
      ``${VAR:?error}``, ``${VAR:+alt}``, nested defaults), evaluated with the given variables (none by
      default: a fresh checkout without ``.env``). Every ``${VAR}`` must carry a default or be explicitly
      required (``:?``); a ``$`` that is neither ``$$`` nor a variable is an error, as in Compose.
    * The interpolated document against the Compose Specification JSON schema (``compose-spec.json``).
    * ``depends_on`` names are services of the file, targets of ``service_healthy`` have a healthcheck,
      no dependency cycle, named volumes are declared.
    * Every service has a healthcheck, except one-shot services (those others wait for with
      ``service_completed_successfully``).
    * Every command resolves (entrypoint + command, healthchecks, ``bash -c`` scripts): ``airflow ...``
      parses with Airflow's own CLI parser (``airflow.cli.cli_parser.get_parser()``; provider command
      groups of the official image that are not installed here, such as ``celery``, come from
      :data:`PROVIDER_CLI_GROUPS`); a console script must be declared in ``pyproject.toml``
      ``[project.scripts]``, its target must import, and its arguments must parse with its own argparse
      parser; any other executable must be listed for its image in :data:`IMAGE_EXECUTABLES`. A service
      built from the Dockerfile without an entrypoint runs the official image's entrypoint, which runs
      ``bash``/``python`` as they are and anything else as ``airflow <command>``.
    * Healthchecks that ``curl http://localhost:PORT`` hit a port the service listens on.
    * Environment of every Airflow service: the CeleryExecutor settings of the official file are set and
      equal across services, and their URLs name services of the file (postgres, redis, the api-server);
      every variable the provider's code reads for AWS is set — the names come from the code itself,
      :func:`sagemaker_pipelines_provider.local.server.endpoint_environ`; ``AWS_ENDPOINT_URL`` (when not
      empty) is ``http://<service>:<port>`` of a service serving the local endpoint on that port and on a
      non-loopback host; the variables the code unsets (``ENV_TO_UNSET``) are empty; ``AWS_*`` names are
      known ones and ``AIRFLOW__SECTION__KEY`` names exist in Airflow's configuration (typos);
      ``AIRFLOW_CONN_AWS_DEFAULT`` parses as an ``aws`` connection; ``_PIP_ADDITIONAL_REQUIREMENTS`` is
      not used.

Dockerfile and .dockerignore
    * ``FROM apache/airflow:<version>-python<X.Y>`` with the ``apache-airflow`` version pinned in
      ``constraints.txt`` and the Python of its header (within ``requires-python``).
    * ``pip install`` runs as the ``airflow`` user with ``-c`` on a file copied from ``constraints.txt``,
      on the project copied from this repository (``pyproject.toml``, its ``readme``, the package
      folder) with the ``local`` extra; the image ends as the ``airflow`` user.
    * Every ``COPY`` source exists and is not excluded by ``.dockerignore``; the package's non-Python
      files are shipped by ``[tool.setuptools.package-data]`` (a non-editable install drops the rest).

Not checked (needs a Docker engine): that images pull and build, that pip resolves the constraints on top
of the official image, that containers start and become healthy, and Compose's own merge semantics beyond
YAML merge keys.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fnmatch
import functools
import importlib
import inspect
import io
import json
import posixpath
import re
import shlex
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

from stack.compose import (  # interpolate: re-exported for the tests
    InterpolationError,
    VariableUse,
    interpolate,  # noqa: F401
    interpolate_tree,
)

HERE = Path(__file__).resolve().parent
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
SCHEMA_PATH = HERE / "compose-spec.json"

# Executables each third-party image provides (beyond Airflow subcommands and this project's console
# scripts). Keys are image repositories without tag. The Airflow image's list is the official image's.
IMAGE_EXECUTABLES: dict[str, frozenset[str]] = {
    "apache/airflow": frozenset(
        {
            "airflow",
            "bash",
            "/bin/bash",
            "sh",
            "/bin/sh",
            "python",
            "python3",
            "pip",
            "curl",
            "celery",
            "/entrypoint",
            "/usr/bin/dumb-init",
        }
    ),
    "postgres": frozenset({"pg_isready", "psql", "postgres", "bash", "sh", "/bin/sh"}),
    "redis": frozenset({"redis-cli", "redis-server", "sh", "/bin/sh", "bash"}),
}
# The official image's entrypoint runs these as they are; anything else becomes `airflow <command>`.
AIRFLOW_ENTRYPOINT_DIRECT = frozenset({"bash", "python"})
# Airflow CLI groups added by providers that the official image ships, for a venv without them (the
# CeleryExecutor's commands come from apache-airflow-providers-celery, in the `stack` extra); when the
# provider is installed, Airflow's own parser checks its commands.
PROVIDER_CLI_GROUPS: dict[str, frozenset[str]] = {
    "celery": frozenset(
        {"worker", "flower", "stop", "list-workers", "shutdown-worker", "shutdown-all-workers"}
    ),
}
# Configuration sections of those providers: any option is accepted there (not introspectable here).
PROVIDER_CONFIG_SECTIONS = frozenset(
    {"celery", "celery_broker_transport_options", "celery_kubernetes_executor"}
)
# Variables the official image's entrypoint or Airflow itself reads (besides AIRFLOW__SECTION__KEY).
IMAGE_ENV_NAMES = frozenset(
    {
        "AIRFLOW_CONFIG",
        "AIRFLOW_HOME",
        "AIRFLOW_UID",
        "CONNECTION_CHECK_MAX_COUNT",
        "CONNECTION_CHECK_SLEEP_TIME",
        "DUMB_INIT_SETSID",
        "_AIRFLOW_DB_MIGRATE",
        "_AIRFLOW_WWW_USER_CREATE",
        "_AIRFLOW_WWW_USER_USERNAME",
        "_AIRFLOW_WWW_USER_PASSWORD",
        "_PIP_ADDITIONAL_REQUIREMENTS",
    }
)
# AWS variables boto3 reads that the stack may set besides the ones the code exports.
EXTRA_AWS_ENV_NAMES = frozenset({"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_MAX_ATTEMPTS"})
# The CeleryExecutor stack's settings (Airflow's official docker-compose.yaml): required in every Airflow
# service, and equal across them.
REQUIRED_AIRFLOW_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__FERNET_KEY",
)
NON_EMPTY_AIRFLOW_ENV = frozenset(REQUIRED_AIRFLOW_ENV) - {"AIRFLOW__CORE__FERNET_KEY"}
SHELL_WORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "exec"})
SHELL_BUILTINS = frozenset({"echo", "test", "[", "[[", "exit", "true", "false", "printf", "set"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _service(name: str) -> str:
    return f"service {name!r}"


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------------------------------------
# Interpolation: the stack's own (``stack.compose``), so that the checks and ``make stack`` read the file
# identically.


def _path_where(path: tuple[Any, ...]) -> str:
    if len(path) >= 2 and path[0] == "services":
        rest = ".".join(str(p) for p in path[2:])
        return f"{_service(str(path[1]))}{': ' + rest if rest else ''}"
    return "compose file: " + ".".join(str(p) for p in path)


# --------------------------------------------------------------------------------------------------------
# Project facts (pyproject, constraints, the code's environment, CLIs)


@dataclass
class Project:
    root: Path
    pyproject: dict[str, Any]
    constraints: dict[str, str]
    constraints_python: str | None
    scripts: dict[str, str]
    code_env: dict[str, str]
    env_to_unset: tuple[str, ...]
    env_to_unset_prefixes: tuple[str, ...]
    control_prefix: str

    @property
    def optional_extras(self) -> set[str]:
        return set(self.pyproject.get("project", {}).get("optional-dependencies", {}))


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(text: str) -> tuple[dict[str, str], str | None]:
    pins: dict[str, str] = {}
    python = None
    for line in text.splitlines():
        header = re.match(r"#.*\bPython (\d+\.\d+)", line)
        if header and python is None:
            python = header.group(1)
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_normalise(name.strip())] = version.strip()
    return pins, python


def code_environment() -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...], str]:
    """The AWS environment the provider's code exports and reads, from the code (single source)."""
    from sagemaker_pipelines_provider.local import server

    env = server.endpoint_environ("http://endpoint.invalid:1", server.DEFAULT_REGION)
    return env, tuple(server.ENV_TO_UNSET), tuple(server.ENV_TO_UNSET_PREFIXES), server.CONTROL_PREFIX


def load_project(root: Path) -> Project:
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    constraints, python = read_constraints((root / "constraints.txt").read_text(encoding="utf-8"))
    env, unset, prefixes, control_prefix = code_environment()
    return Project(
        root=root,
        pyproject=pyproject,
        constraints=constraints,
        constraints_python=python,
        scripts=dict(pyproject.get("project", {}).get("scripts", {})),
        code_env=env,
        env_to_unset=unset,
        env_to_unset_prefixes=prefixes,
        control_prefix=control_prefix,
    )


@functools.cache
def airflow_parser() -> argparse.ArgumentParser:
    from airflow.cli import cli_parser

    return cli_parser.get_parser()


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """Parse ``argv`` without running anything: (namespace, "") or (None, the parser's error)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv), ""
    except SystemExit as exit_:
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        return None, (lines[-1] if lines else f"exit status {exit_.code}")


def check_airflow_argv(argv: list[str]) -> str | None:
    """None if ``airflow <argv>`` is a valid command line of the image's Airflow, else the error."""
    if not argv:
        return "no airflow subcommand"
    parser = airflow_parser()
    if argv[0] in PROVIDER_CLI_GROUPS and argv[0] not in _subcommands(parser):
        allowed = PROVIDER_CLI_GROUPS[argv[0]]
        if len(argv) < 2 or argv[1] not in allowed:
            got = argv[1] if len(argv) > 1 else "nothing"
            return (
                f"'airflow {argv[0]}' takes one of {sorted(allowed)}, not {got!r}"
                f"{_suggest(got, allowed) if len(argv) > 1 else ''}"
            )
        return None
    namespace, error = _parse(parser, argv)
    if namespace is None:
        choices = _subcommands(parser) | set(PROVIDER_CLI_GROUPS)
        hint = _suggest(argv[0], choices) if argv[0] not in choices else ""
        invalid = _INVALID_CHOICE.search(error)
        if not hint and invalid:  # a nested subcommand (e.g. `airflow celery wroker`) the parser rejected
            hint = _suggest(invalid["got"], re.findall(r"'([^']+)'", invalid["choices"]))
        return f"{error}{hint}"
    return None


_INVALID_CHOICE = re.compile(r"invalid choice: '(?P<got>[^']*)' \(choose from (?P<choices>[^)]*)\)")


@functools.cache
def script_parser(target: str) -> argparse.ArgumentParser:
    """The argparse parser of a console script ``module:function`` (a parser factory of its module)."""
    module_name, _, _attr = target.partition(":")
    module = importlib.import_module(module_name)
    for name, member in inspect.getmembers(module, inspect.isfunction):
        if "parser" not in name.lower() or member.__module__ != module.__name__:
            continue
        params = inspect.signature(member).parameters.values()
        if any(
            p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params
        ):
            continue
        parser = member()
        if isinstance(parser, argparse.ArgumentParser):
            return parser
    raise LookupError(f"no argparse parser factory (a function named '*parser*') in {module_name}")


def check_script_target(target: str) -> str | None:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the finding
        return f"its target {target} does not import: {exc!r}"
    if not callable(getattr(module, attr, None)):
        return f"its target {target} has no callable {attr!r}"
    return None


# --------------------------------------------------------------------------------------------------------
# Shell scripts: the simple commands of a `bash -c` script or a CMD-SHELL healthcheck (best effort)

_SUBSTITUTION = re.compile(r"\$\([^()]*\)|\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_SEPARATORS = frozenset({"||", "&&", ";", "|", "&", "(", ")", ";;"})
_REDIRECTS = (">", ">>", "<", ">&", "&>", "<<", ">|")


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of ``script``: token lists, variables replaced by ``VALUE``."""
    return [list(command) for command in _shell_commands(script)]


@functools.lru_cache(maxsize=256)
def _shell_commands(script: str) -> tuple[tuple[str, ...], ...]:
    commands: list[list[str]] = []
    for line in script.splitlines():
        line = _SUBSTITUTION.sub("VALUE", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:
            continue
        current: list[str] = []
        for token in [*tokens, ";"]:
            if token in _SEPARATORS:
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return tuple(tuple(stripped) for command in commands if (stripped := _strip_command(command)))


def _strip_command(tokens: list[str]) -> list[str]:
    while tokens and (tokens[0] in SHELL_WORDS or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0])):
        tokens = tokens[1:]
    for index, token in enumerate(tokens):
        if token.startswith(_REDIRECTS):
            end = index - 1 if index and tokens[index - 1].isdigit() else index
            return tokens[:end]
    return tokens


# --------------------------------------------------------------------------------------------------------
# Services


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    from_project: bool  # built from this repository's Dockerfile
    image_repo: str  # the image repository whose executables apply ("apache/airflow" for our image)
    argv: list[str] = field(default_factory=list)  # effective process argv ([] = image default)
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def console_script(self) -> str | None:
        """The main process when it is not one of the Airflow image's executables (a console script)."""
        if self.from_project and self.argv and self.argv[0] not in IMAGE_EXECUTABLES["apache/airflow"]:
            return self.argv[0]
        return None

    @property
    def airflow_args(self) -> list[str] | None:
        """The arguments after `airflow` when the service's main process is the Airflow CLI."""
        if self.from_project and self.argv and self.argv[0] == "airflow":
            return self.argv[1:]
        return None


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {
        str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()
    }


def _image_repo(image: str) -> str:
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image = image[: len(image) - len(last)] + last.split(":", 1)[0]
    return image.removeprefix("docker.io/").removeprefix("library/")


def build_services(compose: dict[str, Any], base_image: str | None) -> dict[str, Service]:
    services: dict[str, Service] = {}
    for name, spec in (compose.get("services") or {}).items():
        spec = spec or {}
        from_project = "build" in spec
        repo = _image_repo(base_image) if from_project and base_image else _image_repo(spec.get("image", ""))
        entrypoint, command = _as_list(spec.get("entrypoint")), _as_list(spec.get("command"))
        if entrypoint:
            argv = entrypoint + command
        elif from_project and command:
            argv = command if command[0] in AIRFLOW_ENTRYPOINT_DIRECT | {"airflow"} else ["airflow", *command]
        else:
            argv = command
        services[name] = Service(name, spec, from_project, repo, argv, _environment(spec))
    return services


def _depends_on(spec: dict[str, Any]) -> dict[str, str]:
    deps = spec.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (cond or {}).get("condition", "service_started") for name, cond in deps.items()}


def _healthcheck_test(spec: dict[str, Any]) -> list[str] | None:
    health = spec.get("healthcheck")
    if not health or str(health.get("disable", "false")).lower() == "true":
        return None
    test = health.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return None
    return [str(t) for t in test]


# --------------------------------------------------------------------------------------------------------
# Checks


class Checker:
    def __init__(self, project: Project, compose: dict[str, Any], services: dict[str, Service]) -> None:
        self.project = project
        self.compose = compose
        self.services = services
        self.problems: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    # ---- commands

    def check_argv(self, service: Service, argv: list[str], what: str, *, strict: bool = True) -> None:
        """One command line run in ``service``'s image (``what`` says where it comes from)."""
        where = _service(service.name)
        if not argv:
            return
        exe = argv[0]
        if exe == "/entrypoint" and service.from_project:
            argv = argv[1:]
            exe = argv[0] if argv else ""
        if exe == "airflow" and service.image_repo == "apache/airflow":
            error = check_airflow_argv(argv[1:])
            if error:
                self.add(where, f"{what}: `{shlex.join(argv)}` is not an Airflow command: {error}")
            return
        if exe in ("bash", "/bin/bash", "sh", "/bin/sh") and len(argv) >= 3 and argv[1] == "-c":
            if exe not in IMAGE_EXECUTABLES.get(service.image_repo, frozenset()):
                self.add(where, f"{what}: {exe!r} is not in image {service.image_repo!r}")
            for command in shell_commands(argv[2]):
                self.check_argv(service, command, f"{what} (shell script)", strict=False)
            return
        if service.from_project and (exe in self.project.scripts or _looks_like_script(exe, self.project)):
            self.check_console_script(service, argv, what)
            return
        if not strict or exe in SHELL_BUILTINS:
            return  # inside `bash -c` scripts only Airflow and console-script invocations are checked
        known = IMAGE_EXECUTABLES.get(service.image_repo)
        if known is None:
            self.add(
                where, f"{what}: image {service.image_repo!r} has no executable list (IMAGE_EXECUTABLES)"
            )
        elif exe not in known:
            suggestion = _suggest(exe, [*known, *self.project.scripts])
            self.add(
                where, f"{what}: command {exe!r} does not exist in image {service.image_repo!r}{suggestion}"
            )

    def check_console_script(self, service: Service, argv: list[str], what: str) -> None:
        where, exe = _service(service.name), argv[0]
        target = self.project.scripts.get(exe)
        if target is None:
            self.add(
                where,
                f"{what}: console script {exe!r} is not declared in pyproject.toml [project.scripts]"
                f"{_suggest(exe, self.project.scripts)}",
            )
            return
        error = check_script_target(target)
        if error:
            self.add(where, f"{what}: console script {exe!r}: {error}")
            return
        try:
            parser = script_parser(target)
        except (LookupError, ImportError) as exc:
            self.add(where, f"{what}: console script {exe!r}: {exc}")
            return
        namespace, error = _parse(parser, argv[1:])
        if namespace is None:
            self.add(where, f"{what}: `{shlex.join(argv)}` is rejected by {exe}: {error}")

    def check_commands(self) -> None:
        for service in self.services.values():
            if service.argv:
                self.check_argv(service, service.argv, "command")
            test = _healthcheck_test(service.spec)
            if test and test[0] == "CMD":
                self.check_argv(service, test[1:], "healthcheck")
            elif test and test[0] == "CMD-SHELL":
                for command in shell_commands(" ".join(test[1:])):
                    self.check_argv(service, command, "healthcheck")
            elif test:
                self.add(
                    _service(service.name), f"healthcheck: test must start with CMD or CMD-SHELL: {test}"
                )

    # ---- dependencies and healthchecks

    def check_graph(self) -> None:
        names = set(self.services)
        one_shot = {
            dep
            for service in self.services.values()
            for dep, condition in _depends_on(service.spec).items()
            if condition == "service_completed_successfully"
        }
        declared_volumes = set((self.compose.get("volumes") or {}).keys())
        for service in self.services.values():
            where = _service(service.name)
            for dep, condition in _depends_on(service.spec).items():
                if dep not in names:
                    self.add(
                        where,
                        f"depends_on {dep!r}, which is not a service of this file{_suggest(dep, names)}",
                    )
                elif condition == "service_healthy" and _healthcheck_test(self.services[dep].spec) is None:
                    self.add(where, f"depends_on {dep!r} being healthy, but {dep!r} has no healthcheck")
            if _healthcheck_test(service.spec) is None and service.name not in one_shot:
                self.add(where, "has no healthcheck (every long-running service needs one)")
            for volume in service.spec.get("volumes") or []:
                source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
                is_named = source and not source.startswith((".", "/", "~", "$"))
                if ":" in str(volume) and is_named and source not in declared_volumes:
                    self.add(where, f"uses volume {source!r}, which is not declared under top-level volumes")
        self._check_cycles()

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> None:
            if state.get(name) == 2 or name not in self.services:
                return
            if state.get(name) == 1:
                cycle = [*trail[trail.index(name) :], name]
                self.add(_service(name), f"depends_on cycle: {' -> '.join(cycle)}")
                return
            state[name] = 1
            for dep in _depends_on(self.services[name].spec):
                visit(dep, [*trail, name])
            state[name] = 2

        for name in self.services:
            visit(name, [])

    # ---- listening ports (for healthchecks and URLs)

    def listening_ports(self, service: Service) -> set[int] | None:
        """Ports the service's main process listens on, when known (None: unknown, e.g. third party)."""
        args = service.airflow_args
        if args is not None:
            env = service.environment
            if args[:1] == ["api-server"]:
                return {int(env.get("AIRFLOW__API__PORT") or 8080)}
            if args[:1] == ["scheduler"]:
                if env.get("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "").lower() != "true":
                    return set()
                return {int(env.get("AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT") or 8974)}
            return set()
        served = self.local_endpoint(service)
        if served is not None:
            return {served[1]}
        return None

    def local_endpoint(self, service: Service) -> tuple[str, int] | None:
        """(host, port) when the service runs the local endpoint (`<script> serve ...`)."""
        exe = service.console_script
        if not service.from_project or exe not in self.project.scripts:
            return None
        try:
            namespace, _ = _parse(script_parser(self.project.scripts[exe]), service.argv[1:])
        except (LookupError, ImportError):
            return None
        if namespace is None or getattr(namespace, "command", None) != "serve":
            return None
        return str(namespace.host), int(namespace.port)

    def check_healthcheck_ports(self) -> None:
        for service in self.services.values():
            test = _healthcheck_test(service.spec) or []
            ports = self.listening_ports(service)
            for url in re.findall(r"https?://[^\s\"']+", " ".join(test)):
                parts = urlsplit(url)
                if parts.hostname not in LOOPBACK_HOSTS or ports is None:
                    continue
                port = parts.port or 80
                if port not in ports:
                    listening = sorted(ports) or "nothing"
                    self.add(
                        _service(service.name),
                        f"healthcheck: {url} hits port {port}, but the service listens on {listening}",
                    )
                if self.local_endpoint(service) and not parts.path.startswith(self.project.control_prefix):
                    self.add(
                        _service(service.name),
                        f"healthcheck: {url} is not a control URL of the local endpoint "
                        f"({self.project.control_prefix}health)",
                    )

    # ---- environment

    def airflow_services(self) -> list[Service]:
        return [s for s in self.services.values() if s.from_project and s.console_script is None]

    def check_environment(self) -> None:
        airflow_services = self.airflow_services()
        reference: dict[str, tuple[str, str]] = {}
        for service in self.services.values():
            for name, value in service.environment.items():
                if name == "_PIP_ADDITIONAL_REQUIREMENTS" and value:
                    self.add(
                        _service(service.name),
                        "sets _PIP_ADDITIONAL_REQUIREMENTS; install packages in the Dockerfile instead",
                    )
        for service in airflow_services:
            where, env = _service(service.name), service.environment
            for name in REQUIRED_AIRFLOW_ENV:
                if name not in env or (name in NON_EMPTY_AIRFLOW_ENV and not env[name]):
                    self.add(
                        where,
                        f"environment variable {name} is not set (required by the CeleryExecutor stack)",
                    )
                    continue
                first = reference.setdefault(name, (service.name, env[name]))
                if first[1] != env[name]:
                    self.add(where, f"environment variable {name} differs from service {first[0]!r}'s")
            if env.get("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor") != "CeleryExecutor":
                self.add(
                    where, "AIRFLOW__CORE__EXECUTOR is not CeleryExecutor (this stack runs Celery workers)"
                )
            self._check_url_hosts(service)
            self._check_code_environment(service)
            self._check_names(service)

    def _check_url_hosts(self, service: Service) -> None:
        where, env = _service(service.name), service.environment
        for name in (
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CELERY__BROKER_URL",
            "AIRFLOW__CELERY__RESULT_BACKEND",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        ):
            value = env.get(name)
            if not value or "://" not in value:
                continue
            host = urlsplit(value).hostname
            if host and host not in self.services:
                self.add(
                    where,
                    f"{name} points at host {host!r}, which is not a service of this file"
                    f"{_suggest(host, self.services)}",
                )
        api_url = env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
        if api_url and urlsplit(api_url).hostname in self.services:
            target = self.services[urlsplit(api_url).hostname or ""]
            if (target.airflow_args or [])[:1] != ["api-server"]:
                self.add(
                    where,
                    f"AIRFLOW__CORE__EXECUTION_API_SERVER_URL: service {target.name!r} runs no api-server",
                )
            elif (urlsplit(api_url).port or 80) not in (self.listening_ports(target) or set()):
                self.add(
                    where,
                    f"AIRFLOW__CORE__EXECUTION_API_SERVER_URL: {target.name!r} does not listen on that port",
                )

    def _check_code_environment(self, service: Service) -> None:
        where, env = _service(service.name), service.environment
        source = "sagemaker_pipelines_provider.local.server.endpoint_environ"
        for name in self.project.code_env:
            if name not in env:
                self.add(
                    where,
                    f"environment variable {name} is not set (the provider's AWS clients read it: {source})",
                )
        for name, value in env.items():
            if (
                value
                and (name in self.project.env_to_unset or name.startswith(self.project.env_to_unset_prefixes))
                and env.get("AWS_ENDPOINT_URL")
            ):
                self.add(where, f"{name} is set while AWS_ENDPOINT_URL points at the local endpoint")
        endpoint = env.get("AWS_ENDPOINT_URL")
        if endpoint:
            self._check_endpoint_url(service, endpoint)
        connection = env.get("AIRFLOW_CONN_AWS_DEFAULT")
        if connection:
            error = _check_aws_connection(connection, endpoint or None)
            if error:
                self.add(where, f"AIRFLOW_CONN_AWS_DEFAULT: {error}")

    def _check_endpoint_url(self, service: Service, endpoint: str) -> None:
        where = _service(service.name)
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        target = self.services.get(host)
        if target is None:
            self.add(
                where,
                f"AWS_ENDPOINT_URL {endpoint!r} points at host {host!r}, which is not a service of this file"
                f"{_suggest(host, self.services)}",
            )
            return
        served = self.local_endpoint(target)
        if served is None:
            self.add(where, f"AWS_ENDPOINT_URL points at service {host!r}, which does not run `serve`")
            return
        bind, port = served
        if (parts.port or 80) != port:
            self.add(where, f"AWS_ENDPOINT_URL uses port {parts.port or 80}, but {host!r} serves on {port}")
        if bind in LOOPBACK_HOSTS:
            self.add(
                _service(host), f"serves on {bind}, which other containers cannot reach (use --host 0.0.0.0)"
            )
        if host not in _depends_on(service.spec):
            self.add(where, f"uses the local endpoint {host!r} but does not depend on it")

    def _check_names(self, service: Service) -> None:
        where = _service(service.name)
        known_aws = {*self.project.code_env, *self.project.env_to_unset, *EXTRA_AWS_ENV_NAMES}
        config = airflow_config_options()
        for name in service.environment:
            if name.startswith("AWS_"):
                if name not in known_aws and not name.startswith(self.project.env_to_unset_prefixes):
                    self.add(where, f"unknown AWS variable {name} (a typo?){_suggest(name, known_aws)}")
            elif name.startswith("AIRFLOW__"):
                parts = name.split("__")
                if len(parts) < 3:
                    self.add(where, f"{name} is not AIRFLOW__SECTION__KEY")
                    continue
                section, option = parts[1].lower(), "__".join(parts[2:]).lower()
                if section in PROVIDER_CONFIG_SECTIONS:
                    continue
                for suffix in ("_cmd", "_secret"):  # AIRFLOW__S__K_CMD / _SECRET variants of an option
                    if option not in config.get(section, set()) and option.endswith(suffix):
                        option = option.removesuffix(suffix)
                if section not in config:
                    self.add(
                        where,
                        f"{name}: Airflow has no configuration section [{section}]"
                        f"{_suggest(section, config)}",
                    )
                elif option not in config[section]:
                    self.add(
                        where,
                        f"{name}: Airflow has no option {option!r} in [{section}]"
                        f"{_suggest(option, config[section])}",
                    )
            elif name.startswith("AIRFLOW_CONN_") or name.startswith("AIRFLOW_VAR_"):
                continue
            elif name.startswith(("AIRFLOW", "_AIRFLOW", "_PIP")) and name not in IMAGE_ENV_NAMES:
                self.add(where, f"unknown Airflow image variable {name}{_suggest(name, IMAGE_ENV_NAMES)}")


@functools.cache
def airflow_config_options() -> dict[str, set[str]]:
    from airflow.configuration import retrieve_configuration_description

    description = retrieve_configuration_description(include_airflow=True, include_providers=False)
    return {section: set(body.get("options", {})) for section, body in description.items()}


def _check_aws_connection(value: str, endpoint: str | None) -> str | None:
    if value.lstrip().startswith("{"):
        try:
            conn = json.loads(value)
        except json.JSONDecodeError as exc:
            return f"not valid JSON: {exc}"
        conn_type = conn.get("conn_type")
        extra = conn.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra or "{}")
    else:
        parts = urlsplit(value)
        conn_type = parts.scheme
        extra = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if conn_type != "aws":
        return f"conn_type is {conn_type!r}, not 'aws'"
    if extra.get("endpoint_url") and extra["endpoint_url"] != endpoint:
        return f"its endpoint_url {extra['endpoint_url']!r} differs from AWS_ENDPOINT_URL {endpoint!r}"
    return None


def _looks_like_script(exe: str, project: Project) -> bool:
    """A command that resembles one of the project's console scripts (so a typo is reported as such)."""
    return any(difflib.SequenceMatcher(None, exe, script).ratio() > 0.8 for script in project.scripts)


# --------------------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = ""
    return instructions


class DockerIgnore:
    """``.dockerignore`` semantics (moby patternmatcher): last matching pattern wins, parents match."""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
            self.patterns.append((negate, re.compile(_glob_regex(pattern))))

    def excluded(self, path: str) -> bool:
        path = posixpath.normpath(path).lstrip("/")
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, regex in self.patterns:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                result = not negate
        return result


def _glob_regex(pattern: str) -> str:
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return "".join(out)


def check_dockerfile(
    project: Project, dockerfile: str, dockerignore: str | None, where: str = "Dockerfile"
) -> list[Problem]:
    problems: list[Problem] = []

    def add(message: str, line: int | None = None) -> None:
        problems.append(Problem(f"{where}{f' line {line}' if line else ''}", message))

    instructions = parse_dockerfile(dockerfile)
    ignore = DockerIgnore(dockerignore or "")
    froms = [i for i in instructions if i.keyword == "FROM"]
    if len(froms) != 1:
        add(f"expected exactly one FROM (the official Airflow image), found {len(froms)}")
    else:
        _check_from(project, froms[0], add)

    workdir, user = PurePosixPath("/opt/airflow"), "airflow"
    files: dict[PurePosixPath, Path] = {}  # container path -> repository path (files and folders)
    installs = 0
    for inst in instructions:
        if inst.keyword == "WORKDIR":
            workdir = workdir / inst.args
        elif inst.keyword == "USER":
            user = inst.args.split(":", 1)[0]
        elif inst.keyword in ("COPY", "ADD"):
            tokens = [t for t in shlex.split(inst.args) if not t.startswith("--")]
            if len(tokens) < 2:
                add(f"{inst.keyword} needs a source and a destination", inst.line)
                continue
            *sources, dest = tokens
            dest_path = workdir / dest
            for source in sources:
                repo_path = project.root / source
                if not repo_path.exists():
                    add(f"{inst.keyword} source {source!r} does not exist in the repository", inst.line)
                    continue
                for relative in _files_under(project.root, repo_path):
                    if ignore.excluded(relative):
                        add(f"{inst.keyword} source {relative!r} is excluded by .dockerignore", inst.line)
                        break
                target = dest_path / repo_path.name if (dest.endswith("/") or len(sources) > 1) else dest_path
                if repo_path.is_dir() and dest.endswith("/") and len(sources) == 1:
                    target = dest_path
                files[target] = repo_path
        elif inst.keyword == "RUN" and re.search(r"\bpip\s+install\b", inst.args):
            installs += 1
            _check_pip_install(project, inst, workdir, user, files, add)
    if installs == 0:
        add("no `pip install` of the project: the provider would not be in the image")
    if user != "airflow":
        add(f"the image ends as user {user!r}; the official image's convention is to end as 'airflow'")
    if any("_PIP_ADDITIONAL_REQUIREMENTS" in inst.args for inst in instructions):
        add("uses _PIP_ADDITIONAL_REQUIREMENTS; install with pip at build time instead")
    problems.extend(check_package_data(project))
    return problems


def _files_under(root: Path, path: Path) -> Iterator[str]:
    if path.is_file():
        yield path.relative_to(root).as_posix()
        return
    for child in sorted(path.rglob("*")):
        if (
            child.is_file()
            and "__pycache__" not in child.parts
            and not any(part.endswith(".egg-info") for part in child.parts)
        ):
            yield child.relative_to(root).as_posix()


def _check_from(project: Project, inst: Instruction, add: Callable[[str, int | None], None]) -> None:
    image = inst.args.split()[0]
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[0-9][^-]*)-python(?P<python>\d+\.\d+)", image)
    if not match:
        add(f"FROM {image}: expected the official image apache/airflow:<version>-python<X.Y>", inst.line)
        return
    pinned = project.constraints.get("apache-airflow")
    if pinned != match["airflow"]:
        add(
            f"FROM {image}: Airflow {match['airflow']}, but constraints.txt pins apache-airflow=={pinned}",
            inst.line,
        )
    if project.constraints_python and project.constraints_python != match["python"]:
        add(
            f"FROM {image}: Python {match['python']}, but constraints.txt is for Python "
            f"{project.constraints_python}",
            inst.line,
        )
    requires = project.pyproject.get("project", {}).get("requires-python")
    if requires:
        from packaging.specifiers import SpecifierSet

        if match["python"] not in SpecifierSet(requires):
            add(f"FROM {image}: Python {match['python']} is outside requires-python {requires}", inst.line)


def _check_pip_install(
    project: Project,
    inst: Instruction,
    workdir: PurePosixPath,
    user: str,
    files: Mapping[PurePosixPath, Path],
    add: Callable[[str, int | None], None],
) -> None:
    line = inst.line
    if user in ("root", "0"):
        add("pip install runs as root; the official image installs packages as the 'airflow' user", line)
    segment = next(s for s in re.split(r"&&|;|\|\|", inst.args) if re.search(r"\bpip\s+install\b", s))
    tokens = shlex.split(segment)
    tokens = tokens[tokens.index("install") + 1 :]
    constraints: list[str] = []
    targets: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("-c", "--constraint"):
            constraints.append(tokens[index + 1] if index + 1 < len(tokens) else "")
            index += 2
            continue
        if token.startswith("--constraint="):
            constraints.append(token.split("=", 1)[1])
        elif not token.startswith("-"):
            targets.append(token)
        index += 1
    if "--no-cache-dir" not in tokens:
        add("pip install without --no-cache-dir leaves pip's cache in the image", line)
    constraints_file = project.root / "constraints.txt"
    if not constraints:
        add("pip install has no -c/--constraint: it must use the repository's constraints.txt", line)
    for constraint in constraints:
        copied = files.get(workdir / constraint)
        if copied is None or copied.resolve() != constraints_file.resolve():
            add(f"pip install -c {constraint}: not a copy of the repository's constraints.txt", line)
    project_targets = [t for t in targets if re.match(r"^\.(/)?(\[.*\])?$", t) or t.startswith("./[")]
    if not project_targets:
        add(f"pip install does not install the project ('.[local]'), only {targets}", line)
        return
    for target in project_targets:
        extras = set(re.findall(r"[\w-]+", target.partition("[")[2]))
        if "local" not in extras:
            add(f"pip install {target}: without the 'local' extra (sagemaker-pipelines-local)", line)
        for extra in sorted(extras - project.optional_extras):
            add(
                f"pip install {target}: pyproject.toml has no extra {extra!r}"
                f"{_suggest(extra, project.optional_extras)}",
                line,
            )
    _check_project_copied(project, workdir, files, add, line)


def _check_project_copied(
    project: Project,
    workdir: PurePosixPath,
    files: Mapping[PurePosixPath, Path],
    add: Callable[[str, int | None], None],
    line: int,
) -> None:
    needed = ["pyproject.toml"]
    readme = project.pyproject.get("project", {}).get("readme")
    if isinstance(readme, str):
        needed.append(readme)
    find = project.pyproject.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    needed.extend(find.get("where", []))
    for relative in needed:
        copied = files.get(workdir / relative)
        if copied is None or copied.resolve() != (project.root / relative).resolve():
            add(f"pip install runs in {workdir}, where {relative!r} is not copied from the repository", line)


def check_package_data(project: Project) -> list[Problem]:
    """Non-Python files in the package must be declared in [tool.setuptools.package-data]."""
    problems: list[Problem] = []
    setuptools_cfg = project.pyproject.get("tool", {}).get("setuptools", {})
    where_dirs = setuptools_cfg.get("packages", {}).get("find", {}).get("where", ["."])
    package_data: dict[str, list[str]] = setuptools_cfg.get("package-data", {})
    for where in where_dirs:
        base = project.root / where
        for top in sorted(p for p in base.iterdir() if (p / "__init__.py").is_file()):
            for path in sorted(top.rglob("*")):
                if (
                    not path.is_file()
                    or path.suffix in (".py", ".pyc")
                    or "__pycache__" in path.parts
                    or any(part.endswith(".egg-info") for part in path.parts)
                ):
                    continue
                relative = path.relative_to(top).as_posix()
                globs = [*package_data.get(top.name, []), *package_data.get("*", [])]
                if not any(fnmatch.fnmatch(relative, g) for g in globs):
                    problems.append(
                        Problem(
                            "pyproject.toml",
                            f"{path.relative_to(project.root).as_posix()} is not in "
                            f"[tool.setuptools.package-data] {top.name}, so the image's (non-editable) "
                            f"install leaves it out (add "
                            f"'{posixpath.dirname(relative) or '.'}/*{path.suffix}')",
                        )
                    )
    return problems


# --------------------------------------------------------------------------------------------------------
# Entry points


@functools.cache
def compose_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def check_schema(document: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.Draft7Validator(compose_schema())
    problems = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
            unknown = [
                key
                for key in error.instance
                if key not in allowed and not any(p.search(str(key)) for p in patterns)
            ]
            message = "; ".join(f"unknown key {key!r}{_suggest(str(key), allowed)}" for key in unknown)
        problems.append(Problem(_path_where(path), f"schema: {message}"))
    return problems


def resolve_compose(
    text: str, variables: Mapping[str, str] | None = None
) -> tuple[dict[str, Any] | None, list[VariableUse], list[Problem]]:
    """(interpolated document, variable uses, problems) for a compose file's text."""
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        return None, [], [Problem("compose file", f"not valid YAML: {exc}")]
    if not isinstance(raw, dict):
        return None, [], [Problem("compose file", "not a mapping")]
    uses: list[VariableUse] = []
    try:
        document = interpolate_tree(raw, variables or {}, uses, (), where=_path_where)
    except InterpolationError as exc:
        return None, uses, [Problem("compose file", f"interpolation: {exc}")]
    return document, uses, []


def check_compose(
    project: Project, text: str, variables: Mapping[str, str] | None = None, base_image: str | None = None
) -> list[Problem]:
    document, uses, problems = resolve_compose(text, variables)
    if document is None:
        return problems
    for use in uses:
        if use.operator == "":
            problems.append(
                Problem(
                    use.where,
                    f"uses ${{{use.name}}} without a default: write ${{{use.name}:-...}} "
                    f"or require it with ${{{use.name}:?...}}",
                )
            )
    problems.extend(check_schema(document))
    for name, spec in (document.get("services") or {}).items():
        build = (spec or {}).get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (project.root / context / dockerfile).is_file():
                problems.append(Problem(_service(name), f"build: {context}/{dockerfile} does not exist"))
    checker = Checker(project, document, build_services(document, base_image))
    checker.check_graph()
    checker.check_commands()
    checker.check_healthcheck_ports()
    checker.check_environment()
    problems.extend(checker.problems)
    return problems


def base_image_of(dockerfile: str) -> str | None:
    froms = [i for i in parse_dockerfile(dockerfile) if i.keyword == "FROM"]
    return froms[0].args.split()[0] if froms else None


def validate(
    root: Path,
    *,
    compose_text: str | None = None,
    dockerfile_text: str | None = None,
    dockerignore_text: str | None = None,
    variables: Mapping[str, str] | None = None,
    project: Project | None = None,
) -> list[Problem]:
    """Every problem of the compose file, Dockerfile and .dockerignore under ``root`` (or the texts given)."""
    project = project or load_project(root)
    if compose_text is None:
        compose_text = (root / "docker-compose.yaml").read_text(encoding="utf-8")
    if dockerfile_text is None:
        dockerfile_text = (root / "Dockerfile").read_text(encoding="utf-8")
    if dockerignore_text is None and (root / ".dockerignore").is_file():
        dockerignore_text = (root / ".dockerignore").read_text(encoding="utf-8")
    key = (
        id(project),
        compose_text,
        tuple(sorted((variables or {}).items())),
        base_image_of(dockerfile_text),
    )
    if key not in _COMPOSE_RESULTS:  # the checks are pure: one run per distinct input
        _COMPOSE_RESULTS[key] = check_compose(project, compose_text, variables, key[3])
    problems = list(_COMPOSE_RESULTS[key])
    problems.extend(check_dockerfile(project, dockerfile_text, dockerignore_text))
    return problems


_COMPOSE_RESULTS: dict[tuple[Any, ...], list[Problem]] = {}
