"""docker-compose.yaml, Dockerfile and .dockerignore, validated offline (no Docker engine on CI).

The repository's files must pass :func:`compose_check.validate`; copies with one defect each (a typo in a
service name, a missing environment variable, a command that does not exist, ...) must fail with a
problem that names the service (or file) and the defect.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from tests.compose import compose_check

REPO = Path(__file__).resolve().parents[2]
COMPOSE = (REPO / "docker-compose.yaml").read_text(encoding="utf-8")
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
DOCKERIGNORE = (REPO / ".dockerignore").read_text(encoding="utf-8")

# What "pointing it at real AWS" sets in .env (docs/docker-compose.md).
REAL_AWS = {
    "SMP_AWS_ENDPOINT_URL": "",
    "SMP_AWS_ACCESS_KEY_ID": "",
    "SMP_AWS_SECRET_ACCESS_KEY": "",
    "SMP_AWS_REGION": "eu-west-1",
}


@pytest.fixture(scope="module")
def project() -> compose_check.Project:
    return compose_check.load_project(REPO)


@pytest.fixture(scope="module")
def baseline(project: compose_check.Project) -> list[compose_check.Problem]:
    return compose_check.validate(REPO, project=project)


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the mutation's anchor must occur once: {old!r}"
    return text.replace(old, new)


def _new_problems(
    project: compose_check.Project, baseline: list[compose_check.Problem], **texts: str
) -> list[str]:
    problems = compose_check.validate(REPO, project=project, **texts)  # type: ignore[arg-type]
    return [str(p) for p in problems if p not in baseline]


def _assert_reported(problems: list[str], *fragments: str) -> None:
    assert any(all(f in p for f in fragments) for p in problems), (
        f"no problem mentions all of {fragments}; got:\n" + "\n".join(problems or ["(no problems)"])
    )


# ------------------------------------------------------------------------------------------------------
# The real files


def test_vendored_schema_is_the_compose_specification() -> None:
    schema = compose_check.compose_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert {"service", "healthcheck", "command"} <= set(schema["definitions"])


def test_compose_and_dockerfile_pass(baseline: list[compose_check.Problem]) -> None:
    problems = [str(p) for p in baseline if p.where != "pyproject.toml"]
    assert problems == [], "\n".join(problems)


def test_image_ships_the_package_data(baseline: list[compose_check.Problem]) -> None:
    """The image installs the provider non-editable: data files must be declared as package data."""
    problems = [str(p) for p in baseline if p.where == "pyproject.toml"]
    assert problems == [], "\n".join(problems)


def test_environment_names_come_from_the_code(project: compose_check.Project) -> None:
    """The names checked are the ones the local endpoint exports (one source, the code)."""
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(project.code_env)
    assert {"AWS_DEFAULT_REGION", "AIRFLOW_CONN_AWS_DEFAULT"} <= set(project.code_env)
    document, _, problems = compose_check.resolve_compose(COMPOSE)
    assert document is not None and problems == []
    common = document["x-airflow-common"]["environment"]
    assert set(project.code_env) <= set(common)


def test_every_service_has_a_healthcheck_but_the_one_shot_init() -> None:
    document, _, _ = compose_check.resolve_compose(COMPOSE)
    assert document is not None
    without = {name for name, spec in document["services"].items() if "healthcheck" not in spec}
    assert without == {"airflow-init"}
    assert "airflow jobs check --job-type TriggererJob" in str(
        document["services"]["airflow-triggerer"]["healthcheck"]["test"]
    )


def test_real_aws_switch(project: compose_check.Project) -> None:
    """The documented switch drops the endpoint and the test keys; the stack still validates."""
    problems = [
        str(p)
        for p in compose_check.validate(REPO, project=project, variables=REAL_AWS)
        if p.where != "pyproject.toml"
    ]
    assert problems == [], "\n".join(problems)
    document, _, _ = compose_check.resolve_compose(COMPOSE, REAL_AWS)
    assert document is not None
    services = compose_check.build_services(document, compose_check.base_image_of(DOCKERFILE))
    checker = compose_check.Checker(project, document, services)
    for service in checker.airflow_services():
        env = service.environment
        assert env["AWS_ENDPOINT_URL"] == "", service.name
        assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "", service.name
        assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-west-1", service.name
        assert env["AIRFLOW_CONN_AWS_DEFAULT"] == "aws://?region_name=eu-west-1", service.name


def test_a_full_connection_can_replace_the_default(project: compose_check.Project) -> None:
    connection = {
        "conn_type": "aws",
        "extra": {"region_name": "eu-west-1", "role_arn": "arn:aws:iam::123456789012:role/airflow"},
    }
    variables = {**REAL_AWS, "SMP_AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection)}
    document, _, _ = compose_check.resolve_compose(COMPOSE, variables)
    assert document is not None
    assert json.loads(document["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"]) == (
        connection
    )


# ------------------------------------------------------------------------------------------------------
# Defects the validation must catch: (id, old, new, fragments one problem must contain)

COMPOSE_DEFECTS = [
    (
        "depends_on-service-typo",
        "      airflow-apiserver:\n        condition: service_healthy",
        "      airflow-apiservr:\n        condition: service_healthy",
        ("service 'airflow-worker'", "depends_on 'airflow-apiservr'", "did you mean 'airflow-apiserver'"),
    ),
    (
        "service-name-typo",
        "  sagemaker-local:\n    <<: *provider-image",
        "  sagemaker-locl:\n    <<: *provider-image",
        ("service 'airflow-triggerer'", "AWS_ENDPOINT_URL", "'sagemaker-local', which is not a service"),
    ),
    (
        "service-name-typo-in-depends_on",
        "  sagemaker-local:\n    <<: *provider-image",
        "  sagemaker-locl:\n    <<: *provider-image",
        ("service 'airflow-scheduler'", "depends_on 'sagemaker-local'", "did you mean 'sagemaker-locl'"),
    ),
    (
        "missing-AWS_ENDPOINT_URL",
        "    AWS_ENDPOINT_URL: ${SMP_AWS_ENDPOINT_URL-http://sagemaker-local:5055}\n",
        "",
        ("service 'airflow-worker'", "environment variable AWS_ENDPOINT_URL is not set"),
    ),
    (
        "missing-AIRFLOW_CONN_AWS_DEFAULT",
        "    AIRFLOW_CONN_AWS_DEFAULT: ${SMP_AIRFLOW_CONN_AWS_DEFAULT:-aws://?region_name=${SMP_AWS_REGION:-us-east-1}}\n",
        "",
        ("service 'airflow-triggerer'", "AIRFLOW_CONN_AWS_DEFAULT is not set"),
    ),
    (
        "missing-jwt-secret",
        "    AIRFLOW__API_AUTH__JWT_SECRET: ${AIRFLOW__API_AUTH__JWT_SECRET:-airflow_jwt_secret}\n",
        "",
        ("service 'airflow-apiserver'", "AIRFLOW__API_AUTH__JWT_SECRET is not set"),
    ),
    (
        "env-name-typo",
        "    AWS_ENDPOINT_URL: ${SMP",
        "    AWS_ENDPOINT_ULR: ${SMP",
        (
            "service 'airflow-worker'",
            "unknown AWS variable AWS_ENDPOINT_ULR",
            "did you mean 'AWS_ENDPOINT_URL'",
        ),
    ),
    (
        "airflow-config-typo",
        "AIRFLOW__CORE__LOAD_EXAMPLES:",
        "AIRFLOW__CORE__LOAD_EXAMPLE:",
        ("service 'airflow-scheduler'", "no option 'load_example' in [core]", "did you mean 'load_examples'"),
    ),
    (
        "airflow-subcommand-typo",
        "    command: triggerer\n",
        "    command: triggerrer\n",
        ("service 'airflow-triggerer'", "`airflow triggerrer` is not an Airflow command", "invalid choice"),
    ),
    (
        "celery-subcommand-typo",
        "    command: celery worker\n",
        "    command: celery wroker\n",
        ("service 'airflow-worker'", "wroker", "did you mean 'worker'"),
    ),
    (
        "healthcheck-airflow-typo",
        "--job-type TriggererJob",
        "--job-type TriggerJob",
        ("service 'airflow-triggerer'", "healthcheck", "airflow jobs check", "invalid choice"),
    ),
    (
        "init-script-airflow-typo",
        "/entrypoint airflow config list",
        "/entrypoint airflow confg list",
        ("service 'airflow-init'", "shell script", "airflow confg list"),
    ),
    (
        "console-script-typo",
        'entrypoint: ["sagemaker-pipelines-local"]',
        'entrypoint: ["sagemaker-pipelines-locl"]',
        ("service 'sagemaker-local'", "'sagemaker-pipelines-locl' is not declared in pyproject.toml"),
    ),
    (
        "console-script-subcommand-typo",
        'command: ["serve", "--host"',
        'command: ["serv", "--host"',
        ("service 'sagemaker-local'", "is rejected by sagemaker-pipelines-local", "invalid choice"),
    ),
    (
        "console-script-option-typo",
        '"--port", "5055"',
        '"--prot", "5055"',
        ("service 'sagemaker-local'", "is rejected by sagemaker-pipelines-local", "--prot"),
    ),
    (
        "endpoint-bound-to-loopback",
        '"--host", "0.0.0.0"',
        '"--host", "127.0.0.1"',
        ("service 'sagemaker-local'", "other containers cannot reach"),
    ),
    (
        "endpoint-port-mismatch",
        "${SMP_AWS_ENDPOINT_URL-http://sagemaker-local:5055}",
        "${SMP_AWS_ENDPOINT_URL-http://sagemaker-local:4566}",
        ("service 'airflow-worker'", "uses port 4566", "serves on 5055"),
    ),
    (
        "endpoint-healthcheck-port",
        "http://localhost:5055/_local/health",
        "http://localhost:4566/_local/health",
        ("service 'sagemaker-local'", "hits port 4566", "listens on [5055]"),
    ),
    (
        "image-executable-typo",
        '"pg_isready"',
        '"pg_ready"',
        ("service 'postgres'", "'pg_ready' does not exist in image 'postgres'", "did you mean 'pg_isready'"),
    ),
    (
        "broker-host-typo",
        "redis://:@redis:6379/0",
        "redis://:@rediss:6379/0",
        ("service 'airflow-worker'", "AIRFLOW__CELERY__BROKER_URL points at host 'rediss'"),
    ),
    (
        "scheduler-health-server-off",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK: 'true'",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK: 'false'",
        ("service 'airflow-scheduler'", "hits port 8974"),
    ),
    (
        "variable-without-default",
        "    AWS_DEFAULT_REGION: ${SMP_AWS_REGION:-us-east-1}\n    AWS_REGION",
        "    AWS_DEFAULT_REGION: ${SMP_AWS_REGION}\n    AWS_REGION",
        ("service 'airflow-worker': environment.AWS_DEFAULT_REGION", "${SMP_AWS_REGION} without a default"),
    ),
    (
        "unescaped-dollar",
        '--job-type DagProcessorJob --hostname "$${HOSTNAME}"',
        '--job-type DagProcessorJob --hostname "$(hostname)"',
        ("compose file", "interpolation", "'$$'"),
    ),
    (
        "schema-unknown-key",
        "      start_period: 30s\n    restart: always\n\n  # The local AWS endpoint",
        "      start_period: 30s\n    restarts: always\n\n  # The local AWS endpoint",
        ("service 'redis'", "schema", "schema: unknown key 'restarts'", "did you mean 'restart'"),
    ),
    (
        "pip-additional-requirements",
        "    AIRFLOW__CORE__EXECUTOR: CeleryExecutor\n",
        "    AIRFLOW__CORE__EXECUTOR: CeleryExecutor\n    _PIP_ADDITIONAL_REQUIREMENTS: boto3\n",
        ("service 'airflow-worker'", "_PIP_ADDITIONAL_REQUIREMENTS"),
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [pytest.param(old, new, fragments, id=name) for name, old, new, fragments in COMPOSE_DEFECTS],
)
def test_compose_defect_is_reported(
    project: compose_check.Project,
    baseline: list[compose_check.Problem],
    old: str,
    new: str,
    fragments: tuple[str, ...],
) -> None:
    problems = _new_problems(project, baseline, compose_text=_replace(COMPOSE, old, new))
    _assert_reported(problems, *fragments)


def test_missing_triggerer_healthcheck_is_reported(
    project: compose_check.Project, baseline: list[compose_check.Problem]
) -> None:
    block = re.search(r"    command: triggerer\n    healthcheck:\n(      .*\n)+", COMPOSE)
    assert block is not None
    mutated = COMPOSE.replace(block.group(), "    command: triggerer\n")
    problems = _new_problems(project, baseline, compose_text=mutated)
    _assert_reported(problems, "service 'airflow-triggerer'", "has no healthcheck")


DOCKERFILE_DEFECTS = [
    (
        "no-constraints",
        'pip install --no-cache-dir -c constraints.txt ".[local]"',
        'pip install --no-cache-dir ".[local]"',
        ("Dockerfile line", "no -c/--constraint"),
    ),
    (
        "other-constraints-file",
        "--no-cache-dir -c constraints.txt",
        "--no-cache-dir -c /tmp/constraints.txt",
        ("Dockerfile line", "-c /tmp/constraints.txt: not a copy of the repository's constraints.txt"),
    ),
    (
        "extra-typo",
        '".[local]"',
        '".[locl]"',
        ("Dockerfile line", "no extra 'locl'", "did you mean 'local'"),
    ),
    (
        "airflow-version-mismatch",
        "FROM apache/airflow:3.3.2-python3.11",
        "FROM apache/airflow:3.3.1-python3.11",
        ("Dockerfile line", "Airflow 3.3.1", "apache-airflow==3.3.2"),
    ),
    (
        "python-version-mismatch",
        "FROM apache/airflow:3.3.2-python3.11",
        "FROM apache/airflow:3.3.2-python3.12",
        ("Dockerfile line", "Python 3.12", "constraints.txt is for Python 3.11"),
    ),
    (
        "pip-as-root",
        "USER airflow\nWORKDIR /opt/sagemaker-pipelines-provider",
        "WORKDIR /opt/sagemaker-pipelines-provider",
        ("Dockerfile", "runs as root"),
    ),
    (
        "readme-not-copied",
        "COPY --chown=airflow:0 constraints.txt pyproject.toml README.md ./",
        "COPY --chown=airflow:0 constraints.txt pyproject.toml ./",
        ("Dockerfile line", "'README.md' is not copied"),
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [pytest.param(old, new, fragments, id=name) for name, old, new, fragments in DOCKERFILE_DEFECTS],
)
def test_dockerfile_defect_is_reported(
    project: compose_check.Project,
    baseline: list[compose_check.Problem],
    old: str,
    new: str,
    fragments: tuple[str, ...],
) -> None:
    problems = _new_problems(project, baseline, dockerfile_text=_replace(DOCKERFILE, old, new))
    _assert_reported(problems, *fragments)


def test_dockerignore_excluding_the_constraints_is_reported(
    project: compose_check.Project, baseline: list[compose_check.Problem]
) -> None:
    problems = _new_problems(project, baseline, dockerignore_text=DOCKERIGNORE + "constraints.txt\n")
    _assert_reported(problems, "Dockerfile line", "'constraints.txt' is excluded by .dockerignore")


# ------------------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("$${HOSTNAME}", {}, "${HOSTNAME}"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A-x}", {}, "x"),
        ("${A:-aws://?r=${B:-us-east-1}}", {}, "aws://?r=us-east-1"),
        ("${A:-aws://?r=${B:-us-east-1}}", {"B": "eu-west-1"}, "aws://?r=eu-west-1"),
        ("${A:+set}", {"A": "1"}, "set"),
        ("$A/b", {"A": "a"}, "a/b"),
    ],
)
def test_interpolation(text: str, variables: dict[str, str], expected: str) -> None:
    assert compose_check.interpolate(text, variables) == expected


def test_interpolation_errors() -> None:
    with pytest.raises(compose_check.InterpolationError, match="required variable A"):
        compose_check.interpolate("${A:?set A}", {})
    with pytest.raises(compose_check.InterpolationError, match="'\\$\\$'"):
        compose_check.interpolate("$(id -u)", {})


def test_dockerignore_matcher() -> None:
    ignore = compose_check.DockerIgnore(DOCKERIGNORE)
    assert not ignore.excluded("constraints.txt")
    assert not ignore.excluded("provider/sagemaker_pipelines_provider/local/cli.py")
    assert not ignore.excluded("provider/sagemaker_pipelines_provider/local/pipelines/training.json")
    assert ignore.excluded("provider/sagemaker_pipelines_provider/__pycache__/x.cpython-311.pyc")
    assert ignore.excluded("provider/airflow_provider_sagemaker_pipelines.egg-info/PKG-INFO")
    assert ignore.excluded(".venv/bin/python")
    assert ignore.excluded("dags/example.py")
