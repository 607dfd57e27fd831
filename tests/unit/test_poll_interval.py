"""``[sagemaker_pipelines] default_poll_interval``: declared by the provider, read through Airflow's
configuration (airflow.cfg or ``AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL``), the default poll
interval of every polling task of the provider."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowConfigException
from sagemaker_pipelines_provider import get_provider_info
from sagemaker_pipelines_provider.local import demo
from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor
from sagemaker_pipelines_provider.sensors.pipeline_step import SageMakerPipelineStepSensor
from sagemaker_pipelines_provider.task_groups.chain import SageMakerCallbackWork, pipeline_chain
from sagemaker_pipelines_provider.task_groups.mirror import SageMakerPipelineTaskGroup
from sagemaker_pipelines_provider.utils.poll_interval import (
    CONFIG_ENV,
    CONFIG_OPTION,
    CONFIG_SECTION,
    DEFAULT_POLL_INTERVAL,
    default_poll_interval,
)

from tests.support.user_env import user_environ

ENV = "AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc"
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
DEFINITION = {
    "Version": "2020-12-01",
    "Steps": [{"Name": "Prep", "Type": "Processing", "Arguments": {}}],
}


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def test_the_declared_option_is_the_one_read() -> None:
    section = get_provider_info()["config"][CONFIG_SECTION]
    option = section["options"][CONFIG_OPTION]
    assert option["type"] == "float"
    assert float(option["default"]) == DEFAULT_POLL_INTERVAL == 30.0
    assert float(option["example"]) > 0
    assert CONFIG_ENV == ENV == demo.POLL_INTERVAL_ENV


def test_unset_is_30_seconds(unset: None) -> None:
    assert default_poll_interval() == 30.0


def test_the_environment_variable_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.25")
    assert default_poll_interval() == 0.25
    monkeypatch.setenv(ENV, "12")
    assert default_poll_interval() == 12.0


@pytest.mark.parametrize("raw", ["abc", "", "0", "-1", "nan", "inf"])
def test_a_bad_value_is_an_error_naming_the_option(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(ENV, raw)
    with pytest.raises(AirflowConfigException) as raised:
        default_poll_interval()
    message = str(raised.value)
    assert "default_poll_interval" in message and "sagemaker_pipelines" in message, message
    with pytest.raises(AirflowConfigException):
        SageMakerPipelineOperator(task_id="t", pipeline_name="p")


def _intervals(**chain_defaults: Any) -> dict[str, float]:
    """The poll interval of each kind of polling task, built with the provider's defaults."""
    with DAG("poll_defaults", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
        operator = SageMakerPipelineOperator(task_id="op", pipeline_name="p")
        sensor = SageMakerPipelineExecutionSensor(task_id="sensor", pipeline_execution_arn=ARN)
        step = SageMakerPipelineStepSensor(task_id="step", pipeline_execution_arn=ARN, step_name="Prep")
        mirror = SageMakerPipelineTaskGroup("mirror", definition=DEFINITION)
        with pipeline_chain("chain", **chain_defaults) as chain:
            link = chain.pipeline("plain")
            with_callback = chain.pipeline("cb", callback=SageMakerCallbackWork(queue_url=QUEUE))
    return {
        "operator": operator.poll_interval,
        "sensor": sensor.poke_interval,
        "step sensor": step.poke_interval,
        "mirror start": mirror.start_task.poll_interval,
        "mirror step": mirror.step_tasks["Prep"].poke_interval,
        "mirror result": mirror.result_task.poke_interval,
        "chain link": link.start.poll_interval,  # type: ignore[attr-defined]
        "chain callback start": with_callback.start.poll_interval,  # type: ignore[attr-defined]
        "chain callback wait": with_callback.result_task.poke_interval,  # type: ignore[attr-defined]
    }


def test_every_polling_task_defaults_to_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.5")
    assert set(_intervals().values()) == {0.5}


def test_without_the_option_every_polling_task_polls_every_30_seconds(unset: None) -> None:
    """The pipeline sensors too (not Airflow's 60 s sensor default): one value for the whole provider."""
    assert set(_intervals().values()) == {30.0}


def test_an_explicit_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.5")
    assert SageMakerPipelineOperator(task_id="op", pipeline_name="p", poll_interval=7).poll_interval == 7
    sensor = SageMakerPipelineExecutionSensor(task_id="s", pipeline_execution_arn=ARN, poke_interval=8)
    assert sensor.poke_interval == 8
    step = SageMakerPipelineStepSensor(
        task_id="st", pipeline_execution_arn=ARN, step_name="Prep", poke_interval=9
    )
    assert step.poke_interval == 9
    chain_default = {k: v for k, v in _intervals(poll_interval=3).items() if k.startswith("chain")}
    assert chain_default == {"chain link": 3, "chain callback start": 3, "chain callback wait": 3}


@pytest.mark.subprocess
def test_airflow_cfg_sets_it_and_the_cli_shows_it(tmp_path: Path) -> None:
    """A user's Airflow home whose airflow.cfg sets the option: the provider and ``airflow config`` agree."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "airflow.cfg").write_text("[sagemaker_pipelines]\ndefault_poll_interval = 7.5\n")
    env = {**user_environ(tmp_path), "AIRFLOW_HOME": str(home)}

    def run(*args: str) -> str:
        result = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    code = "import sagemaker_pipelines_provider.utils.poll_interval as m; print(m.default_poll_interval())"
    assert run(sys.executable, "-c", code) == "7.5"
    airflow = str(Path(sys.executable).parent / "airflow")
    assert run(airflow, "config", "get-value", "sagemaker_pipelines", "default_poll_interval") == "7.5"
    listed = run(airflow, "config", "list", "--section", "sagemaker_pipelines", "--show-values")
    assert "default_poll_interval = 7.5" in listed, listed


# ---------------------------------------------------------------------------------------------------------
# [sagemaker_pipelines] event_safety_poll_interval: the safety poll of the waits that read events


def test_the_safety_option_is_declared_with_the_default_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagemaker_pipelines_provider.utils.poll_interval import (
        DEFAULT_EVENT_SAFETY_POLL_INTERVAL,
        EVENT_SAFETY_ENV,
        EVENT_SAFETY_OPTION,
        event_safety_poll_interval,
    )

    option = get_provider_info()["config"][CONFIG_SECTION]["options"][EVENT_SAFETY_OPTION]
    assert option["type"] == "float"
    assert float(option["default"]) == DEFAULT_EVENT_SAFETY_POLL_INTERVAL == 600.0
    monkeypatch.delenv(EVENT_SAFETY_ENV, raising=False)
    assert event_safety_poll_interval() == 600.0
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__EVENT_SAFETY_POLL_INTERVAL", "45")
    assert event_safety_poll_interval() == 45.0


def test_the_triggers_take_the_safety_default_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger
    from sagemaker_pipelines_provider.triggers.pipeline_step import SageMakerPipelineStepTrigger

    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__EVENT_SAFETY_POLL_INTERVAL", "120")
    execution = SageMakerPipelineExecutionTrigger(ARN, event_queue_url=QUEUE)
    step = SageMakerPipelineStepTrigger(ARN, "Prep", event_queue_url=QUEUE)
    assert execution.serialize()[1]["safety_poll_interval"] == 120.0
    assert step.serialize()[1]["safety_poll_interval"] == 120.0
    explicit = SageMakerPipelineExecutionTrigger(ARN, event_queue_url=QUEUE, safety_poll_interval=7)
    assert explicit.serialize()[1]["safety_poll_interval"] == 7.0


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "inf"])
def test_a_bad_safety_value_is_an_error_naming_the_option(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    from sagemaker_pipelines_provider.utils.poll_interval import event_safety_poll_interval

    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__EVENT_SAFETY_POLL_INTERVAL", raw)
    with pytest.raises(AirflowConfigException, match="event_safety_poll_interval"):
        event_safety_poll_interval()
