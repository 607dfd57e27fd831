"""The shared pipeline-event receiver against the local endpoint: the seeded events queue, fed by the
EventBridge rule, read over HTTP.

- duplicated events (same ``id`` delivered twice) are offered once and every copy is deleted;
- malformed messages are deleted with a WARNING and do not stop the receiver;
- events of an execution nobody waits for are released for other readers, then deleted after the TTL;
- two receivers in two event loops (two triggerers) on one queue: each loop gets every event of the
  execution it waits for;
- a missing queue fails the subscription at once with a clear :class:`EventStreamError`.

Waits are bounded (``asyncio.wait_for``, ``wait_until``), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sagemaker_pipelines_provider.triggers.event_receiver import (
    EventQueueError,
    EventQueueKey,
    EventStreamError,
    PipelineEventReceiver,
    check_event_queue,
    check_event_queue_sync,
    get_event_receiver,
)
from sagemaker_pipelines_provider.utils.pipeline_events import PipelineEvent

from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

#: The (step, status) changes of one run of the seeded one-step ``features`` pipeline.
FEATURES_EVENTS = {
    (None, "Executing"),
    ("PrepareFeatures", "Starting"),
    ("PrepareFeatures", "Executing"),
    ("PrepareFeatures", "Succeeded"),
    (None, "Succeeded"),
}
#: Short long-polls, so that a test's event loop ends soon after its last wait.
FAST = {"wait_time_seconds": 1}


@pytest.fixture
def queue_url(local_aws: Any) -> str:
    url: str = local_aws.seed()["events_queue_url"]
    local_aws.controls.set_time_scale(0)
    return url


def start_features(local_aws: Any) -> str:
    arn: str = local_aws.client("sagemaker").start_pipeline_execution(PipelineName="features")[
        "PipelineExecutionArn"
    ]
    return arn


def on_queue(local_aws: Any, url: str) -> int:
    """Messages on the queue, visible or not."""
    attributes = local_aws.client("sqs").get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def changes(events: list[PipelineEvent]) -> set[tuple[str | None, str]]:
    return {(e.step_name, e.status) for e in events}


async def collect(
    receiver: PipelineEventReceiver,
    arn: str,
    *,
    until: Callable[[list[PipelineEvent]], bool] = lambda got: changes(got) == FEATURES_EVENTS,
    then: Callable[[], bool] = lambda: True,
) -> list[PipelineEvent]:
    """Subscribe to ``arn``; gather its events until ``until(got)``, then stay subscribed until ``then()``
    (checked in a worker thread: it may call the endpoint)."""
    got: list[PipelineEvent] = []
    async with receiver.subscribe_execution(arn) as queue:
        while not until(got):
            item = await asyncio.wait_for(queue.get(), timeout=60)
            assert not isinstance(item, EventStreamError), item.message
            got.append(item)
        for _ in range(3000):
            if await asyncio.to_thread(then):
                break
            try:
                item = await asyncio.wait_for(queue.get(), timeout=0.05)
            except TimeoutError:
                continue
            assert not isinstance(item, EventStreamError), item.message
            got.append(item)
        else:
            raise AssertionError("the after-condition never held")
    return got


def collect_until_empty(
    local_aws: Any, url: str, arn: str, **receiver_kwargs: Any
) -> tuple[list[PipelineEvent], dict[str, int]]:
    """In a new event loop: ``arn``'s events, gathered until the queue is empty; and the receiver's counts."""

    async def main() -> tuple[list[PipelineEvent], dict[str, int]]:
        receiver = get_event_receiver(EventQueueKey(url), **{**FAST, **receiver_kwargs})
        got = await collect(receiver, arn, then=lambda: on_queue(local_aws, url) == 0)
        return got, dict(receiver.counts)

    return asyncio.run(main())


def test_duplicated_events_are_offered_once_and_every_copy_deleted(local_aws: Any, queue_url: str) -> None:
    local_aws.controls.set_event_faults(duplicate_rate=1.0, seed=1)
    arn = start_features(local_aws)
    got, counts = collect_until_empty(local_aws, queue_url, arn)
    assert changes(got) == FEATURES_EVENTS
    assert len(got) == len({e.event_id for e in got}) == 5  # each event once, though delivered twice
    assert all(e.execution_arn == arn and e.pipeline_name == "features" for e in got)
    assert local_aws.controls.event_faults()["counts"]["duplicated"] == 5
    assert counts["messages"] == counts["deleted"] == 10 and counts["offered"] == 5
    assert on_queue(local_aws, queue_url) == 0


def test_malformed_messages_are_deleted_with_a_warning_and_do_not_stop_the_receiver(
    local_aws: Any, queue_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sqs = local_aws.client("sqs")
    junk = {
        "not json": "not JSON",
        '{"source": "aws.s3", "detail-type": "Object Created"}': "source is 'aws.s3'",
        "[1, 2, 3]": "JSON list",
    }
    junk_ids = {
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)["MessageId"]: r for body, r in junk.items()
    }
    arn = start_features(local_aws)
    with caplog.at_level(logging.WARNING, logger="sagemaker_pipelines_provider.triggers.event_receiver"):
        got, counts = collect_until_empty(local_aws, queue_url, arn)
    assert changes(got) == FEATURES_EVENTS
    assert counts["malformed"] == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for message_id, reason in junk_ids.items():
        assert any(message_id in w and queue_url in w and reason in w for w in warnings), (reason, warnings)
    assert on_queue(local_aws, queue_url) == 0


def test_events_nobody_waits_for_are_released_then_deleted_after_the_ttl(
    local_aws: Any, queue_url: str
) -> None:
    nobodys = start_features(local_aws)
    mine = start_features(local_aws)
    got, counts = collect_until_empty(local_aws, queue_url, mine, unclaimed_ttl=2.0, release_max_delay=1.0)
    assert changes(got) == FEATURES_EVENTS and {e.execution_arn for e in got} == {mine}
    assert counts["expired"] == 5  # the other execution's five events, once older than the TTL
    assert counts["released"] >= 5  # ... each released at least once before that
    assert counts["deleted"] == 10
    assert nobodys != mine


def test_two_triggerer_loops_on_one_queue_each_get_the_events_they_wait_for(
    local_aws: Any, queue_url: str
) -> None:
    arns = [start_features(local_aws) for _ in range(2)]
    # both executions' events wait on the queue: whichever loop receives first gets the other's events too
    wait_until(lambda: on_queue(local_aws, queue_url) == 10, what="both executions' events on the queue")
    results: dict[str, list[PipelineEvent]] = {}
    errors: list[BaseException] = []
    receivers: list[PipelineEventReceiver] = []

    def triggerer(arn: str) -> None:
        async def main() -> list[PipelineEvent]:
            receiver = get_event_receiver(EventQueueKey(queue_url), **FAST)
            receivers.append(receiver)
            return await collect(receiver, arn)

        try:
            results[arn] = asyncio.run(main())
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=triggerer, args=(arn,)) for arn in arns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len({id(r) for r in receivers}) == 2  # one receiver per event loop
    assert sum(r.counts["released"] for r in receivers) >= 1  # a loop received the other's events
    assert sum(r.counts["offered"] for r in receivers) == sum(r.counts["deleted"] for r in receivers) == 10
    for arn in arns:
        assert changes(results[arn]) == FEATURES_EVENTS
        assert {e.execution_arn for e in results[arn]} == {arn}
    wait_until(lambda: on_queue(local_aws, queue_url) == 0, what="every event deleted")


def test_a_missing_queue_fails_the_subscription_at_once(local_aws: Any, queue_url: str) -> None:
    missing = queue_url.rsplit("/", 1)[0] + "/no-such-events-queue"

    async def main() -> PipelineEvent | EventStreamError:
        receiver = get_event_receiver(EventQueueKey(missing), **FAST)
        async with receiver.subscribe_execution(start_features(local_aws)) as queue:
            return await asyncio.wait_for(queue.get(), timeout=30)

    item = asyncio.run(main())
    assert isinstance(item, EventStreamError)
    assert missing in item.message and "does not exist" in item.message and "docs/events.md" in item.message


def test_check_event_queue_accepts_the_seeded_queue_and_names_a_missing_one(
    local_aws: Any, queue_url: str
) -> None:
    from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook

    missing = queue_url.rsplit("/", 1)[0] + "/no-such-events-queue"
    sqs = local_aws.client("sqs")
    check_event_queue_sync(sqs, queue_url)
    check_event_queue_sync(SageMakerCallbackQueueHook(), queue_url)
    with pytest.raises(EventQueueError, match="does not exist") as caught:
        check_event_queue_sync(sqs, missing)
    assert missing in str(caught.value)

    async def main() -> None:
        hook = SageMakerCallbackQueueHook()
        await check_event_queue(hook, queue_url)
        async with hook.async_client() as client:
            await check_event_queue(client, queue_url)
            with pytest.raises(EventQueueError, match="does not exist"):
                await check_event_queue(client, missing)

    asyncio.run(main())


@pytest.mark.parametrize("threshold", ["0.0", "2.0"])
def test_step_events_read_like_the_listed_steps(local_aws: Any, queue_url: str, threshold: str) -> None:
    """The ``evaluation`` pipeline (Processing, Condition, then RegisterModel or Fail): each step's last
    event, read as a ListPipelineExecutionSteps entry, carries the listing's status, attempts, failure
    reason and metadata (PascalCase again), and its times to the second."""
    sm = local_aws.client("sagemaker")
    arn = sm.start_pipeline_execution(
        PipelineName="evaluation", PipelineParameters=[{"Name": "AccuracyThreshold", "Value": threshold}]
    )["PipelineExecutionArn"]

    def ended(got: list[PipelineEvent]) -> bool:
        return any(e.kind == "execution" and e.status in ("Succeeded", "Failed") for e in got)

    async def main() -> list[PipelineEvent]:
        receiver = get_event_receiver(EventQueueKey(queue_url), **FAST)
        return await collect(receiver, arn, until=ended, then=lambda: on_queue(local_aws, queue_url) == 0)

    got = asyncio.run(main())
    listed = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    last = {e.step_name: e.as_step_entry() for e in got if e.kind == "step"}
    assert set(last) == {s["StepName"] for s in listed}
    kinds = set()
    for step in listed:
        entry = last[step["StepName"]]
        for key in ("StepStatus", "AttemptCount", "FailureReason", "Metadata"):
            assert entry.get(key) == step.get(key), (step["StepName"], key)
        for key in ("StartTime", "EndTime"):
            assert abs((entry[key] - step[key]).total_seconds()) < 1, (step["StepName"], key)
        kinds |= set(step["Metadata"])
    assert kinds == {"ProcessingJob", "Condition", "RegisterModel" if threshold == "0.0" else "Fail"}
