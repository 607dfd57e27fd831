"""SageMakerPipelineCapacityWaitTrigger: fires once at its moment, with the deferral kwargs as payload."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sagemaker_pipelines_provider.triggers.capacity import CLASSPATH, SageMakerPipelineCapacityWaitTrigger


def first_event(trigger: SageMakerPipelineCapacityWaitTrigger) -> object:
    async def run() -> object:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(run())


def test_round_trips_and_fires_with_its_carry() -> None:
    moment = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.2)).isoformat()
    carry = {"deadline": "2030-01-01T00:00:00+00:00", "capacity_attempt": 3, "capacity_since": None}
    classpath, kwargs = SageMakerPipelineCapacityWaitTrigger(moment, carry).serialize()
    assert classpath == CLASSPATH
    rebuilt = SageMakerPipelineCapacityWaitTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert first_event(rebuilt) == carry
    assert dt.datetime.now(dt.UTC) >= dt.datetime.fromisoformat(moment)


def test_a_moment_in_the_past_fires_at_once() -> None:
    assert first_event(SageMakerPipelineCapacityWaitTrigger("2000-01-01T00:00:00+00:00")) == {}


def test_a_bad_moment_fails_when_deferring() -> None:
    with pytest.raises(ValueError):
        SageMakerPipelineCapacityWaitTrigger("next tuesday")
