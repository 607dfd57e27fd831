"""The execution and step triggers given an ``event_queue_url``, against the local endpoint.

The seeded queue ``sagemaker-pipeline-events`` receives the engine's EventBridge events; the event faults
(``set_event_faults``) drop, duplicate and reorder them. Nothing is timed. The pipeline waits at a Callback
step (the gate) until the shared poller's first round has read the execution Executing; with a safety poll
of an hour that round is the only one, so an end after the gate's answer can only come from the events, and
the call record shows it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections import Counter
from typing import Any

import pytest
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger
from sagemaker_pipelines_provider.triggers.pipeline_step import SageMakerPipelineStepTrigger
from sagemaker_pipelines_provider.utils.pipeline_events import execution_rank

from tests.support.pipelines import (
    callback_step,
    calls,
    create_pipeline,
    create_queue,
    fast_endpoint,
    processing_step,
    wait_until,
)

pytestmark = pytest.mark.integration

STEP_TYPES = {"Prep": "Processing", "Gate": "Callback", "Score": "Processing"}
HOUR = 3600.0
ROWS = [{"Name": "Rows", "Type": "Integer", "DefaultValue": 7}]
STATUS_LINE = re.compile(r"Pipeline execution (?P<arn>\S+) is (?P<status>\w+)")
STEP_LINE = re.compile(r"Step (?P<step>\w+) \((?P<type>\w+)\): (?P<status>\w+)")


@pytest.fixture
def queue_url(local_aws: Any) -> str:
    url = str(local_aws.seed()["events_queue_url"])
    fast_endpoint(local_aws, step_seconds=0.2)
    return url


class Gated:
    """A pipeline Prep -> Gate (Callback) -> Score and its callback queue."""

    def __init__(self, local_aws: Any) -> None:
        self.local_aws = local_aws
        self.callbacks = create_queue(local_aws)
        steps = [
            processing_step("Prep"),
            callback_step("Gate", self.callbacks, ["Prep"]),
            processing_step("Score", ["Gate"]),
        ]
        self.pipeline = create_pipeline(local_aws, parameters=ROWS, steps=steps)

    def start(self) -> str:
        sagemaker = self.local_aws.client("sagemaker")
        return str(sagemaker.start_pipeline_execution(PipelineName=self.pipeline)["PipelineExecutionArn"])

    def list_calls(self) -> list[dict[str, Any]]:
        return calls(self.local_aws, "ListPipelineExecutions", self.pipeline)

    def answer_after_the_first_read(self, fail: str | None = None) -> None:
        """Once the shared poller has read the pipeline's executions (the gate still closed), answer the
        gate of the (one) execution: success, or failure with reason ``fail``."""
        wait_until(self.list_calls, what="the first read")
        sqs = self.local_aws.client("sqs")
        messages: list[dict[str, Any]] = []

        def received() -> bool:
            messages.extend(sqs.receive_message(QueueUrl=self.callbacks).get("Messages", []))
            return bool(messages)

        wait_until(received, what="the callback message")
        token = json.loads(messages[0]["Body"])["token"]
        sagemaker = self.local_aws.client("sagemaker")
        if fail is None:
            sagemaker.send_pipeline_execution_step_success(
                CallbackToken=token, OutputParameters=[{"Name": "ok", "Value": "true"}]
            )
        else:
            sagemaker.send_pipeline_execution_step_failure(CallbackToken=token, FailureReason=fail)

    def run(self, *triggers: Any, fail: str | None = None) -> list[dict[str, Any]]:
        """Run ``triggers`` to their first event, answering the gate after the first read meanwhile."""

        async def scenario() -> list[dict[str, Any]]:
            waiting = asyncio.gather(*(anext(t.run()) for t in triggers))
            await asyncio.to_thread(self.answer_after_the_first_read, fail)
            return [dict(e.payload) for e in await waiting]

        return asyncio.run(scenario())

    def wait(
        self, queue_url: str, fail: str | None = None, arn: str | None = None, **kwargs: Any
    ) -> tuple[str, dict[str, Any], Counter[str]]:
        """Start an execution (unless ``arn`` is given) and wait for it with an execution trigger
        (``kwargs`` its arguments); ``(ARN, event payload, the SageMaker calls naming the ARN meanwhile)``."""
        arn = arn or self.start()
        since = cursor(self.local_aws)
        (event,) = self.run(execution_trigger(arn, queue_url, **kwargs), fail=fail)
        return arn, event, per_execution(self.local_aws, arn, since)


def execution_trigger(arn: str, queue_url: str, **kwargs: Any) -> SageMakerPipelineExecutionTrigger:
    options: dict[str, Any] = {
        "poll_interval": 0.1,  # unused with events: the safety poll paces the poller
        "safety_poll_interval": HOUR,
        "step_types": STEP_TYPES,
        "parameters": {"Rows": "7"},
        **kwargs,
    }
    return SageMakerPipelineExecutionTrigger(arn, event_queue_url=queue_url, **options)


def step_trigger(arn: str, queue_url: str, step: str, **kwargs: Any) -> SageMakerPipelineStepTrigger:
    options: dict[str, Any] = {"step_type": STEP_TYPES[step], "safety_poll_interval": HOUR, **kwargs}
    return SageMakerPipelineStepTrigger(arn, step, event_queue_url=queue_url, **options)


def wait(trigger: Any) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        return dict((await anext(trigger.run())).payload)

    return asyncio.run(first())


def cursor(local_aws: Any) -> int:
    return int(local_aws.controls.calls()[-1]["seq"])


def per_execution(local_aws: Any, arn: str, since: int) -> Counter[str]:
    """SageMaker calls naming ``arn`` since the ``since`` cursor, by action."""
    return Counter(
        c["action"]
        for c in local_aws.controls.calls(service="sagemaker", since=since)
        if (c.get("args") or {}).get("PipelineExecutionArn") == arn
    )


def listed_result(arn: str) -> dict[str, Any]:
    """The result as ListPipelineExecutionSteps and DescribePipelineExecution give it."""
    return dict(SageMakerPipelineHook().get_execution_result(arn, step_types=STEP_TYPES))


def whole_seconds(result: dict[str, Any]) -> dict[str, Any]:
    """The result with step times cut to whole seconds: events carry times to the second."""
    steps = {}
    for name, step in result["steps"].items():
        cut = {
            key: dt.datetime.fromisoformat(step[key]).replace(microsecond=0).isoformat()
            if step[key]
            else None
            for key in ("start", "end")
        }
        steps[name] = {**step, **cut}
    return {**result, "steps": steps}


def trigger_lines(capfd: Any) -> list[str]:
    """The trigger's log lines printed so far (Airflow's structlog writes them to the output)."""
    captured = capfd.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if "Trigger" in line]


def assert_forward_only(lines: list[str]) -> None:
    """Status lines never go back; each step's lines go forward, each status once."""
    statuses = [m.group("status") for m in map(STATUS_LINE.search, lines) if m]
    assert [execution_rank(s) for s in statuses] == sorted({execution_rank(s) for s in statuses}), statuses
    order = ["Starting", "Executing", "Stopping", "Succeeded", "Failed", "Stopped"]
    logged: dict[str, list[str]] = {}
    for m in filter(None, map(STEP_LINE.search, lines)):
        logged.setdefault(m.group("step"), []).append(m.group("status"))
    for step, seen in logged.items():
        assert seen == sorted(set(seen), key=order.index), (step, seen)


