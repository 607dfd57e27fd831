"""Trigger names: the SageMaker… classes serialise under their own classpath; the old names still load.

Triggers persisted by an older version sit in the metadata database as (old classpath, kwargs). The
triggerer loads them by that classpath, so the old names must still resolve (with a DeprecationWarning), to
the new classes, which take those kwargs unchanged and serialise under the new classpath.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/my-pipe/execution/e1"

#: (module, old name, new name, kwargs exactly as the previous version serialised them)
PERSISTED: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "sagemaker_pipelines_provider.triggers.pipeline",
        "PipelineExecutionTrigger",
        "SageMakerPipelineExecutionTrigger",
        {
            "pipeline_execution_arn": ARN,
            "aws_conn_id": "aws_default",
            "region_name": None,
            "verify": "/etc/ssl/ca.pem",
            "botocore_config": {"read_timeout": 70, "retries": {"mode": "adaptive"}},
            "poll_interval": 30.0,
            "allow_stopped": False,
            "stop_on_kill": True,
            "stop_token": None,
            "deadline": None,
            "step_types": {},
        },
    ),
    (
        "sagemaker_pipelines_provider.triggers.pipeline_step",
        "PipelineStepTrigger",
        "SageMakerPipelineStepTrigger",
        {
            "pipeline_execution_arn": ARN,
            "step_name": "Deploy",
            "step_type": "Processing",
            "branch_chain": [["Inner", True]],
            "resumed_attempt": 2,
            "wait_for_execution_end": True,
            "poll_interval": 3.0,
            "aws_conn_id": "c",
            "region_name": "eu-west-1",
            "verify": None,
            "botocore_config": {"connect_timeout": 5},
        },
    ),
    (
        "sagemaker_pipelines_provider.triggers.callback",
        "CallbackMessageTrigger",
        "SageMakerCallbackTrigger",
        {
            "queue_url": "https://q",
            "pipeline_execution_arn": ARN,
            "pipeline_name": None,
            "match_arguments": {"model": "m"},
            "visibility_timeout": 120,
            "wait_time_seconds": 20,
            "inspect_visibility_timeout": 30,
            "aws_conn_id": None,
            "region_name": None,
            "verify": "/ca.pem",
            "botocore_config": None,
            "timeout_at": "2030-01-01T00:00:00+00:00",
        },
    ),
    (
        "sagemaker_pipelines_provider.triggers.callback",
        "CallbackMessageEventTrigger",
        "SageMakerCallbackEventTrigger",
        {
            "queue_url": "https://q",
            "pipeline_execution_arn": None,
            "pipeline_name": "my-pipe",
            "match_arguments": None,
            "visibility_timeout": 300,
            "wait_time_seconds": 20,
            "inspect_visibility_timeout": 30,
            "aws_conn_id": "aws_default",
            "region_name": "us-east-1",
            "verify": None,
            "botocore_config": None,
        },
    ),
    (
        "sagemaker_pipelines_provider.triggers.capacity",
        "CapacityWaitTrigger",
        "SageMakerPipelineCapacityWaitTrigger",
        {"moment": "2030-01-01T00:00:00+00:00", "carry": {"deadline": None, "capacity": {"attempt": 1}}},
    ),
]


#: kwargs added since that version, with the values a trigger persisted without them takes (their defaults).
ADDED_SINCE: dict[str, dict[str, Any]] = {
    "SageMakerPipelineExecutionTrigger": {
        "parameters": None,
        "event_queue_url": None,
        "safety_poll_interval": 600.0,
    },
    "SageMakerPipelineStepTrigger": {"event_queue_url": None, "safety_poll_interval": 600.0},
}


@pytest.mark.parametrize(("module", "old", "new", "kwargs"), PERSISTED, ids=[p[1] for p in PERSISTED])
def test_a_trigger_persisted_under_its_old_name_loads_and_moves_to_the_new_one(
    module: str, old: str, new: str, kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.trigger import Trigger
    from airflow.sdk._shared.module_loading import import_string

    monkeypatch.delenv("AIRFLOW__SAGEMAKER_PIPELINES__EVENT_SAFETY_POLL_INTERVAL", raising=False)
    # the row an older version wrote: its classpath and its (encrypted) kwargs
    row = Trigger(classpath=f"{module}.{old}", kwargs=kwargs)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated: use {module}.{new}"):
        trigger_class = import_string(row.classpath)  # what the triggerer does with the stored classpath
    assert trigger_class is getattr(importlib.import_module(module), new)
    revived = trigger_class(**Trigger._decrypt_kwargs(row.encrypted_kwargs))
    assert revived.serialize() == (f"{module}.{new}", {**kwargs, **ADDED_SINCE.get(new, {})})


@pytest.mark.parametrize(("module", "old", "new", "kwargs"), PERSISTED, ids=[p[1] for p in PERSISTED])
def test_old_names_import_with_a_deprecation_warning(
    module: str, old: str, new: str, kwargs: dict[str, Any]
) -> None:
    loaded = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=old):
        alias = getattr(loaded, old)
    assert alias is getattr(loaded, new)
    with pytest.raises(AttributeError, match="NoSuchTrigger"):
        loaded.NoSuchTrigger  # noqa: B018 - other names still fail as usual


def test_new_names_import_without_a_warning(recwarn: pytest.WarningsRecorder) -> None:
    import warnings

    warnings.simplefilter("always")
    from sagemaker_pipelines_provider.triggers.callback import (  # noqa: F401
        SageMakerCallbackEventTrigger,
        SageMakerCallbackTrigger,
    )
    from sagemaker_pipelines_provider.triggers.capacity import SageMakerPipelineCapacityWaitTrigger  # noqa: F401
    from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger  # noqa: F401
    from sagemaker_pipelines_provider.triggers.pipeline_step import SageMakerPipelineStepTrigger  # noqa: F401

    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
