"""SageMakerPipelineCapacityWaitTrigger: the timer an operator defers to after ``ResourceLimitExceeded``.

It fires once, at the absolute ``moment`` (a restart on another triggerer does not wait its delay again),
with ``carry`` — the operator's deferral kwargs — as its event payload; see docs/triggerer.md for why they
travel in the event. ``CapacityWaitTrigger`` is a deprecated alias.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sagemaker_pipelines_provider.utils.deadline import parse_deadline
from sagemaker_pipelines_provider.utils.deprecation import renamed

CLASSPATH = "sagemaker_pipelines_provider.triggers.capacity.SageMakerPipelineCapacityWaitTrigger"


class SageMakerPipelineCapacityWaitTrigger(BaseTrigger):
    """Fire once at ``moment`` (ISO-8601) with ``carry`` (JSON values) as the event payload."""

    def __init__(self, moment: str, carry: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        parse_deadline(moment)  # a bad moment fails at defer time, not in the triggerer
        self.moment = moment
        self.carry = dict(carry or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"moment": self.moment, "carry": self.carry}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        left = (parse_deadline(self.moment) - dt.datetime.now(dt.UTC)).total_seconds()
        if left > 0:
            await asyncio.sleep(left)
        yield TriggerEvent(self.carry)


__getattr__ = renamed(
    __name__,
    globals(),
    {
        "CapacityWaitTrigger": "SageMakerPipelineCapacityWaitTrigger",
    },
)
