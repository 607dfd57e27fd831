"""Callback message parsing, routing (plan_batch) and log safety: pure functions, no AWS."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sagemaker_pipelines_provider.callbacks.message import (
    CallbackRoute,
    MalformedLog,
    MalformedMessage,
    answer_request_token,
    describe,
    mask_token,
    parse_message,
    plan_batch,
    values_equal,
)

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/callbacks"
ARN_A = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/training/execution/aaaa1111"
ARN_B = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/training/execution/bbbb2222"
ARN_OTHER = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/other/execution/cccc3333"


def raw(body: Any, message_id: str = "m1", receive_count: int = 1) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"rh-{message_id}",
        "Body": text,
        "Attributes": {"ApproximateReceiveCount": str(receive_count)},
    }


def body(token: str = "AbCdE12345", arn: str = ARN_A, **extra: Any) -> dict[str, Any]:
    return {"token": token, "pipelineExecutionArn": arn, "arguments": {"model": "s3://m"}, **extra}


def test_parse_a_callback_message_and_tolerate_extra_keys() -> None:
    message = parse_message(raw(body(version="2", status=None), receive_count=3), QUEUE)
    assert message.token == "AbCdE12345"
    assert message.pipeline_execution_arn == ARN_A
    assert message.pipeline_name == "training"
    assert message.arguments == {"model": "s3://m"}
    assert message.receive_count == 3
    assert message.extra_keys == ("version",)
    assert not message.is_stopping
    result = message.to_result(visibility_timeout=60)
    assert set(result) >= {"token", "pipeline_execution_arn", "arguments", "status", "message_id"}
    assert result["receipt_handle"] == "rh-m1" and result["queue_url"] == QUEUE
    assert json.loads(json.dumps(result)) == result


def test_stopping_message() -> None:
    assert parse_message(raw(body(status="Stopping")), QUEUE).is_stopping


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not an object"),
        (json.dumps({"arguments": {}}), "no 'token'"),
        (json.dumps({"token": ""}), "no 'token'"),
        (json.dumps({"token": "short"}), "10 letters or digits"),
        (json.dumps({"token": "bad-token!"}), "10 letters or digits"),
        (json.dumps({"token": 1234567890}), "no 'token'"),
        (json.dumps({"token": "AbCdE12345", "arguments": [1]}), "'arguments' is not an object"),
        (json.dumps({"token": "AbCdE12345", "pipelineExecutionArn": 5}), "not a string"),
        (json.dumps({"token": "AbCdE12345", "status": {"x": 1}}), "'status' is not a string"),
    ],
)
def test_malformed_bodies_are_reported_not_raised_elsewhere(text: str, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as info:
        parse_message(raw(text, "junk"), QUEUE)
    assert info.value.message_id == "junk"


def test_routes_match_by_execution_pipeline_and_argument_subset() -> None:
    message = parse_message(raw(body(arguments={"model": "s3://m", "n": "5", "flag": "true"})), QUEUE)
    assert CallbackRoute().matches(message)
    assert CallbackRoute.from_fields(pipeline_execution_arn=ARN_A.upper()).matches(message)
    assert not CallbackRoute.from_fields(pipeline_execution_arn=ARN_B).matches(message)
    assert CallbackRoute.from_fields(pipeline_name="Training").matches(message)
    assert CallbackRoute.from_fields(
        pipeline_name="arn:aws:sagemaker:us-east-1:123456789012:pipeline/training"
    ).matches(message)
    assert not CallbackRoute.from_fields(pipeline_name="other").matches(message)
    assert CallbackRoute.from_fields(match_arguments={"n": 5, "flag": True}).matches(message)
    assert not CallbackRoute.from_fields(match_arguments={"n": 6}).matches(message)
    assert not CallbackRoute.from_fields(match_arguments={"missing": "x"}).matches(message)
    assert CallbackRoute.from_fields(pipeline_execution_arn="", pipeline_name=" ").is_catch_all


def test_a_stopping_message_without_arguments_still_reaches_its_handler() -> None:
    stop = parse_message(
        raw({"token": "AbCdE12345", "pipelineExecutionArn": ARN_A, "status": "Stopping"}), QUEUE
    )
    route = CallbackRoute.from_fields(pipeline_name="training", match_arguments={"model": "s3://m"})
    assert route.matches(stop)
    assert not CallbackRoute.from_fields(pipeline_name="other", match_arguments={"model": "x"}).matches(stop)


def test_values_equal() -> None:
    assert values_equal("5", 5) and values_equal(5, "5") and values_equal(True, "true")
    assert not values_equal(True, 1) and not values_equal(1, True) and not values_equal("True", True)
    assert values_equal({"a": [1]}, {"a": [1]}) and not values_equal({"a": 1}, "{'a': 1}")
    assert values_equal(None, None) and not values_equal(None, "None")


def test_plan_batch_routes_first_come_first_served_and_releases_the_rest() -> None:
    batch = [
        raw(body("AAAAAAAAAA", ARN_A), "a1"),
        raw("junk", "j1"),
        raw(body("BBBBBBBBBB", ARN_B), "b1"),
        raw(body("AAAAAAAAAA", ARN_A), "a2"),  # duplicate delivery of a1's token
        raw(body("CCCCCCCCCC", ARN_OTHER), "c1"),  # nobody waits for it
    ]
    routes = [
        CallbackRoute.from_fields(pipeline_execution_arn=ARN_B),
        CallbackRoute.from_fields(pipeline_name="training"),  # would take b1 too: b's waiter comes first
        None,  # an already served waiter
    ]
    plan = plan_batch(batch, QUEUE, routes)
    claims = {index: (m.message_id, [c.message_id for c in copies]) for index, m, copies in plan.claims}
    assert claims == {0: ("b1", []), 1: ("a1", ["a2"])}
    assert {index: m.copies_seen for index, m, _ in plan.claims} == {0: 0, 1: 1}
    assert sorted(m.message_id for m in plan.release) == ["a2", "c1"]
    assert [e.message_id for e in plan.malformed] == ["j1"]


def test_plan_batch_prefers_the_stopping_copy() -> None:
    batch = [raw(body(), "orig"), raw(body(status="Stopping"), "stop")]
    plan = plan_batch(batch, QUEUE, [CallbackRoute()])
    assert [(m.message_id, m.status) for _, m, _ in plan.claims] == [("stop", "Stopping")]
    assert [m.message_id for m in plan.release] == ["orig"]


def test_each_route_takes_one_message_per_batch() -> None:
    batch = [raw(body("AAAAAAAAAA", ARN_A), "a"), raw(body("BBBBBBBBBB", ARN_B), "b")]
    plan = plan_batch(batch, QUEUE, [CallbackRoute(pipeline_name="training")])
    assert [m.message_id for _, m, _ in plan.claims] == ["a"]
    assert [m.message_id for m in plan.release] == ["b"]


def test_logs_never_carry_a_large_body_or_a_full_token() -> None:
    big = "y" * 10_000
    message = parse_message(raw(body(arguments={"big": big, "t": "{{ 7 * 7 }}"})), QUEUE)
    line = describe(message)
    assert big not in line and len(line) < 600
    assert "AbCdE12345" not in line and mask_token("AbCdE12345") in line
    assert mask_token(None) == "<none>"


def test_malformed_messages_are_logged_once(caplog: Any) -> None:
    memo = MalformedLog(capacity=2)
    logger = logging.getLogger("test.malformed")
    caplog.set_level(logging.WARNING, logger="test.malformed")
    for message_id in ["x", "x", "y", "x", "y", "z", "q", "x"]:
        memo.report(logger, MalformedMessage("bad", message_id), QUEUE)
    # bounded memory (capacity 2, least recently seen forgotten first): "x" is logged again only after
    # two other ids pushed it out
    assert [r.getMessage().split()[3] for r in caplog.records] == ["x", "y", "z", "q", "x"]


def test_answer_request_tokens_are_stable_per_token_kind_and_content() -> None:
    success = answer_request_token("AbCdE12345", "success", {"OutputParameters": []})
    assert success == answer_request_token("AbCdE12345", "success", {"OutputParameters": []})
    assert success != answer_request_token("AbCdE12345", "failure", {"OutputParameters": []})
    assert success != answer_request_token("AbCdE12346", "success", {"OutputParameters": []})
    assert success != answer_request_token(
        "AbCdE12345", "success", {"OutputParameters": [{"Name": "a", "Value": "1"}]}
    )
    failure = answer_request_token("AbCdE12345", "failure", {"FailureReason": "broken"})
    assert failure != answer_request_token("AbCdE12345", "failure", {"FailureReason": "broken!"})
    assert 32 <= len(success) <= 128


def test_token_state_is_settled_only_on_evidence() -> None:
    from sagemaker_pipelines_provider.callbacks.liveness import TokenState, token_state

    def step(token: str, status: str) -> dict[str, Any]:
        return {"StepName": "V", "StepStatus": status, "Metadata": {"Callback": {"CallbackToken": token}}}

    for status in ("Starting", "Executing", "Stopping"):
        assert token_state([step("AbCdE12345", status)], "AbCdE12345") is TokenState.WAITING
    for status in ("Succeeded", "Failed", "Stopped"):
        assert token_state([step("AbCdE12345", status)], "AbCdE12345") is TokenState.SETTLED
    other = [
        step("Other12345", "Succeeded"),
        {"StepName": "Train", "StepStatus": "Executing", "Metadata": {}},
    ]
    assert token_state(other, "AbCdE12345") is TokenState.UNKNOWN  # not listed (yet): never deleted
    assert token_state(other, "AbCdE12345", "Executing") is TokenState.UNKNOWN
    assert token_state(other, "AbCdE12345", "Failed") is TokenState.SETTLED  # the execution has ended


def test_live_batch_reroutes_a_waiter_whose_message_is_settled() -> None:
    from sagemaker_pipelines_provider.callbacks.liveness import LiveBatch, SettledTokens, TokenState

    def raw(token: str, message_id: str, execution: str) -> dict[str, Any]:
        body = {
            "token": token,
            "pipelineExecutionArn": f"{ARN_A.rsplit('/', 1)[0]}/{execution}",
            "arguments": {},
        }
        return {"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": json.dumps(body)}

    memory = SettledTokens()
    batch = LiveBatch(
        [raw("OldToken01", "old", "a"), raw("OldToken01", "dup", "a"), raw("NewToken01", "new", "b")],
        QUEUE,
        [CallbackRoute.from_fields(pipeline_name="training")],
        settled=memory,
    )
    checked: list[list[str]] = []
    answers = {"OldToken01": TokenState.SETTLED, "NewToken01": TokenState.WAITING}
    while todo := batch.unchecked():
        checked.append([m.token for m in todo])
        batch.record({m.token: answers[m.token] for m in todo})
    assert checked == [["OldToken01"], ["NewToken01"]]
    assert [m.message_id for _, m, _ in batch.plan.claims] == ["new"]
    assert sorted(m.message_id for m in batch.plan.settled) == ["dup", "old"]
    assert "OldToken01" in memory and "NewToken01" not in memory