# ---------------------------------------------------------------------------------------------------------
# the execution trigger


def test_the_end_comes_from_the_events_and_costs_no_call(local_aws: Any, queue_url: str, capfd: Any) -> None:
    gated = Gated(local_aws)
    arn, event, made = gated.wait(queue_url)

    assert event["status"] == "success", event
    assert len(gated.list_calls()) == 1  # the first read only: the end came from the events
    # every step seen Succeeded in the events, parameters given: the result cost no call at all
    assert made == Counter(), made
    assert whole_seconds(event["result"]) == whole_seconds(listed_result(arn))
    assert event["result"]["outputs"]["Gate"] == {"ok": "true"}
    lines = trigger_lines(capfd)
    statuses = [m.group("status") for m in map(STATUS_LINE.search, lines) if m]
    assert statuses == ["Executing", "Succeeded"], statuses
    ended = max(i for i, line in enumerate(lines) if STATUS_LINE.search(line))
    step_lines = [
        (i, m.group("step"), m.group("status")) for i, m in enumerate(map(STEP_LINE.search, lines)) if m
    ]
    # a line per step change, from the step events, as they came: before the execution's end
    assert {(step, status) for _, step, status in step_lines} >= {(s, "Succeeded") for s in STEP_TYPES}
    assert all(i < ended for i, _, _ in step_lines)
    assert_forward_only(lines)


