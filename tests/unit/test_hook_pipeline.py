"""SageMakerPipelineHook with AWS stubbed at the botocore level (botocore / aiobotocore Stubber)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from sagemaker_pipelines_provider.hooks.pipeline import (
    CallbackOutputsInvalid,
    PipelineParametersInvalid,
    SageMakerPipelineHook,
    build_execution_result,
    failure_message,
    step_transitions,
)
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/my-pipe/execution/abc123"
TOKEN = "t" * 64
FAST = BackoffPolicy(
    base_delay=0.001,
    max_delay=0.002,
    max_attempts=6,
    budget_seconds=5,
    capacity_base_delay=0.001,
    capacity_max_delay=0.002,
)
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [
        {"Name": "RunDate", "Type": "String"},
        {"Name": "Rows", "Type": "Integer", "DefaultValue": 10},
        {"Name": "Ratio", "Type": "Float", "DefaultValue": 0.5},
        {"Name": "Full", "Type": "Boolean", "DefaultValue": False},
    ],
    "Steps": [
        {"Name": "Prep", "Type": "Processing", "Arguments": {}},
        {"Name": "Train", "Type": "Training", "Arguments": {}, "DependsOn": ["Prep"]},
    ],
}
T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def shared_hook() -> SageMakerPipelineHook:
    """One hook (and boto3 client) for the module: creating a SageMaker client costs about a second."""
    return SageMakerPipelineHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)


@pytest.fixture
def hook(shared_hook: SageMakerPipelineHook) -> SageMakerPipelineHook:
    shared_hook._pipelines.clear()  # the per-hook definition cache must not leak between tests
    return shared_hook


@pytest.fixture
def stub(hook: SageMakerPipelineHook) -> Iterator[Stubber]:
    with Stubber(hook.conn) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def describe_pipeline_response(definition: dict[str, Any] = DEFINITION) -> dict[str, Any]:
    return {
        "PipelineName": "my-pipe",
        "PipelineArn": "arn:aws:sagemaker:us-east-1:123456789012:pipeline/my-pipe",
        "PipelineDefinition": json.dumps(definition),
    }


def throttle(stub: Stubber, method: str) -> None:
    stub.add_client_error(method, service_error_code="ThrottlingException", http_status_code=400)


# ---------------------------------------------------------------------------------------------------------
# client configuration


def test_botocore_retries_are_off_unless_configured() -> None:
    plain = SageMakerPipelineHook(aws_conn_id=None, region_name="us-east-1")
    assert plain.config.retries == {"total_max_attempts": 1, "mode": "standard"}  # type: ignore[attr-defined]
    assert plain.conn.meta.config.retries["total_max_attempts"] == 1  # type: ignore[attr-defined]
    custom = SageMakerPipelineHook(
        aws_conn_id=None, region_name="us-east-1", config={"retries": {"max_attempts": 7}}
    )
    assert custom.config.retries == {"max_attempts": 7}  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------
# parameters


def test_parameters_are_checked_and_converted_with_one_describe(
    hook: SageMakerPipelineHook, stub: Stubber
) -> None:
    stub.add_response("describe_pipeline", describe_pipeline_response(), {"PipelineName": "my-pipe"})
    assert hook.validate_parameters("my-pipe", {"RunDate": "2024-01-01", "Rows": 3, "Full": True}) == [
        {"Name": "RunDate", "Value": "2024-01-01"},
        {"Name": "Rows", "Value": "3"},
        {"Name": "Full", "Value": "true"},
    ]
    assert hook.validate_parameters("my-pipe", {"RunDate": "x", "Ratio": "0.25"}) == [
        {"Name": "RunDate", "Value": "x"},
        {"Name": "Ratio", "Value": "0.25"},
    ]
    assert hook.describe_pipeline("my-pipe").step_types == {"Prep": "Processing", "Train": "Training"}


def test_bad_parameters_list_every_problem_and_the_valid_parameters(
    hook: SageMakerPipelineHook, stub: Stubber
) -> None:
    stub.add_response("describe_pipeline", describe_pipeline_response())
    with pytest.raises(PipelineParametersInvalid) as info:
        hook.validate_parameters("my-pipe", {"Rows": "many", "Full": "maybe", "Bogus": 1})
    message = str(info.value)
    assert "'my-pipe'" in message
    assert "unknown parameter 'Bogus'" in message
    assert "'Rows' is Integer" in message
    assert "'Full' is Boolean" in message
    assert "'RunDate' (String) has no default" in message
    assert "RunDate (String, required), Rows (Integer, default 10), Ratio (Float, default 0.5)" in message
    assert "Nothing was started" in message


def test_parameters_are_still_checked_when_the_steps_are_not_understood(
    hook: SageMakerPipelineHook, stub: Stubber
) -> None:
    definition = {**DEFINITION, "Steps": [{"Name": "X", "Type": "SomethingNew", "Arguments": {}}]}
    stub.add_response("describe_pipeline", describe_pipeline_response(definition))
    with pytest.raises(PipelineParametersInvalid, match="unknown parameter 'Nope'"):
        hook.validate_parameters("my-pipe", {"RunDate": "x", "Nope": 1})
    assert hook.describe_pipeline("my-pipe").step_types == {}


# ---------------------------------------------------------------------------------------------------------
# start / retry


def test_start_sends_the_token_and_every_option(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    expected = {
        "PipelineName": "my-pipe",
        "ClientRequestToken": TOKEN,
        "PipelineParameters": [{"Name": "Rows", "Value": "3"}],
        "PipelineExecutionDisplayName": "nightly",
        "PipelineExecutionDescription": "from Airflow",
        "ParallelismConfiguration": {"MaxParallelExecutionSteps": 2},
        "SelectiveExecutionConfig": {
            "SelectedSteps": [{"StepName": "Train"}],
            "SourcePipelineExecutionArn": ARN,
        },
    }
    stub.add_response("start_pipeline_execution", {"PipelineExecutionArn": ARN}, expected)
    arn = hook.start_pipeline_execution(
        "my-pipe",
        client_request_token=TOKEN,
        parameters=[{"Name": "Rows", "Value": "3"}],
        display_name="nightly",
        description="from Airflow",
        parallelism=2,
        selective_steps=["Train"],
        source_execution_arn=ARN,
    )
    assert arn == ARN


def test_start_retries_throttling_and_5xx_with_the_same_token(
    hook: SageMakerPipelineHook, stub: Stubber
) -> None:
    expected = {"PipelineName": "my-pipe", "ClientRequestToken": TOKEN}
    throttle(stub, "start_pipeline_execution")
    stub.add_client_error(
        "start_pipeline_execution", service_error_code="InternalFailure", http_status_code=500
    )
    stub.add_response("start_pipeline_execution", {"PipelineExecutionArn": ARN}, expected)
    assert hook.start_pipeline_execution("my-pipe", client_request_token=TOKEN) == ARN


def test_resource_limit_at_start_waits_or_raises(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_client_error("start_pipeline_execution", service_error_code="ResourceLimitExceeded")
    stub.add_client_error("start_pipeline_execution", service_error_code="ResourceLimitExceeded")
    stub.add_response("start_pipeline_execution", {"PipelineExecutionArn": ARN})
    assert hook.start_pipeline_execution("my-pipe", client_request_token=TOKEN) == ARN

    from botocore.exceptions import ClientError

    stub.add_client_error("start_pipeline_execution", service_error_code="ResourceLimitExceeded")
    with pytest.raises(ClientError, match="ResourceLimitExceeded"):
        hook.start_pipeline_execution("my-pipe", client_request_token=TOKEN, wait_for_capacity=False)


def test_persistent_throttling_is_raised_once_the_budget_is_spent(
    hook: SageMakerPipelineHook, stub: Stubber
) -> None:
    from botocore.exceptions import ClientError

    for _ in range(FAST.max_attempts):
        throttle(stub, "describe_pipeline_execution")
    with pytest.raises(ClientError, match="Throttling") as info:
        hook.describe_pipeline_execution(ARN)
    assert "gave up after 6 attempts" in "".join(info.value.__notes__)


def test_retry_pipeline_execution(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_response(
        "retry_pipeline_execution",
        {"PipelineExecutionArn": ARN},
        {
            "PipelineExecutionArn": ARN,
            "ClientRequestToken": TOKEN,
            "ParallelismConfiguration": {"MaxParallelExecutionSteps": 1},
        },
    )
    assert hook.retry_pipeline_execution(ARN, client_request_token=TOKEN, parallelism=1) == ARN


# ---------------------------------------------------------------------------------------------------------
# lists


def test_steps_and_parameters_read_every_page(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_response(
        "list_pipeline_execution_steps",
        {"PipelineExecutionSteps": [{"StepName": "A", "StepStatus": "Succeeded"}], "NextToken": "n1"},
        {"PipelineExecutionArn": ARN, "MaxResults": 100},
    )
    stub.add_response(
        "list_pipeline_execution_steps",
        {"PipelineExecutionSteps": [{"StepName": "B", "StepStatus": "Executing"}]},
        {"PipelineExecutionArn": ARN, "MaxResults": 100, "NextToken": "n1"},
    )
    assert [s["StepName"] for s in hook.list_pipeline_execution_steps(ARN)] == ["A", "B"]
    stub.add_response(
        "list_pipeline_parameters_for_execution",
        {"PipelineParameters": [{"Name": "Rows", "Value": "3"}], "NextToken": "p"},
    )
    stub.add_response(
        "list_pipeline_parameters_for_execution", {"PipelineParameters": [{"Name": "Full", "Value": "true"}]}
    )
    assert hook.list_pipeline_parameters_for_execution(ARN) == {"Rows": "3", "Full": "true"}


def test_list_executions_returns_one_page_newest_first(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_response(
        "list_pipeline_executions",
        {
            "PipelineExecutionSummaries": [
                {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Executing"}
            ],
            "NextToken": "n",
        },
        {
            "PipelineName": "my-pipe",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 100,
            "CreatedAfter": T0,
        },
    )
    summaries, next_token = hook.list_pipeline_executions("my-pipe", created_after=T0)
    assert next_token == "n"
    assert summaries[0]["PipelineExecutionArn"] == ARN


# ---------------------------------------------------------------------------------------------------------
# stop


def describe_execution(status: str) -> dict[str, Any]:
    return {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": status}


@pytest.mark.parametrize("status", ["Succeeded", "Failed", "Stopped", "Stopping"])
def test_stop_does_nothing_when_there_is_nothing_to_stop(
    hook: SageMakerPipelineHook, stub: Stubber, status: str
) -> None:
    stub.add_response("describe_pipeline_execution", describe_execution(status))
    assert hook.stop_pipeline_execution(ARN, client_request_token=TOKEN) is False


def test_stop_retries_conflicts_then_stops(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_response("describe_pipeline_execution", describe_execution("Executing"))
    stub.add_client_error("stop_pipeline_execution", service_error_code="ConflictException")
    stub.add_response(
        "stop_pipeline_execution",
        {"PipelineExecutionArn": ARN},
        {"PipelineExecutionArn": ARN, "ClientRequestToken": TOKEN},
    )
    assert hook.stop_pipeline_execution(ARN, client_request_token=TOKEN) is True


def test_stop_racing_the_end_of_the_execution(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_response("describe_pipeline_execution", describe_execution("Executing"))
    stub.add_client_error("stop_pipeline_execution", service_error_code="ValidationException")
    stub.add_response("describe_pipeline_execution", describe_execution("Succeeded"))
    assert hook.stop_pipeline_execution(ARN, client_request_token=TOKEN) is False


# ---------------------------------------------------------------------------------------------------------
# callbacks


def test_send_step_success_flattens_outputs(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_response(
        "send_pipeline_execution_step_success",
        {"PipelineExecutionArn": ARN},
        {
            "CallbackToken": "abcdefghij",
            "ClientRequestToken": TOKEN,
            "OutputParameters": [
                {"Name": "passed", "Value": "true"},
                {"Name": "count", "Value": "3"},
                {"Name": "score", "Value": "0.5"},
                {"Name": "meta", "Value": '{"a":[1,2]}'},
                {"Name": "none", "Value": ""},
                {"Name": "text", "Value": "hello"},
            ],
        },
    )
    answer = hook.send_step_success(
        "abcdefghij",
        {"passed": True, "count": 3, "score": 0.5, "meta": {"a": [1, 2]}, "none": None, "text": "hello"},
        TOKEN,
    )
    assert answer.pipeline_execution_arn == ARN
    assert answer.already_answered is False


def test_callback_limits_are_checked_before_sending(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    with pytest.raises(CallbackOutputsInvalid, match="51 outputs given, SageMaker accepts at most 50"):
        hook.send_step_success("abcdefghij", {f"o{i}": i for i in range(51)}, TOKEN)
    with pytest.raises(CallbackOutputsInvalid, match="'big' is 2000 characters"):
        hook.send_step_success("abcdefghij", {"big": "x" * 2000}, TOKEN)


def test_an_already_answered_token_is_reported_not_raised(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    stub.add_client_error(
        "send_pipeline_execution_step_failure",
        service_error_code="ConflictException",
        service_message="Callback token 'abcdefghij' was already answered",
    )
    answer = hook.send_step_failure("abcdefghij", "nope", TOKEN)
    assert answer.already_answered is True
    assert answer.pipeline_execution_arn is None


def test_other_callback_errors_raise(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    from botocore.exceptions import ClientError

    stub.add_client_error("send_pipeline_execution_step_success", service_error_code="ResourceNotFound")
    with pytest.raises(ClientError, match="ResourceNotFound"):
        hook.send_step_success("abcdefghij", {}, TOKEN)


def test_failure_reason_is_cut_to_256_with_a_marker(hook: SageMakerPipelineHook, stub: Stubber) -> None:
    sent: dict[str, Any] = {}

    def capture(params: dict[str, Any], **_: Any) -> None:
        sent.update(params)

    event = "provide-client-params.sagemaker.SendPipelineExecutionStepFailure"
    hook.conn.meta.events.register(event, capture)  # type: ignore[attr-defined]
    stub.add_response("send_pipeline_execution_step_failure", {"PipelineExecutionArn": ARN})
    try:
        hook.send_step_failure("abcdefghij", "why " * 200, TOKEN)
    finally:
        hook.conn.meta.events.unregister(event, capture)  # type: ignore[attr-defined]
    assert len(sent["FailureReason"]) == 256
    assert sent["FailureReason"].endswith("...[truncated]")
    assert sent["FailureReason"].startswith("why why")


# ---------------------------------------------------------------------------------------------------------
# async (aiobotocore stubbed)


def test_async_calls_paginate_and_stop() -> None:
    from aiobotocore.stub import AioStubber

    hook = SageMakerPipelineHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST)

    async def scenario() -> tuple[list[str], bool, dict[str, str]]:
        async with hook.async_client() as client:
            with AioStubber(client) as stub:
                stub.add_client_error(
                    "list_pipeline_execution_steps", service_error_code="ThrottlingException"
                )
                stub.add_response(
                    "list_pipeline_execution_steps",
                    {
                        "PipelineExecutionSteps": [{"StepName": "A", "StepStatus": "Succeeded"}],
                        "NextToken": "n",
                    },
                )
                stub.add_response(
                    "list_pipeline_execution_steps",
                    {"PipelineExecutionSteps": [{"StepName": "B", "StepStatus": "Succeeded"}]},
                    {"PipelineExecutionArn": ARN, "MaxResults": 100, "NextToken": "n"},
                )
                steps = await hook.alist_pipeline_execution_steps(ARN, client=client)
                stub.add_response("describe_pipeline_execution", describe_execution("Executing"))
                stub.add_response(
                    "stop_pipeline_execution",
                    {"PipelineExecutionArn": ARN},
                    {"PipelineExecutionArn": ARN, "ClientRequestToken": TOKEN},
                )
                stopped = await hook.astop_pipeline_execution(ARN, client_request_token=TOKEN, client=client)
                stub.add_response(
                    "list_pipeline_parameters_for_execution",
                    {"PipelineParameters": [{"Name": "Rows", "Value": "3"}]},
                )
                params = await hook.alist_pipeline_parameters_for_execution(ARN, client=client)
                stub.assert_no_pending_responses()
                return [s["StepName"] for s in steps], stopped, params

    assert asyncio.run(scenario()) == (["A", "B"], True, {"Rows": "3"})


# ---------------------------------------------------------------------------------------------------------
# pure helpers: result, step log, failure message


def listed_steps() -> list[dict[str, Any]]:
    return [
        {
            "StepName": "Register",
            "StepStatus": "Succeeded",
            "StartTime": T0 + dt.timedelta(minutes=3),
            "EndTime": T0 + dt.timedelta(minutes=4),
            "AttemptCount": 1,
            "Metadata": {
                "RegisterModel": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"}
            },
        },
        {
            "StepName": "Approve",
            "StepStatus": "Succeeded",
            "StartTime": T0 + dt.timedelta(minutes=2),
            "EndTime": T0 + dt.timedelta(minutes=3),
            "AttemptCount": 1,
            "Metadata": {
                "Callback": {
                    "CallbackToken": "abcdefghij",
                    "OutputParameters": [{"Name": "approved_by", "Value": "alice"}],
                }
            },
        },
        {
            "StepName": "Train",
            "StepStatus": "Failed",
            "StartTime": T0,
            "EndTime": T0 + dt.timedelta(minutes=1),
            "AttemptCount": 1,
            "FailureReason": "old attempt",
            "Metadata": {"TrainingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/old"}},
        },
        {
            "StepName": "Train",
            "StepStatus": "Succeeded",
            "StartTime": T0 + dt.timedelta(minutes=1),
            "EndTime": T0 + dt.timedelta(minutes=2),
            "AttemptCount": 2,
            "Metadata": {"TrainingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/new"}},
        },
    ]


def test_result_carries_what_downstream_tasks_template_from() -> None:
    describe = {
        "PipelineExecutionArn": ARN,
        "PipelineExecutionStatus": "Succeeded",
        "PipelineExecutionDisplayName": "nightly",
    }
    result = build_execution_result(describe, listed_steps(), [{"Name": "Rows", "Value": "3"}])
    assert result["pipeline_execution_arn"] == ARN
    assert result["pipeline_name"] == "my-pipe"
    assert result["status"] == "Succeeded"
    assert result["display_name"] == "nightly"
    assert result["parameters"] == {"Rows": "3"}
    assert list(result["steps"]) == ["Train", "Approve", "Register"]  # by start time, latest attempt only
    train = result["steps"]["Train"]
    assert train == {
        "type": "Training",
        "status": "Succeeded",
        "start": "2024-01-01T12:01:00+00:00",
        "end": "2024-01-01T12:02:00+00:00",
        "attempts": 2,
        "failure_reason": None,
        "metadata": {"TrainingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/new"}},
    }
    assert result["steps"]["Approve"]["type"] == "Callback"
    assert result["outputs"] == {
        "Train": {"TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/new"},
        "Approve": {"approved_by": "alice"},
        "Register": {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"},
    }
    json.dumps(result)  # XCom-serialisable


def test_step_types_from_the_definition_win() -> None:
    steps = [{"StepName": "Check", "StepStatus": "Succeeded", "Metadata": {"Condition": {"Outcome": "True"}}}]
    result = build_execution_result(
        {"PipelineExecutionArn": ARN}, steps, {}, step_types={"Check": "Condition"}
    )
    assert result["steps"]["Check"]["type"] == "Condition"
    assert result["outputs"] == {"Check": {"Outcome": "True"}}


def test_step_transitions_log_each_change_once() -> None:
    running = [
        {"StepName": "Prep", "StepStatus": "Executing", "StartTime": T0, "Metadata": {"ProcessingJob": {}}}
    ]
    seen, lines = step_transitions({}, running)
    assert lines == ["Step Prep (Processing): Executing"]
    seen, lines = step_transitions(seen, running)
    assert lines == []
    done = [
        {
            **running[0],
            "StepStatus": "Failed",
            "EndTime": T0 + dt.timedelta(seconds=12.5),
            "FailureReason": "OOM",
        },
        {"StepName": "Train", "StepStatus": "Starting", "StartTime": T0 + dt.timedelta(seconds=13)},
    ]
    seen, lines = step_transitions(seen, done, {"Train": "Training"})
    assert lines == ["Step Prep (Processing): Failed after 12.5s: OOM", "Step Train (Training): Starting"]
    assert seen == {"Prep": "Failed", "Train": "Starting"}


def test_failure_message_names_steps_reasons_jobs_and_console() -> None:
    steps = listed_steps()[2:3]  # Train failed
    describe = {
        "PipelineExecutionArn": ARN,
        "PipelineExecutionStatus": "Failed",
        "FailureReason": "Step Train failed",
    }
    message = failure_message(build_execution_result(describe, steps, {}))
    assert f"{ARN} ended Failed" in message
    assert "Reason: Step Train failed" in message
    assert (
        "Train (Training): old attempt [job: arn:aws:sagemaker:us-east-1:123456789012:training-job/old]"
        in message
    )
    assert (
        "Console: https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1"
        "#/pipelines/my-pipe/executions/abc123" in message
    )
    stopped = failure_message(
        build_execution_result({"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Stopped"}, [], {})
    )
    assert "allow_stopped=True" in stopped
