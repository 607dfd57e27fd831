"""PipelineStatusEventTrigger alone, in an asyncio loop, against the local endpoint.

Each test has its own pipeline (the ``retraining`` demo definition under a fresh name: it registers a
model) and its own queue, added as a second target of the seeded EventBridge rule, so other tests' events
never reach it. The trigger runs as a triggerer runs a watcher's trigger: ``run()`` for as long as the
watcher lives, each yielded event one asset event. Waits are bounded polls, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.seed import EVENTS_RULE, events_queue_policy, load_definition
from sagemaker_pipelines_provider.triggers.events import STORE_KEY, PipelineStatusEventTrigger, outcome_key
from sagemaker_pipelines_provider.utils.pipeline_events import EXECUTION_EVENT

from tests.support.endpoint import ROLE_ARN, unique
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


class RunningTrigger:
    """``trigger.run()`` on a background event loop; ``payloads`` collects what it fires."""

    def __init__(self, trigger: PipelineStatusEventTrigger) -> None:
        self.trigger = trigger
        self.payloads: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-watcher", daemon=True)
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(self._run(), self.loop)

    async def _run(self) -> None:
        try:
            async for event in self.trigger.run():
                self.payloads.append(event.payload)
        except BaseException as err:
            self.error = err
            raise

    def fired_for(self, arn: str) -> list[dict[str, Any]]:
        assert self.error is None or isinstance(self.error, asyncio.CancelledError), self.error
        return [p for p in self.payloads if p["pipeline_execution_arn"] == arn]

    def wait_for(self, arn: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_until(lambda: next(iter(self.fired_for(arn)), None), timeout, what=f"an event for {arn}")

    def stop(self) -> None:
        """Cancel the trigger (as a triggerer does when the watcher goes) and its receiver; close."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        # Generous: on a loaded machine closing the clients of a trigger and its receiver can take a while.
        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=90)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class AssetStateStore:
    """What a triggerer gives a watcher of one asset as ``asset_state_store`` (Airflow's accessor
    interface), kept in memory: the trigger's records survive it, as the metadata DB's do."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))


@pytest.fixture
def events(local_aws: Any) -> Iterator[dict[str, Any]]:
    """A pipeline and an events queue of this test's own: ``{"pipeline", "queue_url"}``."""
    seeded = local_aws.seed()
    local_aws.controls.set_time_scale(0)
    sqs, rules = local_aws.client("sqs"), local_aws.client("events")
    name = unique("status-events")
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = events_queue_policy(queue_arn, seeded["events_rule_arn"])
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    rules.put_targets(Rule=EVENTS_RULE, Targets=[{"Id": name, "Arn": queue_arn}])
    pipeline = unique("retraining")
    local_aws.client("sagemaker").create_pipeline(
        PipelineName=pipeline, PipelineDefinition=load_definition("retraining"), RoleArn=ROLE_ARN
    )
    try:
        yield {"pipeline": pipeline, "queue_url": queue_url}
    finally:
        rules.remove_targets(Rule=EVENTS_RULE, Ids=[name])
        local_aws.controls.set_event_faults()


@contextlib.contextmanager
def watching(trigger: PipelineStatusEventTrigger | None = None, **kwargs: Any) -> Iterator[RunningTrigger]:
    running = RunningTrigger(trigger or PipelineStatusEventTrigger(**kwargs))
    try:
        yield running
    finally:
        running.stop()


def run_to_end(local_aws: Any, pipeline: str, *, fail: bool = False) -> str:
    """Start an execution of ``pipeline`` as anyone outside Airflow would (boto3) and wait for its end;
    ``fail`` makes its Train step fail."""
    controls = local_aws.controls
    controls.set_step_behaviour(pipeline, "Train", fail="injected: out of memory" if fail else None)
    sm = local_aws.client("sagemaker")
    arn = str(sm.start_pipeline_execution(PipelineName=pipeline)["PipelineExecutionArn"])
    wanted = "Failed" if fail else "Succeeded"
    wait_until(
        lambda: sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == wanted,
        what=f"{arn} to be {wanted}",
    )
    return arn