def test_without_the_parameters_the_result_costs_one_call(local_aws: Any, queue_url: str) -> None:
    _, event, made = Gated(local_aws).wait(queue_url, parameters=None)
    assert made == Counter({"ListPipelineParametersForExecution": 1}), made
    assert event["status"] == "success"
    assert event["result"]["parameters"] == {"Rows": "7"}


@pytest.mark.parametrize(
    ("fault", "counted"), [("duplicate_rate", "duplicated"), ("reorder_rate", "reordered")]
)
def test_duplicates_and_disorder_never_move_a_status_back(
    local_aws: Any, queue_url: str, capfd: Any, fault: str, counted: str
) -> None:
    local_aws.controls.set_event_faults(**{fault: 1.0})
    gated = Gated(local_aws)
    arn, event, made = gated.wait(queue_url)

    assert event["status"] == "success", event
    assert len(gated.list_calls()) == 1  # the end came from an event
    # a step event held back behind the execution's end leaves the picture incomplete: one listing then
    assert sum(made.values()) <= 1 and set(made) <= {"ListPipelineExecutionSteps"}, made
    assert whole_seconds(event["result"]) == whole_seconds(listed_result(arn))
    assert_forward_only(trigger_lines(capfd))
    assert local_aws.controls.event_faults()["counts"].get(counted, 0) > 0


def test_lost_events_end_through_the_safety_poll(local_aws: Any, queue_url: str) -> None:
    local_aws.controls.set_event_faults(drop_rate=1.0)
    gated = Gated(local_aws)
    arn, event, made = gated.wait(queue_url, safety_poll_interval=0.2)

    assert event["status"] == "success", event
    assert local_aws.controls.event_faults()["counts"].get("delivered", 0) == 0
    assert len(gated.list_calls()) >= 2  # a safety poll after the first read saw the end
    assert made == Counter({"ListPipelineExecutionSteps": 1}), made  # no step event: listed at the end
    assert event["result"] == listed_result(arn)


def test_events_of_other_executions_do_not_disturb_the_wait(
    local_aws: Any, queue_url: str, capfd: Any
) -> None:
    other = Gated(local_aws).start()  # left at its gate: its events are on the queue, nobody waits for them
    plain = create_pipeline(local_aws, parameters=ROWS, steps=[processing_step("Prep")])
    sagemaker = local_aws.client("sagemaker")
    finished = str(sagemaker.start_pipeline_execution(PipelineName=plain)["PipelineExecutionArn"])
    since = cursor(local_aws)
    arn, event, made = Gated(local_aws).wait(queue_url)

    assert event["status"] == "success", event
    assert event["result"]["pipeline_execution_arn"] == arn
    assert made == Counter(), made
    assert whole_seconds(event["result"]) == whole_seconds(listed_result(arn))
    assert per_execution(local_aws, other, since) == per_execution(local_aws, finished, since) == Counter()
    assert {m.group("arn") for m in map(STATUS_LINE.search, trigger_lines(capfd)) if m} == {arn}


