"""The AWS calls of callback handling, with botocore's Stubber: the SQS hook, the answer operators, the
lease and the reconciler. Each test pins the exact requests sent and checks what is (not) sent on errors.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from sagemaker_pipelines_provider.callbacks import lease
from sagemaker_pipelines_provider.callbacks.message import answer_request_token
from sagemaker_pipelines_provider.callbacks.reconciler import answer_overdue_callbacks, find_overdue_callbacks
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import CallbackOutputsInvalid, SageMakerPipelineHook
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/callbacks"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/training/execution/aaaa1111"
TOKEN = "AbCdE12345"
FAST = BackoffPolicy(base_delay=0.001, max_delay=0.002, max_attempts=3, budget_seconds=5)


@pytest.fixture(autouse=True)
def _forget_settled_tokens() -> Any:
    """Tokens answered by one test are no settled copies in the next (the memory is process-wide)."""
    from sagemaker_pipelines_provider.callbacks.liveness import SETTLED_TOKENS

    SETTLED_TOKENS.clear()
    yield
    SETTLED_TOKENS.clear()


def client(service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@pytest.fixture
def sqs() -> Any:
    hook = SageMakerCallbackQueueHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)
    hook.conn = client("sqs")  # type: ignore[misc]
    with Stubber(hook.conn) as stub:
        yield hook, stub
        stub.assert_no_pending_responses()


@pytest.fixture
def sagemaker() -> Any:
    hook = SageMakerPipelineHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)
    hook.conn = client("sagemaker")  # type: ignore[misc]
    with Stubber(hook.conn) as stub:
        yield hook, stub
        stub.assert_no_pending_responses()


def message(token: str = TOKEN, message_id: str = "m1", **body: Any) -> dict[str, Any]:
    document = {"token": token, "pipelineExecutionArn": ARN, "arguments": {"a": "1"}, **body}
    return {"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": json.dumps(document)}


def receive_request(wait: int = 0, visibility: int = 30) -> dict[str, Any]:
    return {
        "QueueUrl": QUEUE,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": wait,
        "VisibilityTimeout": visibility,
        "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
    }


# -------------------------------------------------------------------------------------------------------
# SageMakerCallbackQueueHook


def test_gone_messages_are_false_not_errors(sqs: Any) -> None:
    hook, stub = sqs
    stub.add_client_error("change_message_visibility", "ReceiptHandleIsInvalid")
    stub.add_client_error("delete_message", "ReceiptHandleIsInvalid")
    stub.add_client_error("change_message_visibility", "AWS.SimpleQueueService.NonExistentQueue")
    assert hook.change_visibility(QUEUE, "rh", 60) is False
    assert hook.delete(QUEUE, "rh") is False
    assert hook.change_visibility(QUEUE, "rh", 60) is False


def test_other_errors_raise_and_throttling_is_retried(sqs: Any) -> None:
    from botocore.exceptions import ClientError

    hook, stub = sqs
    stub.add_client_error("change_message_visibility", "ThrottlingException", http_status_code=400)
    stub.add_response(
        "change_message_visibility",
        {},
        {"QueueUrl": QUEUE, "ReceiptHandle": "rh", "VisibilityTimeout": 43200},
    )
    stub.add_client_error("delete_message", "AccessDenied", http_status_code=403)
    assert hook.change_visibility(QUEUE, "rh", 10**9) is True  # clamped to SQS's 12 hours
    with pytest.raises(ClientError, match="AccessDenied"):
        hook.delete(QUEUE, "rh")


def test_release_batches_by_ten(sqs: Any) -> None:
    hook, stub = sqs
    handles = [f"rh{i}" for i in range(12)]
    for chunk in (handles[:10], handles[10:]):
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(chunk)]
        stub.add_response(
            "change_message_visibility_batch",
            {"Successful": [], "Failed": []},
            {"QueueUrl": QUEUE, "Entries": entries},
        )
    hook.release(QUEUE, handles)


def test_sweep_deletes_copies_of_the_token_only_and_releases_the_rest(sqs: Any) -> None:
    hook, stub = sqs
    batch = [
        message(TOKEN, "copy"),
        message("OtherToken", "other"),
        {"MessageId": "junk", "ReceiptHandle": "rh-junk", "Body": "not json"},
        message(TOKEN, "stop", status="Stopping"),
    ]
    stub.add_response("receive_message", {"Messages": batch}, receive_request())
    stub.add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-copy"})
    stub.add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-stop"})
    stub.add_response("receive_message", {}, receive_request())  # a round without copies ends the sweep
    stub.add_response(  # other tokens' messages are visible again once the sweep ends
        "change_message_visibility_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "ReceiptHandle": "rh-other", "VisibilityTimeout": 0}]},
    )
    assert hook.delete_token_copies(QUEUE, TOKEN) == 2


# -------------------------------------------------------------------------------------------------------
# answer operators


def context() -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", task_id="answer", run_id="r1", try_number=1)
    return {"ti": ti}


def operator(cls: Any, sagemaker: Any, sqs: Any, **kwargs: Any) -> Any:
    op = cls(task_id="answer", aws_conn_id=None, region_name="us-east-1", **kwargs)
    op.hook = sagemaker[0]
    op.queue_hook = sqs[0]
    return op


def expect_claim_renewed(sqs: Any, handle: str = "rh-m1", visibility: int = 300) -> None:
    """The answer renews the claim before answering (the sensor's default visibility when none is given)."""
    sqs[1].add_response(
        "change_message_visibility",
        {},
        {"QueueUrl": QUEUE, "ReceiptHandle": handle, "VisibilityTimeout": visibility},
    )


def sensor_result(**extra: Any) -> dict[str, Any]:
    return {
        "token": TOKEN,
        "pipeline_execution_arn": ARN,
        "arguments": {},
        "status": None,
        "message_id": "m1",
        "queue_url": QUEUE,
        "receipt_handle": "rh-m1",
        **extra,
    }


OUTPUTS = [
    {"Name": "passed", "Value": "true"},
    {"Name": "rows", "Value": "42"},
    {"Name": "metrics", "Value": '{"auc":0.9}'},
]


def test_success_flattens_outputs_is_idempotent_then_deletes(sagemaker: Any, sqs: Any) -> None:
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator

    sagemaker[1].add_response(
        "send_pipeline_execution_step_success",
        {"PipelineExecutionArn": ARN},
        {
            "CallbackToken": TOKEN,
            "OutputParameters": OUTPUTS,
            "ClientRequestToken": answer_request_token(TOKEN, "success", {"OutputParameters": OUTPUTS}),
        },
    )
    expect_claim_renewed(sqs)
    sqs[1].add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-m1"})
    # no copies seen, not stopping: no sweep (it would count towards other handlers' redrive policy)
    sagemaker[1].add_response(
        "describe_pipeline_execution",
        {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Executing"},
        {"PipelineExecutionArn": ARN},
    )
    op = operator(
        SageMakerCallbackSuccessOperator,
        sagemaker,
        sqs,
        message=sensor_result(),
        outputs={"passed": True, "rows": 42, "metrics": {"auc": 0.9}},
    )
    result = op.execute(context())
    assert result["answer"] == "success" and result["already_answered"] is False
    assert result["message_deleted"] is True and result["pipeline_execution_arn"] == ARN
    assert result["copies_deleted"] == 0 and result["claim_lost"] is False
    assert TOKEN not in json.dumps(result)


def test_copies_seen_at_the_claim_are_swept(sagemaker: Any, sqs: Any) -> None:
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator

    sagemaker[1].add_response(
        "send_pipeline_execution_step_success",
        {"PipelineExecutionArn": ARN},
        {
            "CallbackToken": TOKEN,
            "OutputParameters": [],
            "ClientRequestToken": answer_request_token(TOKEN, "success", {"OutputParameters": []}),
        },
    )
    expect_claim_renewed(sqs)
    sqs[1].add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-m1"})
    sqs[1].add_response("receive_message", {"Messages": [message(TOKEN, "dup")]}, receive_request())
    sqs[1].add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-dup"})
    sqs[1].add_response("receive_message", {}, receive_request())
    op = operator(SageMakerCallbackSuccessOperator, sagemaker, sqs, message=sensor_result(copies_seen=1))
    assert op.execute(context())["copies_deleted"] == 1


def test_already_answered_is_reported_and_the_message_still_deleted(sagemaker: Any, sqs: Any) -> None:
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackFailureOperator

    sagemaker[1].add_client_error(
        "send_pipeline_execution_step_failure", "ConflictException", "token was already answered"
    )
    expect_claim_renewed(sqs)
    sqs[1].add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-m1"})
    sqs[1].add_response("receive_message", {}, receive_request())
    op = operator(SageMakerCallbackFailureOperator, sagemaker, sqs, message=sensor_result(), reason="broken")
    result = op.execute(context())
    assert result["already_answered"] is True and result["message_deleted"] is True


def test_a_lost_claim_is_reported_and_the_queue_swept_after_the_answer(sagemaker: Any, sqs: Any) -> None:
    """The claim cannot be renewed before the answer (received again elsewhere): SQS may accept the delete
    of this outdated handle without deleting, so the delete is not trusted and the queue is swept."""
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator

    sqs[1].add_client_error(
        "change_message_visibility",
        "InvalidParameterValue",
        "Message does not exist or is not available for visibility timeout change",
        expected_params={"QueueUrl": QUEUE, "ReceiptHandle": "rh-m1", "VisibilityTimeout": 120},
    )
    sagemaker[1].add_response(
        "send_pipeline_execution_step_success",
        {"PipelineExecutionArn": ARN},
        {
            "CallbackToken": TOKEN,
            "OutputParameters": [],
            "ClientRequestToken": answer_request_token(TOKEN, "success", {"OutputParameters": []}),
        },
    )
    sqs[1].add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-m1"})  # "succeeds"
    sqs[1].add_response("receive_message", {"Messages": [message(TOKEN, "visible-copy")]}, receive_request())
    sqs[1].add_response("delete_message", {}, {"QueueUrl": QUEUE, "ReceiptHandle": "rh-visible-copy"})
    sqs[1].add_response("receive_message", {}, receive_request())
    op = operator(
        SageMakerCallbackSuccessOperator, sagemaker, sqs, message=sensor_result(visibility_timeout=120)
    )
    result = op.execute(context())
    assert result["claim_lost"] is True and result["message_deleted"] is False
    assert result["answer"] == "success" and result["copies_deleted"] == 1


def test_unknown_token_fails_and_leaves_the_message(sagemaker: Any, sqs: Any) -> None:
    from airflow.providers.common.compat.sdk import AirflowException
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackFailureOperator

    sagemaker[1].add_client_error(
        "send_pipeline_execution_step_failure",
        "ResourceNotFound",
        f"Callback token '{TOKEN}' does not exist.",
    )
    expect_claim_renewed(sqs)
    op = operator(SageMakerCallbackFailureOperator, sagemaker, sqs, message=sensor_result(), reason="x")
    with pytest.raises(AirflowException, match="does not know callback token") as raised:
        op.execute(context())  # no delete queued: any delete would fail the Stubber
    assert (QUEUE, "rh-m1") not in lease._leases  # the claim is no longer renewed: the message returns
    chained = raised.value.__cause__
    assert chained is not None and TOKEN not in str(chained) and "AbC…" in str(chained)


def test_outputs_over_the_limits_send_nothing(sagemaker: Any, sqs: Any) -> None:
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator

    op = operator(
        SageMakerCallbackSuccessOperator, sagemaker, sqs, token=TOKEN, outputs={f"o{i}": i for i in range(51)}
    )
    with pytest.raises(CallbackOutputsInvalid, match="at most 50"):
        op.execute(context())
    op = operator(SageMakerCallbackSuccessOperator, sagemaker, sqs, token=TOKEN, outputs={"big": "x" * 2000})
    with pytest.raises(CallbackOutputsInvalid, match="1024"):
        op.execute(context())


def test_long_reason_is_cut_with_a_marker_and_a_stopping_message_is_answered_with_failure(
    sagemaker: Any, sqs: Any
) -> None:
    from sagemaker_pipelines_provider.operators.callback import (
        SageMakerCallbackFailureOperator,
        SageMakerCallbackSuccessOperator,
    )

    sent: list[str] = []
    for _ in range(2):
        sagemaker[1].add_response(
            "send_pipeline_execution_step_failure",
            {"PipelineExecutionArn": ARN},
            {
                "CallbackToken": TOKEN,
                "FailureReason": ANY,
                "ClientRequestToken": ANY,  # derived from the reason (another test pins it)
            },
        )
    sagemaker[0].conn.meta.events.register(
        "provide-client-params.sagemaker.SendPipelineExecutionStepFailure",
        lambda params, **_: sent.append(params["FailureReason"]),
    )
    op = operator(
        SageMakerCallbackFailureOperator, sagemaker, sqs, token=TOKEN, reason="r" * 300, delete_message=False
    )
    op.execute(context())
    op = operator(
        SageMakerCallbackSuccessOperator,
        sagemaker,
        sqs,
        message=sensor_result(status="Stopping"),
        outputs={"passed": True},
        delete_message=False,
    )
    assert op.execute(context())["answer"] == "failure"
    assert len(sent[0]) == 256 and sent[0].endswith("...[truncated]")
    assert sent[1].startswith("Stopped: pipeline execution " + ARN)


def test_invalid_token_is_refused_before_any_call(sagemaker: Any, sqs: Any) -> None:
    from airflow.providers.common.compat.sdk import AirflowException
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator

    with pytest.raises(AirflowException, match="no valid callback token"):
        operator(SageMakerCallbackSuccessOperator, sagemaker, sqs, token="{{ 7*7 }}").execute(context())


# -------------------------------------------------------------------------------------------------------
# lease


def test_lease_extends_until_the_message_is_gone(sqs: Any) -> None:
    hook, stub = sqs
    params = {"QueueUrl": QUEUE, "ReceiptHandle": "rh-lease", "VisibilityTimeout": 1}
    stub.add_response("change_message_visibility", {}, params)  # on start
    stub.add_response("change_message_visibility", {}, params)  # first tick
    stub.add_client_error("change_message_visibility", "ReceiptHandleIsInvalid")  # deleted
    held = lease.hold(hook, QUEUE, "rh-lease", 1, token=TOKEN)
    assert held.running
    assert lease.hold(hook, QUEUE, "rh-lease", 1, token=TOKEN) is held  # reused in this process
    deadline = time.monotonic() + 5
    while held.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not held.running and held.gone and held.extensions == 2


def test_lease_on_a_gone_message_does_not_start(sqs: Any) -> None:
    hook, stub = sqs
    stub.add_client_error("change_message_visibility", "ReceiptHandleIsInvalid")
    held = lease.hold(hook, QUEUE, "rh-gone", 30)
    assert held.gone and not held.running


# -------------------------------------------------------------------------------------------------------
# reconciler


def list_request(now: dt.datetime, older_than: dt.timedelta, next_token: str | None = None) -> dict[str, Any]:
    """The reconciler's ListPipelineExecutions: executions created where a callback can be overdue."""
    request: dict[str, Any] = {
        "PipelineName": "training",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
        "CreatedAfter": now - dt.timedelta(days=29),
        "CreatedBefore": now - older_than,
    }
    if next_token:
        request["NextToken"] = next_token
    return request


def test_reconciler_answers_only_callbacks_waiting_past_the_deadline(sagemaker: Any, sqs: Any) -> None:
    hook, stub = sagemaker
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    other_arn = ARN.replace("aaaa1111", "bbbb2222")
    stub.add_response(
        "list_pipeline_executions",
        {
            "PipelineExecutionSummaries": [
                {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Executing"},
                {"PipelineExecutionArn": other_arn, "PipelineExecutionStatus": "Succeeded"},
            ]
        },
        list_request(now, dt.timedelta(hours=1)),
    )
    steps = [
        {
            "StepName": "Validate",
            "StepStatus": "Executing",
            "StartTime": now - dt.timedelta(hours=3),
            "Metadata": {"Callback": {"CallbackToken": TOKEN, "SqsQueueUrl": QUEUE}},
        },
        {
            "StepName": "Recent",
            "StepStatus": "Executing",
            "StartTime": now - dt.timedelta(minutes=5),
            "Metadata": {"Callback": {"CallbackToken": "Recent1234"}},
        },
        {
            "StepName": "Done",
            "StepStatus": "Succeeded",
            "StartTime": now - dt.timedelta(hours=5),
            "Metadata": {"Callback": {"CallbackToken": "Done123456"}},
        },
        {
            "StepName": "Train",
            "StepStatus": "Executing",
            "StartTime": now - dt.timedelta(hours=5),
            "Metadata": {},
        },
    ]
    stub.add_response(
        "list_pipeline_execution_steps",
        {"PipelineExecutionSteps": steps},
        {"PipelineExecutionArn": ARN, "MaxResults": 100},
    )
    stub.add_response(
        "send_pipeline_execution_step_failure",
        {"PipelineExecutionArn": ARN},
        {
            "CallbackToken": TOKEN,
            "FailureReason": ANY,
            "ClientRequestToken": ANY,  # derived from the reason (another test pins it)
        },
    )
    sqs[1].add_response("receive_message", {}, receive_request())
    reports = answer_overdue_callbacks(
        hook, "training", older_than=dt.timedelta(hours=1), now=now, queue_hook_factory=lambda: sqs[0]
    )
    assert [(r["step_name"], r["answered"], r["waited_seconds"]) for r in reports] == [
        ("Validate", True, 10800.0)
    ]
    assert TOKEN not in json.dumps(reports)


def test_reconciler_report_only_answers_nothing(sagemaker: Any) -> None:
    hook, stub = sagemaker
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    stub.add_response(
        "list_pipeline_executions",
        {
            "PipelineExecutionSummaries": [
                {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Stopping"}
            ]
        },
        list_request(now, dt.timedelta(days=1)),
    )
    stub.add_response(
        "list_pipeline_execution_steps",
        {
            "PipelineExecutionSteps": [
                {
                    "StepName": "Validate",
                    "StepStatus": "Stopping",
                    "StartTime": now - dt.timedelta(days=2),
                    "Metadata": {"Callback": {"CallbackToken": TOKEN}},
                }
            ]
        },
        {"PipelineExecutionArn": ARN, "MaxResults": 100},
    )
    found = find_overdue_callbacks(hook, "training", older_than=dt.timedelta(days=1), now=now)
    assert [(f.step_name, f.token) for f in found] == [("Validate", TOKEN)]


# -------------------------------------------------------------------------------------------------------
# sensor, poke mode


def steps_listing(token: str = TOKEN, status: str = "Executing") -> dict[str, Any]:
    return {
        "PipelineExecutionSteps": [
            {"StepName": "Validate", "StepStatus": status, "Metadata": {"Callback": {"CallbackToken": token}}}
        ]
    }


def test_poke_claims_its_message_releases_others_and_leaves_junk(sqs: Any, sagemaker: Any) -> None:
    from sagemaker_pipelines_provider.sensors.callback import SageMakerCallbackSensor

    hook, stub = sqs
    # is the token still waiting? (a copy of an answered token would be deleted instead)
    sagemaker[1].add_response(
        "list_pipeline_execution_steps", steps_listing(), {"PipelineExecutionArn": ARN, "MaxResults": 100}
    )
    other_arn = ARN.replace("aaaa1111", "bbbb2222")
    batch = [
        {"MessageId": "junk", "ReceiptHandle": "rh-junk", "Body": "{"},
        {
            "MessageId": "other",
            "ReceiptHandle": "rh-other",
            "Body": json.dumps({"token": "OtherToken", "pipelineExecutionArn": other_arn, "arguments": {}}),
        },
        message(TOKEN, "mine"),
    ]
    stub.add_response("receive_message", {"Messages": batch}, receive_request(wait=1, visibility=5))
    stub.add_response(
        "change_message_visibility",
        {},
        {"QueueUrl": QUEUE, "ReceiptHandle": "rh-mine", "VisibilityTimeout": 90},
    )
    stub.add_response(
        "change_message_visibility_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "ReceiptHandle": "rh-other", "VisibilityTimeout": 0}]},
    )
    sensor = SageMakerCallbackSensor(
        task_id="wait",
        queue_url=QUEUE,
        pipeline_execution_arn=ARN,
        visibility_timeout=90,
        wait_time_seconds=1,
        inspect_visibility_timeout=5,
        aws_conn_id=None,
    )
    sensor.hook = hook  # type: ignore[misc]
    sensor.sagemaker_hook = sagemaker[0]
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    result = sensor.poke({"ti": ti})  # type: ignore[arg-type, typeddict-item]
    assert result.is_done
    assert result.xcom_value["receipt_handle"] == "rh-mine" and result.xcom_value["visibility_timeout"] == 90  # type: ignore[index]
    assert pushed == {"arguments": {"a": "1"}}


# -------------------------------------------------------------------------------------------------------
# one ClientRequestToken, one request


def test_a_client_request_token_always_carries_the_same_answer(sagemaker: Any, sqs: Any) -> None:
    """Retries of a failure answer (a new try, the reconciler run again later) send the very same request,
    and answers whose content differs (the handler's and the reconciler's reasons, a Stopping answer) never
    share a ClientRequestToken: SageMaker's handling of a token reused with other parameters is undocumented.
    """
    from sagemaker_pipelines_provider.operators.callback import (
        SageMakerCallbackFailureOperator,
        SageMakerCallbackSuccessOperator,
    )

    hook, stub = sagemaker
    sent: list[dict[str, Any]] = []
    hook.conn.meta.events.register(
        "provide-client-params.sagemaker.SendPipelineExecutionStepFailure",
        lambda params, **_: sent.append(dict(params)),
    )

    def expect_failure() -> None:
        stub.add_response(
            "send_pipeline_execution_step_failure",
            {"PipelineExecutionArn": ARN},
            {"CallbackToken": TOKEN, "FailureReason": ANY, "ClientRequestToken": ANY},
        )

    def at_try(try_number: int) -> dict[str, Any]:
        ti = SimpleNamespace(dag_id="d", task_id="answer", run_id="r1", try_number=try_number)
        return {"ti": ti}

    for try_number in (1, 2):  # the default reason, on two tries of one task
        expect_failure()
        op = operator(SageMakerCallbackFailureOperator, sagemaker, sqs, token=TOKEN, delete_message=False)
        op.execute(at_try(try_number))  # type: ignore[arg-type]
    for try_number in (1, 2):  # a Stopping message answered by two tries
        expect_failure()
        op = operator(
            SageMakerCallbackSuccessOperator,
            sagemaker,
            sqs,
            message=sensor_result(status="Stopping"),
            delete_message=False,
        )
        op.execute(at_try(try_number))  # type: ignore[arg-type]
    started = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.UTC)
    for hours_later in (3, 4):  # the reconciler, run twice an hour apart
        stub.add_response(
            "list_pipeline_executions",
            {
                "PipelineExecutionSummaries": [
                    {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Executing"}
                ]
            },
            None,  # the listing's own requests are another test's concern
        )
        stub.add_response(
            "list_pipeline_execution_steps",
            {
                "PipelineExecutionSteps": [
                    {
                        "StepName": "Validate",
                        "StepStatus": "Executing",
                        "StartTime": started,
                        "Metadata": {"Callback": {"CallbackToken": TOKEN}},
                    }
                ]
            },
            {"PipelineExecutionArn": ARN, "MaxResults": 100},
        )
        expect_failure()
        answer_overdue_callbacks(
            hook, "training", older_than=dt.timedelta(hours=1), now=started + dt.timedelta(hours=hours_later)
        )
    assert len(sent) == 6
    by_token: dict[str, set[str]] = {}
    for request in sent:
        by_token.setdefault(request["ClientRequestToken"], set()).add(request["FailureReason"])
    assert all(len(reasons) == 1 for reasons in by_token.values()), by_token  # one token, one request
    assert sent[0] == sent[1] and sent[2] == sent[3] and sent[4] == sent[5]  # retries are true repeats
    assert len(by_token) == 3  # three different answers, three different tokens


def test_deferred_sensor_renews_its_claim_on_resume_and_waits_again_if_it_lapsed(sqs: Any) -> None:
    from airflow.sdk.exceptions import TaskDeferred
    from sagemaker_pipelines_provider.sensors.callback import SageMakerCallbackSensor

    hook, stub = sqs
    sensor = SageMakerCallbackSensor(
        task_id="wait", queue_url=QUEUE, pipeline_execution_arn=ARN, visibility_timeout=90, deferrable=True
    )
    sensor.hook = hook  # type: ignore[misc]
    renew = {"QueueUrl": QUEUE, "ReceiptHandle": "rh-m1", "VisibilityTimeout": 90}
    event = {"status": "success", "message": sensor_result(visibility_timeout=90)}
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))

    stub.add_response("change_message_visibility", {}, renew)  # the claim is still held: renewed
    assert sensor.execute_complete({"ti": ti}, event)["receipt_handle"] == "rh-m1"  # type: ignore[arg-type, typeddict-item]

    stub.add_client_error("change_message_visibility", "InvalidParameterValue", expected_params=renew)
    with pytest.raises(TaskDeferred):  # lapsed and received elsewhere: wait for the message again
        sensor.execute_complete({"ti": ti}, event)  # type: ignore[arg-type, typeddict-item]
