"""The shared per-queue receiver and the callback triggers, over an in-memory SQS client.

``FakeSqs`` stands in for the aiobotocore SQS client only (what ``AwsBaseHook.get_async_conn`` returns):
visibility timeouts, receipt handles and receive counts behave like SQS, so the receiver's claims, releases
and hands-off of malformed messages can be observed message by message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sagemaker_pipelines_provider.callbacks.message import CallbackRoute
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.callback import (
    CallbackTriggerEvent,
    SageMakerCallbackEventTrigger,
    SageMakerCallbackTrigger,
)
from sagemaker_pipelines_provider.triggers.callback_receiver import QueueReceiver, ReceiverKey, get_receiver
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/callbacks"
FAST = BackoffPolicy(base_delay=0.001, max_delay=0.002, max_attempts=2, budget_seconds=1)


@pytest.fixture(autouse=True)
def _forget_settled_tokens() -> Any:
    """Tokens answered by one test are no settled copies in the next (the memory is process-wide)."""
    from sagemaker_pipelines_provider.callbacks.liveness import SETTLED_TOKENS

    SETTLED_TOKENS.clear()
    yield
    SETTLED_TOKENS.clear()


def arn(execution: str) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/training/execution/{execution}"


@dataclass
class Stored:
    message_id: str
    body: str
    visible_at: float = 0.0
    receipts: int = 0
    handle: str = ""
    deleted: bool = False


@dataclass
class FakeSqs:
    """An in-memory SQS queue with the async client methods the receiver calls."""

    messages: list[Stored] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_receive: Exception | None = None
    _ids: Any = field(default_factory=itertools.count)

    def send(self, body: Any) -> str:
        message_id = f"m{next(self._ids)}"
        self.messages.append(Stored(message_id, body if isinstance(body, str) else json.dumps(body)))
        return message_id

    def get(self, message_id: str) -> Stored:
        return next(m for m in self.messages if m.message_id == message_id)

    def visible(self, stored: Stored) -> bool:
        return not stored.deleted and stored.visible_at <= time.monotonic()

    def _by_handle(self, handle: str) -> Stored:
        for stored in self.messages:
            if stored.handle == handle and not stored.deleted:
                return stored
        raise ClientError({"Error": {"Code": "ReceiptHandleIsInvalid", "Message": "gone"}}, "X")

    async def receive_message(self, **request: Any) -> dict[str, Any]:
        self.calls.append("ReceiveMessage")
        if self.fail_receive is not None:
            raise self.fail_receive
        deadline = time.monotonic() + min(request["WaitTimeSeconds"], 0.2)
        while True:
            ready = [m for m in self.messages if self.visible(m)][: request["MaxNumberOfMessages"]]
            if ready or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        out = []
        for stored in ready:
            stored.receipts += 1
            stored.handle = f"{stored.message_id}-rh{stored.receipts}"
            stored.visible_at = time.monotonic() + request["VisibilityTimeout"]
            out.append(
                {
                    "MessageId": stored.message_id,
                    "ReceiptHandle": stored.handle,
                    "Body": stored.body,
                    "Attributes": {"ApproximateReceiveCount": str(stored.receipts)},
                }
            )
        return {"Messages": out} if out else {}

    async def change_message_visibility(self, **request: Any) -> dict[str, Any]:
        self.calls.append("ChangeMessageVisibility")
        self._by_handle(request["ReceiptHandle"]).visible_at = time.monotonic() + request["VisibilityTimeout"]
        return {}

    async def change_message_visibility_batch(self, **request: Any) -> dict[str, Any]:
        self.calls.append("ChangeMessageVisibilityBatch")
        successful, failed = [], []
        for entry in request["Entries"]:
            try:
                self._by_handle(entry["ReceiptHandle"]).visible_at = (
                    time.monotonic() + entry["VisibilityTimeout"]
                )
            except ClientError:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid"})
            else:
                successful.append({"Id": entry["Id"]})
        return {"Successful": successful, "Failed": failed}

    async def delete_message(self, **request: Any) -> dict[str, Any]:
        self.calls.append("DeleteMessage")
        self._by_handle(request["ReceiptHandle"]).deleted = True
        return {}


@dataclass
class FakeSageMaker:
    """The two async SageMaker calls a receiver makes to check a token: every token is listed as a
    callback step of every execution, ``Executing`` unless ``statuses`` says otherwise."""

    statuses: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def list_pipeline_execution_steps(self, **request: Any) -> dict[str, Any]:
        self.calls.append("ListPipelineExecutionSteps")
        return {
            "PipelineExecutionSteps": [
                {
                    "StepName": "Validate",
                    "StepStatus": status,
                    "Metadata": {"Callback": {"CallbackToken": token}},
                }
                for token, status in self.statuses.items()
            ]
        }

    async def describe_pipeline_execution(self, **request: Any) -> dict[str, Any]:
        self.calls.append("DescribePipelineExecution")
        return {
            "PipelineExecutionArn": request["PipelineExecutionArn"],
            "PipelineExecutionStatus": "Executing",
        }


def sagemaker_on(fake: FakeSageMaker) -> SageMakerPipelineHook:
    hook = SageMakerPipelineHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)

    @asynccontextmanager
    async def client() -> Any:
        yield fake

    async def get_async_conn() -> Any:
        return client()

    hook.get_async_conn = get_async_conn  # type: ignore[method-assign]
    return hook


def receiver_on(fake: FakeSqs, sagemaker: FakeSageMaker | None = None, **kwargs: Any) -> QueueReceiver:
    """A receiver over the fakes; tokens of ``callback()`` messages are waiting unless ``sagemaker`` says."""
    sagemaker = sagemaker or FakeSageMaker()
    for stored in fake.messages:
        try:
            token = json.loads(stored.body)["token"]
        except (ValueError, KeyError, TypeError):
            continue
        sagemaker.statuses.setdefault(token, "Executing")
    kwargs.setdefault("hook_factory", lambda: hook_on(fake))
    return QueueReceiver(ReceiverKey(QUEUE), sagemaker_hook_factory=lambda: sagemaker_on(sagemaker), **kwargs)


def hook_on(fake: FakeSqs) -> SageMakerCallbackQueueHook:
    hook = SageMakerCallbackQueueHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)

    @asynccontextmanager
    async def client() -> Any:
        yield fake

    async def get_async_conn() -> Any:
        return client()

    hook.get_async_conn = get_async_conn  # type: ignore[method-assign]
    return hook


def callback(token: str, execution: str, **extra: Any) -> dict[str, Any]:
    return {"token": token, "pipelineExecutionArn": arn(execution), "arguments": {"e": execution}, **extra}


def route(execution: str) -> CallbackRoute:
    return CallbackRoute.from_fields(pipeline_execution_arn=arn(execution))


def test_one_receiver_serves_every_waiter_claims_releases_and_leaves_malformed_alone() -> None:
    fake = FakeSqs()
    junk = [fake.send("not json") for _ in range(12)]
    ids = {name: fake.send(callback(f"Token{name}00000"[:10], name)) for name in ("a", "b", "c")}
    stray = fake.send(callback("StrayTok00", "zzz"))

    async def main() -> list[Any]:
        receiver = receiver_on(fake, inspect_visibility_timeout=30)
        waits = [
            asyncio.create_task(
                receiver.wait_for(route(name), visibility_timeout=60 + i, wait_time_seconds=1)
            )
            for i, name in enumerate(("a", "b", "c"))
        ]
        got = await asyncio.wait_for(asyncio.gather(*waits), 5)
        await asyncio.sleep(0.05)
        assert receiver.waiting == 0 and receiver._task is not None and receiver._task.done()
        return got

    got = asyncio.run(main())
    assert [m.message_id for m in got] == [ids["a"], ids["b"], ids["c"]]
    now = time.monotonic()
    for i, name in enumerate(("a", "b", "c")):
        stored = fake.get(ids[name])
        assert not stored.deleted and 55 + i < stored.visible_at - now <= 60 + i  # claimed, hidden, kept
    assert fake.visible(fake.get(stray))  # nobody's: visible again at once
    assert all(not fake.get(j).deleted and fake.get(j).receipts == 1 for j in junk)  # left as received
    assert "DeleteMessage" not in fake.calls


def test_cancelled_waiter_unregisters_and_the_receiver_stops() -> None:
    fake = FakeSqs()

    async def main() -> None:
        receiver = receiver_on(fake)
        wait = asyncio.create_task(receiver.wait_for(route("a"), visibility_timeout=60, wait_time_seconds=1))
        await asyncio.sleep(0.05)
        assert receiver.waiting == 1
        wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait
        assert receiver.waiting == 0
        await asyncio.sleep(0.3)
        assert receiver._task is not None and receiver._task.done()

    asyncio.run(main())


def test_receive_failure_fails_the_waiters_with_the_error() -> None:
    fake = FakeSqs(
        fail_receive=ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ReceiveMessage")
    )

    async def main() -> None:
        receiver = receiver_on(fake)
        with pytest.raises(ClientError, match="AccessDenied"):
            await asyncio.wait_for(receiver.wait_for(route("a"), visibility_timeout=60), 5)

    asyncio.run(main())


def test_receivers_are_per_event_loop_and_per_key() -> None:
    async def ids() -> tuple[int, int, int]:
        a = get_receiver(ReceiverKey(QUEUE))
        return (
            id(a),
            id(get_receiver(ReceiverKey(QUEUE))),
            id(get_receiver(ReceiverKey(QUEUE + "2"))),
        )

    first = asyncio.run(ids())
    assert first[0] == first[1] != first[2]


def test_trigger_serialises_and_times_out_without_touching_aws() -> None:
    trigger = SageMakerCallbackTrigger(
        queue_url=QUEUE,
        pipeline_execution_arn=arn("a"),
        match_arguments={"model": "m"},
        visibility_timeout=120,
        wait_time_seconds=5,
        timeout_at="2000-01-01T00:00:00+00:00",
        aws_conn_id=None,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "sagemaker_pipelines_provider.triggers.callback.SageMakerCallbackTrigger"
    again = SageMakerCallbackTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    event = asyncio.run(anext(again.run()))  # type: ignore[arg-type, var-annotated]
    assert event.payload["status"] == "timeout"
    event_classpath, event_kwargs = SageMakerCallbackEventTrigger(
        queue_url=QUEUE, pipeline_name="training"
    ).serialize()
    assert SageMakerCallbackEventTrigger(**event_kwargs).serialize() == (event_classpath, event_kwargs)


def test_trigger_events_never_print_a_large_payload_or_a_full_token() -> None:
    payload = {
        "status": "success",
        "message": {"token": "AbCdE12345", "message_id": "m1", "arguments": {"big": "z" * 50_000}},
    }
    text = repr(CallbackTriggerEvent(payload=payload))
    assert len(text) < 400 and "AbCdE12345" not in text and "zzzz" not in text
    assert CallbackTriggerEvent(payload=payload).payload == payload  # the payload itself is intact


def test_a_waiter_registered_while_the_client_closes_is_served() -> None:
    """The receiver's last waiter left and its client is closing (an await): a new waiter must be served."""
    fake = FakeSqs()
    ids = {name: fake.send(callback(f"Token{name}00000"[:10], name)) for name in ("a", "b")}

    async def main() -> str:
        closing, close = asyncio.Event(), asyncio.Event()
        hook = hook_on(fake)

        @asynccontextmanager
        async def slow_closing_client() -> Any:
            try:
                yield fake
            finally:
                closing.set()
                await close.wait()  # the client's exit awaits (aiobotocore closes its HTTP session)

        async def get_async_conn() -> Any:
            return slow_closing_client()

        hook.get_async_conn = get_async_conn  # type: ignore[method-assign]
        receiver = receiver_on(fake, hook_factory=lambda: hook)
        first = await asyncio.wait_for(
            receiver.wait_for(route("a"), visibility_timeout=60, wait_time_seconds=1), 5
        )
        assert first.message_id == ids["a"]
        await asyncio.wait_for(closing.wait(), 5)  # no waiter left: the receiver is closing its client
        second = asyncio.create_task(
            receiver.wait_for(route("b"), visibility_timeout=60, wait_time_seconds=1)
        )
        await asyncio.sleep(0)  # registered while the exit awaits
        close.set()
        closing.clear()
        message = await asyncio.wait_for(second, 5)
        return message.message_id

    assert asyncio.run(main()) == ids["b"]


