"""PipelineStatusEventTrigger's arguments: checked at DAG parse time, serialised so that equal watchers
make equal trigger hashes (Airflow keeps one trigger row per hash)."""

from __future__ import annotations

import pytest
from sagemaker_pipelines_provider.results import latest_attempts
from sagemaker_pipelines_provider.triggers.events import PipelineStatusEventTrigger, model_package_arns_of

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
