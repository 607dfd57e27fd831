"""CapacityWaitTrigger: the timer a deferrable operator waits on after ``ResourceLimitExceeded``.

It fires once, at ``moment``, with ``carry`` as its event payload. The operator's deferral kwargs (its
deadline and where the capacity wait stands) travel in ``carry`` as well as in the kwargs: Airflow's
triggerer merges the event into the task's kwargs, but ``dag.test()`` and ``airflow dags test`` replace the
kwargs by the event, and a deadline lost there would let the wait go on past ``execution_timeout``.
``moment`` is absolute, so a trigger that restarts on another triggerer does not wait its delay again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from sagemaker_pipelines_provider.utils.deadline import parse_deadline

CLASSPATH = "sagemaker_pipelines_provider.triggers.capacity.CapacityWaitTrigger"


class CapacityWaitTrigger(BaseTrigger):
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
