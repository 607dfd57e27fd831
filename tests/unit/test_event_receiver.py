"""The pipeline-event receiver's message policy and queue checks, over a scripted SQS client.

``ScriptedSqs`` stands in for the aiobotocore SQS client only (what ``AwsBaseHook.get_async_conn`` returns):
each ReceiveMessage answers the next scripted batch, and every call is recorded with its request, so the
policy's decision for each message (offer and delete, delete, release with which delay) can be read off.
The synchronous check runs on a real boto3 client under botocore's Stubber. End-to-end behaviour over HTTP
is in tests/integration/test_event_receiver.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.local.server.event_delivery import envelope
from sagemaker_pipelines_provider.triggers import event_receiver
from sagemaker_pipelines_provider.triggers.event_receiver import (
    EventQueueError,
    EventQueueKey,
    EventStreamError,
    PipelineEventReceiver,
    check_event_queue,
    check_event_queue_sync,
    get_event_receiver,
)
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy
from sagemaker_pipelines_provider.utils.pipeline_events import EXECUTION_EVENT, STEP_EVENT, PipelineEvent

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-pipeline-events"
FAST = BackoffPolicy(base_delay=0.001, max_delay=0.002, max_attempts=2, budget_seconds=1)
MISSING = {
    "Code": "AWS.SimpleQueueService.NonExistentQueue",
    "Message": "The specified queue does not exist.",
}


def arn(pipeline: str, execution: str) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{pipeline}/execution/{execution}"


def event(execution_arn: str, status: str = "Succeeded", *, step: str | None = None) -> dict[str, Any]:
    pipeline_arn = execution_arn.split("/execution/")[0]
    if step is None:
        detail: dict[str, Any] = {"currentPipelineExecutionStatus": status}
        detail_type = EXECUTION_EVENT
    else:
        detail = {"stepName": step, "stepType": "Training", "currentStepStatus": status}
        detail_type = STEP_EVENT
    detail.update(pipelineArn=pipeline_arn, pipelineExecutionArn=execution_arn)
    return envelope("123456789012", "us-east-1", "aws.sagemaker", detail_type, detail, [execution_arn])


def message(
    handle: str, body: Any, *, receives: int = 1, age: float = 1.0, message_id: str | None = None
) -> dict[str, Any]:
    return {
        "MessageId": message_id or f"id-{handle}",
        "ReceiptHandle": handle,
        "Body": body if isinstance(body, str) else json.dumps(body),
        "Attributes": {
            "ApproximateReceiveCount": str(receives),
            "SentTimestamp": str(int((time.time() - age) * 1000)),
        },
    }


def client_error(error: dict[str, str], operation: str) -> ClientError:
    return ClientError({"Error": error}, operation)  # type: ignore[arg-type, typeddict-item]


@dataclass
class ScriptedSqs:
    """ReceiveMessage answers ``batches`` in turn (then nothing, after a short wait); calls are recorded."""

    batches: list[list[dict[str, Any]] | Exception] = field(default_factory=list)
    attributes_error: Exception | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    on_settle: Callable[[str], None] = lambda action: None

    def requests(self, action: str) -> list[dict[str, Any]]:
        return [request for name, request in self.calls if name == action]

    async def get_queue_attributes(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("GetQueueAttributes", request))
        if self.attributes_error is not None:
            raise self.attributes_error
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:sagemaker-pipeline-events"}}

    async def receive_message(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("ReceiveMessage", request))
        if not self.batches:
            await asyncio.sleep(0.01)
            return {}
        batch = self.batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return {"Messages": batch}

    async def delete_message_batch(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("DeleteMessageBatch", request))
        self.on_settle("DeleteMessageBatch")
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}

    async def change_message_visibility_batch(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("ChangeMessageVisibilityBatch", request))
        self.on_settle("ChangeMessageVisibilityBatch")
        return {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}


class ScriptedHook(SageMakerCallbackQueueHook):
    """The real hook (its calls, its backoff) over a :class:`ScriptedSqs` client."""

    def __init__(self, sqs: ScriptedSqs) -> None:
        super().__init__(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)
        self.sqs = sqs

    async def get_async_conn(self) -> Any:
        sqs = self.sqs

        class Context:
            async def __aenter__(self) -> ScriptedSqs:
                return sqs

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Context()


def receiver_on(sqs: ScriptedSqs, **kwargs: Any) -> PipelineEventReceiver:
    kwargs.setdefault("wait_time_seconds", 1)
    return PipelineEventReceiver(EventQueueKey(QUEUE), hook_factory=lambda: ScriptedHook(sqs), **kwargs)


async def next_item(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), timeout=5)


def drained(queue: asyncio.Queue[Any]) -> list[Any]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


def handles(sqs: ScriptedSqs, action: str) -> list[str]:
    """The receipt handles of every ``action`` batch call, in order."""
    return [e["ReceiptHandle"] for r in sqs.requests(action) for e in r["Entries"]]


async def until_received(sqs: ScriptedSqs, count: int) -> None:
    """Wait (bounded) until ``count`` ReceiveMessage calls were made, i.e. the batches before were handled."""
    for _ in range(500):
        if len(sqs.requests("ReceiveMessage")) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} receives: {sqs.calls}")


# -- the policy ------------------------------------------------------------------------------------------


def test_one_batch_gets_each_kind_of_message_its_due(caplog: pytest.LogCaptureFixture) -> None:
    mine, done, nobodys = arn("train", "mine"), arn("train", "done"), arn("train", "other")
    first = event(mine, "Executing")
    sqs = ScriptedSqs(
        batches=[
            [
                message("h-mine", first),
                message("h-copy", first),  # the same event delivered twice
                message("h-step", event(mine, "Executing", step="Fit")),
                message("h-junk", "not json at all"),
                message("h-done", event(done)),
                message("h-new", event(nobodys), receives=1),
                message("h-third", event(nobodys, "Stopping"), receives=3),
                message("h-ninth", event(nobodys, "Executing"), receives=9),
                message("h-old", event(nobodys, "Failed"), age=601),
            ]
        ]
    )
    got: list[Any] = []
    seen_at_settle: list[int] = []

    async def main() -> PipelineEventReceiver:
        receiver = receiver_on(sqs)
        receiver.finished(done)
        async with receiver.subscribe_execution(mine) as queue:
            sqs.on_settle = lambda action: seen_at_settle.append(queue.qsize())
            got.append(await next_item(queue))
            got.append(await next_item(queue))
            await until_received(sqs, 2)
            assert queue.empty()
        return receiver

    with caplog.at_level(logging.WARNING, logger=event_receiver.__name__):
        receiver = asyncio.run(main())
    assert [(e.kind, e.step_name, e.status) for e in got] == [
        ("execution", None, "Executing"),
        ("step", "Fit", "Executing"),
    ]
    assert handles(sqs, "DeleteMessageBatch") == ["h-mine", "h-copy", "h-step", "h-junk", "h-done", "h-old"]
    released = {
        e["ReceiptHandle"]: e["VisibilityTimeout"]
        for r in sqs.requests("ChangeMessageVisibilityBatch")
        for e in r["Entries"]
    }
    assert released == {"h-new": 1, "h-third": 4, "h-ninth": 60}
    assert seen_at_settle == [0, 0]  # the queue is settled before anyone hears of an event
    assert [r.getMessage() for r in caplog.records] == [
        f"Deleting message id-h-junk on {QUEUE}: not a SageMaker pipeline event (the body is not JSON "
        "(Expecting value: line 1 column 1 (char 0)))"
    ]
    counts = receiver.counts
    assert (counts["offered"], counts["malformed"], counts["finished"], counts["expired"]) == (2, 1, 1, 1)
    assert (counts["deleted"], counts["released"]) == (6, 3)
    receive = sqs.requests("ReceiveMessage")[0]
    assert receive["MaxNumberOfMessages"] == 10 and receive["WaitTimeSeconds"] == 1
    assert receive["MessageSystemAttributeNames"] == ["ApproximateReceiveCount", "SentTimestamp"]


def test_release_delays_grow_and_the_ttl_follows_the_constructor() -> None:
    receiver = receiver_on(ScriptedSqs(), release_base_delay=2, release_max_delay=10, unclaimed_ttl=5)
    delays = [receiver._release_delay(message("h", "{}", receives=n)) for n in (1, 2, 3, 4, 50)]
    assert delays == [2, 4, 8, 10, 10]
    assert receiver.unclaimed_ttl == 5
    assert PipelineEventReceiver(EventQueueKey(QUEUE)).unclaimed_ttl == event_receiver.UNCLAIMED_TTL == 600


def test_every_matching_subscriber_gets_an_event_and_each_only_once() -> None:
    execution = arn("train", "abc")
    first, second = event(execution, "Executing"), event(execution, "Succeeded")
    sqs = ScriptedSqs(batches=[[message("h1", first)], [message("h2", first), message("h3", second)]])

    async def main() -> tuple[list[Any], list[Any]]:
        receiver = receiver_on(sqs)
        # an ARN as the user wrote it (capitals in the pipeline name): SageMaker's ARNs are lower-case
        async with (
            receiver.subscribe_execution(arn("Train", "abc")) as one,
            receiver.subscribe_execution(execution) as two,
        ):
            await until_received(sqs, 3)
            return [one.get_nowait() for _ in range(one.qsize())], [
                two.get_nowait() for _ in range(two.qsize())
            ]

    one, two = asyncio.run(main())
    assert [e.event_id for e in one] == [first["id"], second["id"]]
    assert [e.event_id for e in two] == [e.event_id for e in one]
    assert [e["ReceiptHandle"] for r in sqs.requests("DeleteMessageBatch") for e in r["Entries"]] == [
        "h1",
        "h2",
        "h3",
    ]


def test_pipeline_subscription_takes_execution_events_of_its_statuses_only() -> None:
    ok = event(arn("train-model", "a"), "Succeeded")
    sqs = ScriptedSqs(
        batches=[
            [
                message("h-ok", ok),
                message("h-failed", event(arn("train-model", "b"), "Failed")),
                message("h-step", event(arn("train-model", "a"), "Succeeded", step="Fit")),
                message("h-other", event(arn("other", "c"), "Succeeded")),
            ]
        ]
    )

    async def main() -> list[PipelineEvent | EventStreamError]:
        receiver = receiver_on(sqs)
        pipeline_arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/Train-Model"
        async with receiver.subscribe_pipeline(pipeline_arn, ["Succeeded"]) as queue:
            await until_received(sqs, 2)
            return drained(queue)

    got = asyncio.run(main())
    assert [getattr(e, "event_id", None) for e in got] == [ok["id"]]
    released = [
        e["ReceiptHandle"] for r in sqs.requests("ChangeMessageVisibilityBatch") for e in r["Entries"]
    ]
    assert released == ["h-failed", "h-step", "h-other"]


def test_the_finished_memory_is_per_queue_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_receiver, "FINISHED_MEMORY", 2)
    monkeypatch.setattr(event_receiver, "_FINISHED", {})
    receiver = receiver_on(ScriptedSqs())
    other = PipelineEventReceiver(EventQueueKey(QUEUE + "-other"))
    for name in ("a", "b", "c"):
        receiver.finished(arn("train", name))
    assert [receiver._is_finished(arn("Train", n)) for n in ("a", "b", "c")] == [False, True, True]
    assert not other._is_finished(arn("train", "c"))


# -- failures --------------------------------------------------------------------------------------------


def test_a_missing_queue_fails_every_subscriber_before_any_receive() -> None:
    sqs = ScriptedSqs(attributes_error=client_error(MISSING, "GetQueueAttributes"))

    async def main() -> tuple[Any, Any, dict[Any, Any]]:
        receiver = get_event_receiver(EventQueueKey(QUEUE), hook_factory=lambda: ScriptedHook(sqs))
        async with (
            receiver.subscribe_execution(arn("train", "a")) as one,
            receiver.subscribe_pipeline("train", ["Succeeded"]) as two,
        ):
            items = await next_item(one), await next_item(two)
            await asyncio.sleep(0)
            return *items, PipelineEventReceiver.active()

    one, two, active = asyncio.run(main())
    assert isinstance(one, EventStreamError) and one == two
    assert one.message.startswith(f"The pipeline events queue {QUEUE} does not exist")
    assert "AWS.SimpleQueueService.NonExistentQueue" in one.message and "docs/events.md" in one.message
    assert [name for name, _ in sqs.calls] == ["GetQueueAttributes"]
    assert active == {}  # the failed receiver left the registry: a later subscriber checks again


def test_access_denied_names_the_permissions() -> None:
    denied = {"Code": "AccessDenied", "Message": "not authorized to perform sqs:GetQueueAttributes"}
    sqs = ScriptedSqs(attributes_error=client_error(denied, "GetQueueAttributes"))

    async def main() -> None:
        await check_event_queue(ScriptedHook(sqs), QUEUE)

    with pytest.raises(EventQueueError, match="cannot be read with this connection") as caught:
        asyncio.run(main())
    assert "sqs:ReceiveMessage" in str(caught.value) and QUEUE in str(caught.value)


def test_a_failed_receive_is_retried_while_the_queue_reads_and_fails_subscribers_once_it_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_receiver, "ERROR_POLICY", FAST)
    execution = arn("train", "a")
    outage = client_error({"Code": "InternalError", "Message": "try later"}, "ReceiveMessage")
    # each outage outlasts the hook's own retries (FAST: two attempts)
    sqs = ScriptedSqs(batches=[outage, outage, [message("h", event(execution, "Executing"))], outage, outage])

    async def main() -> list[Any]:
        receiver = receiver_on(sqs)
        async with receiver.subscribe_execution(execution) as queue:
            got = [await next_item(queue)]
            sqs.attributes_error = client_error(MISSING, "GetQueueAttributes")
            got.append(await next_item(queue))
            return got

    got = asyncio.run(main())
    assert isinstance(got[0], PipelineEvent) and got[0].status == "Executing"
    assert isinstance(got[1], EventStreamError) and "does not exist" in got[1].message
    # the check at the start, then one after each receive that failed through the hook's retries
    assert [name for name, _ in sqs.calls].count("GetQueueAttributes") == 3


def test_check_event_queue_sync_on_a_boto3_client() -> None:
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}},
            {"QueueUrl": QUEUE, "AttributeNames": ["QueueArn"]},
        )
        check_event_queue_sync(client, QUEUE)
        stub.add_client_error(
            "get_queue_attributes", service_error_code=MISSING["Code"], service_message=MISSING["Message"]
        )
        with pytest.raises(EventQueueError, match="does not exist") as caught:
            check_event_queue_sync(client, QUEUE)
        stub.assert_no_pending_responses()
    assert QUEUE in str(caught.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:q", "must be the queue's URL"),
        ("", "must be an SQS queue URL"),
        (None, "must be an SQS queue URL"),
    ],
)
def test_check_event_queue_refuses_what_is_no_queue_url(url: Any, reason: str) -> None:
    with pytest.raises(EventQueueError, match=reason):
        check_event_queue_sync(object(), url)
    with pytest.raises(EventQueueError, match=reason):
        asyncio.run(check_event_queue(object(), url))


def test_batch_calls_go_ten_at_a_time_and_a_gone_queue_is_no_error() -> None:
    sqs = ScriptedSqs()
    hook = ScriptedHook(sqs)
    handles = [f"h{i}" for i in range(23)]

    async def main() -> tuple[int, int]:
        deleted = await hook.adelete_batch(sqs, QUEUE, handles)
        await hook.achange_visibilities(sqs, QUEUE, {h: 99_999 for h in handles[:3]})

        async def gone(**request: Any) -> dict[str, Any]:
            raise client_error(MISSING, "DeleteMessageBatch")

        sqs.delete_message_batch = gone  # type: ignore[method-assign]
        return deleted, await hook.adelete_batch(sqs, QUEUE, handles)

    assert asyncio.run(main()) == (23, 0)
    sizes = [len(r["Entries"]) for r in sqs.requests("DeleteMessageBatch")]
    assert sizes == [10, 10, 3]
    assert [e["Id"] for e in sqs.requests("DeleteMessageBatch")[2]["Entries"]] == ["0", "1", "2"]
    (change,) = sqs.requests("ChangeMessageVisibilityBatch")
    assert {e["VisibilityTimeout"] for e in change["Entries"]} == {43_200}  # clamped to SQS's 12 hours