def test_a_failed_end_reads_the_reason_and_lists_the_steps(local_aws: Any, queue_url: str) -> None:
    gated = Gated(local_aws)
    arn, event, made = gated.wait(queue_url, fail="the reviewer said no")

    assert event["status"] == "failure", event
    assert "Gate (Callback): the reviewer said no" in event["message"]
    # the steps that never ran (Score) cannot be told from lost events: listed; the reason: described
    assert made == Counter({"ListPipelineExecutionSteps": 1, "DescribePipelineExecution": 1}), made
    assert event["result"] == listed_result(arn)


def test_a_late_failed_event_of_a_resumed_execution_does_not_end_the_wait(
    local_aws: Any, queue_url: str
) -> None:
    """The execution failed (its Failed event is on the queue) and was resumed with RetryPipelineExecution
    before the wait began: SageMaker's answer refutes the Failed event, and the wait goes on to the end."""
    gated = Gated(local_aws)
    local_aws.controls.set_step_behaviour(gated.pipeline, "Prep", fail="flaky", fail_attempts=1)
    arn = gated.start()
    sagemaker = local_aws.client("sagemaker")

    def status() -> str:
        return str(sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"])

    wait_until(lambda: status() == "Failed", what="the first attempt to fail")
    sagemaker.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken="r" * 40)

    _, event, made = gated.wait(queue_url, arn=arn)

    assert event["status"] == "success", event
    assert made["DescribePipelineExecution"] == 1, made  # the one answer that refuted the late Failed event
    assert made["ListPipelineExecutionSteps"] <= 1, made
    assert whole_seconds(event["result"]) == whole_seconds(listed_result(arn))
    assert event["result"]["steps"]["Prep"]["attempts"] == 2


def test_a_missing_queue_fails_the_wait_with_the_receivers_message(local_aws: Any, queue_url: str) -> None:
    arn = Gated(local_aws).start()
    missing = queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    event = wait(execution_trigger(arn, missing))
    assert event["status"] == "error"
    assert "no-such-queue" in event["message"], event


# ---------------------------------------------------------------------------------------------------------
# the step trigger


def test_step_events_wake_the_steps_poller(local_aws: Any, queue_url: str) -> None:
    gated = Gated(local_aws)
    arn = gated.start()
    since = cursor(local_aws)

    gate, score = gated.run(step_trigger(arn, queue_url, "Gate"), step_trigger(arn, queue_url, "Score"))

    assert (gate["status"], score["status"]) == ("success", "success")
    assert gate["step"]["outputs"] == {"ok": "true"} and score["step"]["status"] == "Succeeded"
    assert len(gated.list_calls()) == 1  # the first read only: the ends came through the events
    # one listing per round: the first, then one per wake-up (a step's end, the execution's end, at most
    # one per step and one for the execution), however many step tasks wait
    listings = per_execution(local_aws, arn, since)["ListPipelineExecutionSteps"]
    assert 2 <= listings <= 1 + len(STEP_TYPES) + 1, listings


def test_a_step_wait_without_events_ends_through_the_safety_poll(local_aws: Any, queue_url: str) -> None:
    local_aws.controls.set_event_faults(drop_rate=1.0)
    gated = Gated(local_aws)
    arn = gated.start()
    (score,) = gated.run(step_trigger(arn, queue_url, "Score", safety_poll_interval=0.2))
    assert score["status"] == "success"
    assert len(gated.list_calls()) >= 2


def test_a_step_wait_on_a_missing_queue_fails_with_the_receivers_message(
    local_aws: Any, queue_url: str
) -> None:
    arn = Gated(local_aws).start()
    missing = queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    payload = wait(step_trigger(arn, missing, "Score"))
    assert payload["status"] == "error"
    assert "no-such-queue" in payload["message"], payload