def registered_models(local_aws: Any, arn: str) -> list[str]:
    steps = local_aws.client("sagemaker").list_pipeline_execution_steps(PipelineExecutionArn=arn)
    return [
        s["Metadata"]["RegisterModel"]["Arn"]
        for s in steps["PipelineExecutionSteps"]
        if "RegisterModel" in s.get("Metadata", {})
    ]


def polls(local_aws: Any, pipeline: str) -> int:
    """The safety polls of ``pipeline`` so far (ListPipelineExecutions calls answered)."""
    calls = local_aws.controls.calls(action="ListPipelineExecutions")
    return sum(1 for c in calls if c["args"].get("PipelineName") == pipeline and c.get("status") == 200)


def envelope(event_id: str, arn: str, status: str, **detail: Any) -> str:
    """An execution status-change event as EventBridge puts it on the queue."""
    pipeline_arn = arn.split("/execution/")[0]
    body = {
        "version": "0",
        "id": event_id,
        "detail-type": EXECUTION_EVENT,
        "source": "aws.sagemaker",
        "account": "123456789012",
        "time": "2026-01-02T03:04:05Z",
        "region": "us-east-1",
        "resources": [pipeline_arn, arn],
        "detail": {
            "currentPipelineExecutionStatus": status,
            "previousPipelineExecutionStatus": "Executing",
            "pipelineArn": pipeline_arn,
            "pipelineExecutionArn": arn,
            **detail,
        },
    }
    return json.dumps(body)


def test_fires_for_succeeded_with_the_model_packages_not_for_failed(
    local_aws: Any, events: dict[str, Any]
) -> None:
    with watching(pipeline_name=events["pipeline"], queue_url=events["queue_url"]) as watcher:
        failed = run_to_end(local_aws, events["pipeline"], fail=True)
        succeeded = run_to_end(local_aws, events["pipeline"])
        payload = watcher.wait_for(succeeded)
        assert watcher.fired_for(failed) == []  # its event came first, on the same queue
    assert payload["pipeline_name"] == events["pipeline"]
    assert payload["status"] == "Succeeded"
    assert payload["failure_reason"] is None
    models = registered_models(local_aws, succeeded)
    assert models and payload["model_package_arns"] == models
    described = local_aws.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=succeeded)
    assert payload["display_name"] == described.get("PipelineExecutionDisplayName")
    assert payload["event_id"] and payload["event_time"]
    assert len(watcher.payloads) == 1, watcher.payloads


def test_fires_for_failed_when_asked_with_the_failure_reason(local_aws: Any, events: dict[str, Any]) -> None:
    with watching(
        pipeline_name=events["pipeline"], queue_url=events["queue_url"], statuses=["Failed", "Succeeded"]
    ) as watcher:
        failed = run_to_end(local_aws, events["pipeline"], fail=True)
        succeeded = run_to_end(local_aws, events["pipeline"])
        watcher.wait_for(succeeded)
        (payload,) = watcher.fired_for(failed)
    reason = local_aws.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=failed)[
        "FailureReason"
    ]
    assert payload["status"] == "Failed"
    assert "out of memory" in reason and payload["failure_reason"] == reason
    assert payload["model_package_arns"] == []


def test_duplicated_deliveries_fire_once(local_aws: Any, events: dict[str, Any]) -> None:
    local_aws.controls.set_event_faults(duplicate_rate=1.0, seed=3)
    with watching(pipeline_name=events["pipeline"], queue_url=events["queue_url"]) as watcher:
        first = run_to_end(local_aws, events["pipeline"])
        second = run_to_end(local_aws, events["pipeline"])
        watcher.wait_for(second)
        last = run_to_end(local_aws, events["pipeline"])
        watcher.wait_for(last)  # every copy of the first two events was on the queue before its events
        assert [len(watcher.fired_for(arn)) for arn in (first, second)] == [1, 1]
    assert local_aws.controls.event_faults()["counts"]["duplicated"] > 0


