"""PipelineStatusEventTrigger's arguments: checked at DAG parse time, serialised so that equal watchers
make equal trigger hashes (Airflow keeps one trigger row per hash)."""

from __future__ import annotations

import pytest
from sagemaker_pipelines_provider.results import latest_attempts
from sagemaker_pipelines_provider.triggers.events import (
    PipelineStatusEventTrigger,
    WatchState,
    model_package_arns_of,
    outcome_key,
)

PATH = "sagemaker_pipelines_provider.triggers.events.PipelineStatusEventTrigger"


def test_serialises_to_sorted_statuses_and_round_trips() -> None:
    trigger = PipelineStatusEventTrigger(
        pipeline_name="training", queue_url="https://q", statuses=("Succeeded", "Failed", "Failed")
    )
    path, kwargs = trigger.serialize()
    assert path == PATH
    assert kwargs == {
        "pipeline_name": "training",
        "queue_url": "https://q",
        "statuses": ["Failed", "Succeeded"],
        "safety_poll_interval": 600.0,
        "aws_conn_id": "aws_default",
        "region_name": None,
        "verify": None,
        "botocore_config": None,
    }
    assert PipelineStatusEventTrigger(**kwargs).serialize() == (path, kwargs)
    same = PipelineStatusEventTrigger(
        pipeline_name="training", queue_url="https://q", statuses=["Failed", "Succeeded"]
    )
    assert trigger.hash(path, kwargs) == same.hash(*same.serialize())
    assert PipelineStatusEventTrigger(
        pipeline_name="t", queue_url="https://q", statuses="Stopped"
    ).statuses == ["Stopped"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"statuses": ["Done"]}, "Executing, Failed, Stopped, Stopping, Succeeded"),
        ({"statuses": []}, "one or more"),
        ({"pipeline_name": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/x"}, "not its ARN"),
        ({"pipeline_name": ""}, "pipeline_name"),
        ({"queue_url": " "}, "queue_url"),
        ({"safety_poll_interval": 0}, "safety_poll_interval"),
    ],
)
def test_bad_arguments_fail_with_a_clear_error(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"pipeline_name": "training", "queue_url": "https://q", **kwargs}
    with pytest.raises(ValueError, match=match):
        PipelineStatusEventTrigger(**arguments)  # type: ignore[arg-type]


def test_model_package_arns_are_the_succeeded_register_steps_latest_attempts() -> None:
    import datetime as dt

    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    steps = [
        {
            "StepName": "Train",
            "StepStatus": "Succeeded",
            "StartTime": t,
            "Metadata": {"TrainingJob": {"Arn": "j"}},
        },
        {
            "StepName": "RegisterB",
            "StepStatus": "Succeeded",
            "StartTime": t + dt.timedelta(2),
            "AttemptCount": 1,
            "Metadata": {"RegisterModel": {"Arn": "pkg-b"}},
        },
        {
            "StepName": "RegisterA",
            "StepStatus": "Failed",
            "StartTime": t,
            "AttemptCount": 1,
            "Metadata": {"RegisterModel": {"Arn": "pkg-a-failed"}},
        },
        {
            "StepName": "RegisterA",
            "StepStatus": "Succeeded",
            "StartTime": t + dt.timedelta(1),
            "AttemptCount": 2,
            "Metadata": {"RegisterModel": {"Arn": "pkg-a"}},
        },
    ]
    assert len(latest_attempts(steps)) == 3
    assert model_package_arns_of(steps) == ["pkg-a", "pkg-b"]


def _page(**statuses: str) -> list[dict[str, str]]:
    return [
        {"PipelineExecutionArn": arn, "PipelineExecutionStatus": status} for arn, status in statuses.items()
    ]


def test_the_first_picture_fires_nothing_then_only_what_reached_a_status_since() -> None:
    state = WatchState()
    assert state.newly_reached(_page(a="Succeeded", b="Executing"), ["Succeeded"], 100.0, 60.0) == []
    newest_first = _page(d="Failed", c="Succeeded", b="Succeeded", a="Succeeded")
    found = state.newly_reached(newest_first, ["Succeeded"], 110.0, 60.0)
    assert [s["PipelineExecutionArn"] for s in found] == ["b", "c"]  # oldest first
    state.fire(outcome_key("E", "Succeeded"))
    assert state.newly_reached(_page(E="Succeeded"), ["Succeeded"], 120.0, 60.0) == []  # fired by its event


def test_a_picture_older_than_the_window_catches_nothing_up() -> None:
    state = WatchState.from_json({"fired": [], "picture": {"a": "Executing"}, "at": 100.0})
    assert state.newly_reached(_page(a="Succeeded"), ["Succeeded"], 1000.0, 60.0) == []
    assert state.to_json() == {"fired": [], "picture": {"a": "Succeeded"}, "at": 1000.0}


def test_fired_outcomes_are_bounded_and_survive_json() -> None:
    state = WatchState()
    for i in range(600):
        state.fire(outcome_key(f"ARN-{i}", "Succeeded"))
    again = WatchState.from_json(state.to_json())
    assert len(again.fired) == 500 and outcome_key("arn-599", "Succeeded") in again.fired
    assert outcome_key("arn-0", "Succeeded") not in again.fired
    assert WatchState.from_json("garbage").to_json() == {"fired": [], "picture": None, "at": 0.0}


def test_the_watcher_hash_survives_its_trigger_row() -> None:
    """The dag-processor compares the hash of the DAG's watcher with the hash of the stored trigger row at
    every parse: a difference would replace the trigger (and its running watcher) each time."""
    from airflow.models.trigger import Trigger
    from airflow.serialization.encoders import encode_trigger
    from airflow.triggers.base import BaseEventTrigger

    trigger = PipelineStatusEventTrigger(
        pipeline_name="training",
        queue_url="https://q",
        statuses=("Succeeded", "Failed"),
        botocore_config={"retries": {"max_attempts": 3}},
    )
    encoded = encode_trigger(trigger)
    row = Trigger(classpath=encoded["classpath"], kwargs=encoded["kwargs"])
    assert BaseEventTrigger.hash(row.classpath, row.kwargs) == BaseEventTrigger.hash(
        encoded["classpath"], encoded["kwargs"]
    )
    assert PipelineStatusEventTrigger(**row.kwargs).serialize() == trigger.serialize()