def test_copies_of_an_answered_token_are_deleted_and_the_waiter_takes_a_live_message() -> None:
    """A copy of an answered token ahead of a live message: deleted (all its copies), and the waiter — routed
    by pipeline name, which both match — gets the live one; a later copy is deleted without asking again."""
    from sagemaker_pipelines_provider.callbacks.liveness import SETTLED_TOKENS

    SETTLED_TOKENS.clear()
    fake = FakeSqs()
    stale = [fake.send(callback("AnsweredA1", "a")) for _ in range(2)]
    live = fake.send(callback("WaitingB01", "b"))
    sagemaker = FakeSageMaker(
        {"AnsweredA1": "Succeeded", "WaitingB01": "Executing", "WaitingC01": "Executing"}
    )
    by_pipeline = CallbackRoute.from_fields(pipeline_name="training")

    async def main() -> list[str]:
        receiver = receiver_on(fake, sagemaker)
        first = await asyncio.wait_for(
            receiver.wait_for(by_pipeline, visibility_timeout=60, wait_time_seconds=1), 5
        )
        late = fake.send(callback("AnsweredA1", "a", status="Stopping"))
        fresh = fake.send(callback("WaitingC01", "c"))
        second = await asyncio.wait_for(
            receiver.wait_for(by_pipeline, visibility_timeout=60, wait_time_seconds=1), 5
        )
        assert receiver.settled_deleted == 3
        return [first.message_id, second.message_id, late, fresh]

    first, second, late, fresh = asyncio.run(main())
    assert (first, second) == (live, fresh)
    assert all(fake.get(m).deleted for m in [*stale, late])
    assert not fake.get(live).deleted and not fake.get(fresh).deleted  # claimed, never deleted here
    # one check per token: A once (then remembered), B, C
    assert sagemaker.calls.count("ListPipelineExecutionSteps") == 3
    assert "DescribePipelineExecution" not in sagemaker.calls  # every token was listed


