"""``event_queue_url`` / ``safety_poll_interval`` reach every waiting task of the mirror and the chain, and
the triggers they defer on (no AWS: the tasks are built, not run)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from airflow.sdk import DAG
from sagemaker_pipelines_provider.utils.event_waits import event_trigger_kwargs, log_polling_wait

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-pipeline-events"
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [],
    "Steps": [
        {"Name": "Prep", "Type": "Processing", "Arguments": {}},
        {"Name": "Train", "Type": "Processing", "Arguments": {}, "DependsOn": ["Prep"]},
    ],
}


def new_dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def test_the_mirror_gives_the_queue_to_every_task() -> None:
    from sagemaker_pipelines_provider.task_groups.mirror import SageMakerPipelineTaskGroup

    with new_dag("mirror_events"):
        group = SageMakerPipelineTaskGroup(
            "training", definition=DEFINITION, event_queue_url=QUEUE, safety_poll_interval=120
        )
    tasks = [group.start_task, *group.step_tasks.values(), group.result_task]
    assert [(t.event_queue_url, t.safety_poll_interval) for t in tasks] == [(QUEUE, 120.0)] * 4
    assert all("event_queue_url" in t.template_fields for t in tasks)


def test_the_chain_gives_the_queue_to_its_pipelines_and_the_wait_after_a_callback() -> None:
    from sagemaker_pipelines_provider.task_groups.chain import SageMakerCallbackWork, pipeline_chain

    with new_dag("chain_events"), pipeline_chain("c", deferrable=True, event_queue_url=QUEUE) as chain:
        plain = chain.pipeline("features")
        answered = chain.pipeline(
            "training", callback=SageMakerCallbackWork(queue_url="https://q/callbacks", outputs={"ok": True})
        )
    tasks: list[Any] = [plain.start, answered.start, answered.result_task]  # the last: the sensor
    assert [t.event_queue_url for t in tasks] == [QUEUE] * 3


def test_trigger_arguments_only_with_a_queue() -> None:
    assert event_trigger_kwargs(None, 60) == {}
    assert event_trigger_kwargs(QUEUE, None) == {"event_queue_url": QUEUE}
    assert event_trigger_kwargs(QUEUE, 60) == {"event_queue_url": QUEUE, "safety_poll_interval": 60.0}


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_a_safety_poll_interval_must_be_a_positive_number(value: Any) -> None:
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    with pytest.raises(ValueError, match="safety_poll_interval must be a number of seconds > 0"):
        SageMakerPipelineExecutionSensor(task_id="s", pipeline_execution_arn="a", safety_poll_interval=value)


def test_the_polling_line_only_with_a_queue(caplog: Any) -> None:
    import logging

    log = logging.getLogger("test_event_waits")
    with caplog.at_level(logging.INFO, logger="test_event_waits"):
        log_polling_wait(log, None)
        log_polling_wait(log, QUEUE)
    assert [r.getMessage() for r in caplog.records] == [
        f"Waiting by polling in the worker: the events of {QUEUE} serve deferrable waits only (a trigger "
        "subscribes to them); set deferrable=True to wait on events"
    ]