def test_malformed_messages_are_skipped_and_copies_fire_once(local_aws: Any, events: dict[str, Any]) -> None:
    local_aws.controls.set_event_faults(drop_rate=1.0)  # its own events never come: copies are sent below
    arn = run_to_end(local_aws, events["pipeline"])
    local_aws.controls.set_event_faults()
    sqs = local_aws.client("sqs")
    event_id = str(uuid.uuid4())
    with watching(pipeline_name=events["pipeline"], queue_url=events["queue_url"]) as watcher:
        for body in (
            "not json",
            json.dumps({"source": "aws.sagemaker", "detail-type": EXECUTION_EVENT}),  # no id, no detail
            envelope(event_id, arn, "Succeeded"),
            envelope(event_id, arn, "Succeeded"),  # the same event delivered again
            envelope(str(uuid.uuid4()), arn, "Bogus"),
        ):
            sqs.send_message(QueueUrl=events["queue_url"], MessageBody=body)
        later = run_to_end(local_aws, events["pipeline"])
        watcher.wait_for(later)  # its event came after every message above
        fired = [(p["pipeline_execution_arn"], p["event_id"]) for p in watcher.payloads]
    assert fired == [(arn, event_id), (later, watcher.payloads[-1]["event_id"])], fired


def test_a_watcher_re_created_elsewhere_neither_repeats_nor_misses(
    local_aws: Any, events: dict[str, Any]
) -> None:
    """A watcher moved to another triggerer (or restarted) starts from the asset's state store: a copy of
    an event fired before does not fire again, and an execution that ended while no watcher ran (its event
    taken by the triggerer that went away) fires from the first safety poll."""
    arn = run_to_end(local_aws, events["pipeline"])
    store = AssetStateStore()

    def watcher() -> contextlib.AbstractContextManager[RunningTrigger]:
        trigger = PipelineStatusEventTrigger(pipeline_name=events["pipeline"], queue_url=events["queue_url"])
        trigger.asset_state_store = store  # type: ignore[assignment]
        return watching(trigger)

    with watcher() as first:
        payload = first.wait_for(arn)
    assert payload["detected_by"] == "event"
    assert outcome_key(arn, "Succeeded") in store.values[STORE_KEY]["fired"]

    local_aws.controls.set_event_faults(drop_rate=1.0)
    missed = run_to_end(local_aws, events["pipeline"])
    local_aws.controls.set_event_faults()
    with watcher() as second:
        second.wait_for(missed)
        copy = envelope(payload["event_id"], arn, "Succeeded")
        local_aws.client("sqs").send_message(QueueUrl=events["queue_url"], MessageBody=copy)
        later = run_to_end(local_aws, events["pipeline"])
        second.wait_for(later)
        fired = [(p["pipeline_execution_arn"], p["detected_by"]) for p in second.payloads]
    assert fired == [(missed, "poll"), (later, "event")], fired
    assert second.payloads[0]["model_package_arns"] == registered_models(local_aws, missed)


def test_dropped_events_fire_from_the_safety_poll(local_aws: Any, events: dict[str, Any]) -> None:
    local_aws.controls.set_event_faults(drop_rate=1.0)
    with watching(
        pipeline_name=events["pipeline"], queue_url=events["queue_url"], safety_poll_interval=0.3
    ) as watcher:
        wait_until(lambda: polls(local_aws, events["pipeline"]) >= 2, what="the first picture")
        failed = run_to_end(local_aws, events["pipeline"], fail=True)
        succeeded = run_to_end(local_aws, events["pipeline"])
        payload = watcher.wait_for(succeeded)
        assert watcher.fired_for(failed) == []
    assert payload["detected_by"] == "poll" and payload["event_id"] is None
    assert payload["model_package_arns"] == registered_models(local_aws, succeeded)
    assert local_aws.controls.event_faults()["counts"]["dropped"] > 0


def test_a_missing_queue_is_logged_clearly_and_never_fires(
    local_aws: Any, events: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    sqs = local_aws.client("sqs")
    missing = sqs.get_queue_url(QueueName=events["queue_url"].rsplit("/", 1)[1])["QueueUrl"] + "-missing"
    caplog.set_level(logging.ERROR)
    with watching(pipeline_name=events["pipeline"], queue_url=missing) as watcher:
        record = wait_until(
            lambda: next((r for r in caplog.records if missing in r.getMessage()), None),
            what="the error naming the queue",
        )
        assert watcher.payloads == []
    assert record.levelno == logging.ERROR
    assert "NonExistentQueue" in record.getMessage() or "does not exist" in record.getMessage()