def test_a_token_the_listing_does_not_show_is_handed_over_not_deleted() -> None:
    """Not listed while its execution runs (the listing may lag the message): never deleted for that."""
    fake = FakeSqs()
    message = fake.send(callback("NotListed1", "a"))
    sagemaker = FakeSageMaker({"SomeOther1": "Succeeded"})

    async def main() -> str:
        receiver = QueueReceiver(
            ReceiverKey(QUEUE),
            hook_factory=lambda: hook_on(fake),
            sagemaker_hook_factory=lambda: sagemaker_on(sagemaker),
        )
        got = await asyncio.wait_for(
            receiver.wait_for(route("a"), visibility_timeout=60, wait_time_seconds=1), 5
        )
        return got.message_id

    assert asyncio.run(main()) == message
    assert sagemaker.calls == ["ListPipelineExecutionSteps", "DescribePipelineExecution"]
    assert not fake.get(message).deleted


def test_a_burst_is_received_several_batches_at_a_time_and_each_waiter_gets_its_own_message() -> None:
    """35 callbacks at once: full batches open more receives; every waiter gets exactly its message, claimed
    by one ChangeMessageVisibilityBatch per batch, and one SageMaker client serves every check."""
    fake = FakeSqs()
    names = [f"e{i:02d}" for i in range(35)]
    ids = {name: fake.send(callback(f"Tok{name}00000"[:10], name)) for name in names}
    sagemaker = FakeSageMaker()
    opened: list[int] = []
    in_flight = [0, 0]  # now, most at once
    listing = sagemaker.list_pipeline_execution_steps

    async def slow_listing(**request: Any) -> dict[str, Any]:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.02)
        in_flight[0] -= 1
        return await listing(**request)

    sagemaker.list_pipeline_execution_steps = slow_listing  # type: ignore[method-assign]

    def sagemaker_hook() -> SageMakerPipelineHook:
        opened.append(1)
        return sagemaker_on(sagemaker)

    async def main() -> tuple[list[Any], int]:
        receiver = receiver_on(fake, sagemaker)
        receiver._sagemaker_hook_factory = sagemaker_hook
        waits = [
            asyncio.create_task(receiver.wait_for(route(name), visibility_timeout=60, wait_time_seconds=1))
            for name in names
        ]
        await asyncio.sleep(0)
        got = await asyncio.wait_for(asyncio.gather(*waits), 10)
        return got, receiver.receives

    got, receives = asyncio.run(main())
    assert [m.message_id for m in got] == [ids[name] for name in names]
    assert all(not fake.get(i).deleted and fake.get(i).receipts == 1 for i in ids.values())
    assert fake.calls.count("ChangeMessageVisibility") == 0  # claims go in batches
    assert fake.calls.count("ChangeMessageVisibilityBatch") == 4  # one per received batch
    assert receives >= 4 and opened == [1]
    assert in_flight[1] > 10  # the checks of more than one batch ran at once
    assert sagemaker.calls.count("ListPipelineExecutionSteps") == 35


