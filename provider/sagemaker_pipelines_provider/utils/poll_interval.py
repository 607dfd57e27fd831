"""``[sagemaker_pipelines] default_poll_interval``: the default poll interval of this provider's tasks.

An Airflow configuration option declared by the provider (``get_provider_info()["config"]``): set it in
``airflow.cfg`` or with ``AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL`` (seconds, default 30);
``airflow config get-value sagemaker_pipelines default_poll_interval`` shows it. It is the default of
``SageMakerPipelineOperator(poll_interval=)``, of ``pipeline_chain`` and ``SageMakerPipelineTaskGroup``,
and the default ``poke_interval`` of ``SageMakerPipelineExecutionSensor`` and
``SageMakerPipelineStepSensor`` (instead of Airflow's 60 s for sensors: one option, one value, for every
task of the provider that polls). An explicit ``poll_interval`` / ``poke_interval`` argument always
wins. Read when a task is built, i.e. when the DAG file is parsed.

``[sagemaker_pipelines] event_safety_poll_interval``
(``AIRFLOW__SAGEMAKER_PIPELINES__EVENT_SAFETY_POLL_INTERVAL``, seconds, default 600) is the default
``safety_poll_interval`` of the waits given an ``event_queue_url``: the interval of the slow poll that
catches what the events missed. Read when the trigger is built (by the task, before it defers), or by the
triggerer for a trigger persisted without one.
"""

from __future__ import annotations

import math

from airflow.sdk import conf
from airflow.sdk.exceptions import AirflowConfigException

#: The configuration section and option (``AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL``).
CONFIG_SECTION = "sagemaker_pipelines"
CONFIG_OPTION = "default_poll_interval"
#: The environment variable that sets the option (Airflow's ``AIRFLOW__{SECTION}__{KEY}`` convention).
CONFIG_ENV = f"AIRFLOW__{CONFIG_SECTION.upper()}__{CONFIG_OPTION.upper()}"
#: Seconds between two status polls of one execution when the option is not set (the triggers' shared
#: pollers coalesce the polls of every task watching the same execution).
DEFAULT_POLL_INTERVAL = 30.0

#: The option of the safety poll's default interval (waits with an ``event_queue_url``).
EVENT_SAFETY_OPTION = "event_safety_poll_interval"
EVENT_SAFETY_ENV = f"AIRFLOW__{CONFIG_SECTION.upper()}__{EVENT_SAFETY_OPTION.upper()}"
#: Seconds between two safety polls of an execution whose wait reads events, when the option is not set.
DEFAULT_EVENT_SAFETY_POLL_INTERVAL = 600.0


def default_poll_interval() -> float:
    """``[sagemaker_pipelines] default_poll_interval`` in seconds (30 when unset).

    :raises AirflowConfigException: the value is not a number, or not a finite number > 0.
    """
    return _seconds_option(CONFIG_OPTION, DEFAULT_POLL_INTERVAL)


def event_safety_poll_interval() -> float:
    """``[sagemaker_pipelines] event_safety_poll_interval`` in seconds (600 when unset).

    :raises AirflowConfigException: the value is not a number, or not a finite number > 0.
    """
    return _seconds_option(EVENT_SAFETY_OPTION, DEFAULT_EVENT_SAFETY_POLL_INTERVAL)


def _seconds_option(option: str, fallback: float) -> float:
    # getfloat itself rejects a non-number, naming the section and the option.
    value = conf.getfloat(CONFIG_SECTION, option, fallback=fallback)
    if not math.isfinite(value) or value <= 0:
        raise AirflowConfigException(
            f"[{CONFIG_SECTION}] {option} must be a number of seconds > 0, got {value!r} "
            f"(airflow.cfg or AIRFLOW__{CONFIG_SECTION.upper()}__{option.upper()})"
        )
    return value


__all__ = [
    "CONFIG_ENV",
    "CONFIG_OPTION",
    "CONFIG_SECTION",
    "DEFAULT_EVENT_SAFETY_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "EVENT_SAFETY_ENV",
    "EVENT_SAFETY_OPTION",
    "default_poll_interval",
    "event_safety_poll_interval",
]