def test_tokens_of_one_execution_in_one_batch_are_checked_with_one_listing() -> None:
    """Two waiting callback steps of one execution (and a duplicate): one ListPipelineExecutionSteps."""
    fake = FakeSqs()
    first = fake.send(callback("FirstTok01", "a"))
    fake.send(callback("FirstTok01", "a"))  # an SQS duplicate
    second = fake.send(callback("SecondTok1", "a"))
    sagemaker = FakeSageMaker()
    by_pipeline = CallbackRoute.from_fields(pipeline_name="training")

    async def main() -> list[str]:
        receiver = receiver_on(fake, sagemaker)
        waits = [
            asyncio.create_task(receiver.wait_for(by_pipeline, visibility_timeout=60, wait_time_seconds=1))
            for _ in range(2)
        ]
        return [m.message_id for m in await asyncio.wait_for(asyncio.gather(*waits), 5)]

    assert asyncio.run(main()) == [first, second]
    assert sagemaker.calls == ["ListPipelineExecutionSteps"]


def test_a_claim_whose_message_vanished_in_the_batch_call_leaves_the_waiter_waiting() -> None:
    """The batch claim reports the message gone (deleted meanwhile): nothing is handed over for it."""
    fake = FakeSqs()
    message = fake.send(callback("GoneToken1", "a"))
    original = fake.change_message_visibility_batch

    async def deleted_meanwhile(**request: Any) -> dict[str, Any]:
        fake.get(message).deleted = True
        return await original(**request)

    fake.change_message_visibility_batch = deleted_meanwhile  # type: ignore[method-assign]

    async def main() -> None:
        receiver = receiver_on(fake)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                receiver.wait_for(route("a"), visibility_timeout=60, wait_time_seconds=1), 1
            )

    asyncio.run(main())
    assert fake.calls.count("ChangeMessageVisibility") == 0


def test_visibility_changes_refused_as_a_whole_are_sent_again_one_by_one() -> None:
    """A batch call refused as a whole with a "gone" code (moto does so when one entry's total visibility
    would pass 12 hours): each entry is sent alone, so one bad entry does not hide the others' outcome."""
    fake = FakeSqs()
    ids = [fake.send(callback(f"Token{i}0000"[:10], f"x{i}")) for i in range(3)]

    async def refused(**request: Any) -> dict[str, Any]:
        fake.calls.append("ChangeMessageVisibilityBatch")
        raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "too long"}}, "X")

    fake.change_message_visibility_batch = refused  # type: ignore[method-assign]

    async def main() -> set[str]:
        raw = (await fake.receive_message(MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30))[
            "Messages"
        ]
        fake.get(ids[1]).deleted = True
        hook = hook_on(fake)
        return await hook.achange_visibilities(fake, QUEUE, [(m["ReceiptHandle"], 60) for m in raw])

    changed = asyncio.run(main())
    assert changed == {fake.get(ids[0]).handle, fake.get(ids[2]).handle}
    assert fake.calls.count("ChangeMessageVisibility") == 3
