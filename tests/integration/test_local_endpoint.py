"""Integration tests of the local AWS endpoint over real HTTP, with plain boto3 and aiobotocore.

Every test takes the ``local_aws`` fixture (this package's pytest plugin): one endpoint per session on
a free loopback port, reset before each test. Time runs 100x faster (``TIME_SCALE``), so a simulated
20 s step takes 0.2 s. Waits are bounded polls (:func:`wait_until`), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from sagemaker_pipelines_provider.local.seed import DEMO_PIPELINES, events_queue_policy

from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
TIME_SCALE = 0.01
ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerPipelineExecutionRole"
TERMINAL = frozenset({"Succeeded", "Failed", "Stopped"})
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
STATUS_CHANGE = "SageMaker Model Building Pipeline Execution Status Change"


# ------------------------------------------------------------------------------------------------------
# Helpers


def processing_step(name: str, depends_on: Iterable[str] = ()) -> dict[str, Any]:
    step: dict[str, Any] = {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
            },
            "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/proc:latest"},
            "RoleArn": ROLE_ARN,
        },
    }
    if depends_on:
        step["DependsOn"] = list(depends_on)
    return step


def definition(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> str:
    return json.dumps(
        {"Version": "2020-12-01", "Metadata": {}, "Parameters": parameters or [], "Steps": steps}
    )


def chain_definition(names: Iterable[str]) -> str:
    """A linear pipeline of Processing steps, each depending on the previous one."""
    steps: list[dict[str, Any]] = []
    previous: list[str] = []
    for name in names:
        steps.append(processing_step(name, previous))
        previous = [name]
    return definition(steps)


def create_pipeline(sm: Any, name: str, body: str) -> str:
    return str(
        sm.create_pipeline(PipelineName=name, PipelineDefinition=body, RoleArn=ROLE_ARN)["PipelineArn"]
    )


def describe(sm: Any, arn: str) -> dict[str, Any]:
    return sm.describe_pipeline_execution(PipelineExecutionArn=arn)  # type: ignore[no-any-return]


def wait_for_status(
    sm: Any, arn: str, statuses: Iterable[str] = TERMINAL, timeout: float = 15.0
) -> dict[str, Any]:
    wanted = set(statuses)

    def probe() -> dict[str, Any] | None:
        response = describe(sm, arn)
        return response if response["PipelineExecutionStatus"] in wanted else None

    return wait_until(probe, timeout=timeout, what=f"{arn} to reach one of {sorted(wanted)}")


def list_steps(sm: Any, arn: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for page in sm.get_paginator("list_pipeline_execution_steps").paginate(PipelineExecutionArn=arn):
        steps.extend(page["PipelineExecutionSteps"])
    return steps


def latest_steps(sm: Any, arn: str) -> dict[str, dict[str, Any]]:
    """Step name -> its most recent entry in ListPipelineExecutionSteps."""
    by_name: dict[str, dict[str, Any]] = {}
    for step in list_steps(sm, arn):
        current = by_name.get(step["StepName"])
        if current is None or step.get("StartTime", 0) > current.get("StartTime", 0):
            by_name[step["StepName"]] = step
    return by_name


def receive_messages(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    return sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(  # type: ignore[no-any-return]
        "Messages", []
    )


def wait_for_message(
    sqs: Any, queue_url: str, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> dict[str, Any]:
    """The first message whose JSON body satisfies ``match`` (deleted once found; others are deleted too)."""

    def probe() -> dict[str, Any] | None:
        for message in receive_messages(sqs, queue_url):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            body = json.loads(message["Body"])
            if match(body):
                return body  # type: ignore[no-any-return]
        return None

    return wait_until(probe, timeout=timeout, what=f"a matching message on {queue_url}")


def max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """Largest number of intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


@pytest.fixture
def sm(local_aws: Any) -> Any:
    local_aws.controls.set_time_scale(TIME_SCALE)
    return local_aws.client("sagemaker")


@pytest.fixture
def sqs(local_aws: Any) -> Any:
    return local_aws.client("sqs")


@pytest.fixture
def demo(local_aws: Any, sm: Any) -> dict[str, Any]:
    """The seeded demo resources (queue, bucket, pipelines ...)."""
    return local_aws.seed()  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------------
# Execution semantics


def test_parallel_branches_respect_dependencies_and_max_parallel_steps(local_aws: Any, sm: Any) -> None:
    # A -> (B, C, D); (B, C) -> E; (D, E) -> F
    steps = [
        processing_step("A"),
        processing_step("B", ["A"]),
        processing_step("C", ["A"]),
        processing_step("D", ["A"]),
        processing_step("E", ["B", "C"]),
        processing_step("F", ["D", "E"]),
    ]
    dependencies = {s["Name"]: s.get("DependsOn", []) for s in steps}
    create_pipeline(sm, "six-steps", definition(steps))
    local_aws.controls.set_default_step_duration(20)  # 0.2 s each at TIME_SCALE
    arn = sm.start_pipeline_execution(
        PipelineName="six-steps", ParallelismConfiguration={"MaxParallelExecutionSteps": 2}
    )["PipelineExecutionArn"]

    assert wait_for_status(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    by_name = latest_steps(sm, arn)
    assert set(by_name) == set(dependencies)
    for name, step in by_name.items():
        assert step["StepStatus"] == "Succeeded", step
        assert step["AttemptCount"] == 1
        for dependency in dependencies[name]:
            assert step["StartTime"] >= by_name[dependency]["EndTime"], (name, dependency)
    intervals = [(s["StartTime"], s["EndTime"]) for s in by_name.values()]
    assert max_overlap(intervals) == 2  # B, C, D are ready together: two run, the third waits


def test_callback_success_output_chooses_condition_branch(
    local_aws: Any, sm: Any, sqs: Any, demo: Any
) -> None:
    queue_url = demo["queue_url"]
    outcomes = {}
    for passed in ("true", "false"):
        arn = sm.start_pipeline_execution(PipelineName="training")["PipelineExecutionArn"]
        message = wait_for_message(
            sqs,
            queue_url,
            lambda body, arn=arn: body.get("pipelineExecutionArn") == arn,  # type: ignore[misc]
        )
        token = message["token"]
        assert len(token) == 10 and token.isalnum()
        assert message["arguments"]["validation_task"] == "model-validation"
        assert message["arguments"]["model_artifacts"].startswith("s3://")

        callback = latest_steps(sm, arn)["ValidateModel"]
        assert callback["StepStatus"] == "Executing"
        assert callback["Metadata"]["Callback"]["CallbackToken"] == token

        answered = sm.send_pipeline_execution_step_success(
            CallbackToken=token, OutputParameters=[{"Name": "validation_passed", "Value": passed}]
        )
        assert answered["PipelineExecutionArn"] == arn
        outcomes[passed] = (wait_for_status(sm, arn), latest_steps(sm, arn))

    final, steps = outcomes["true"]
    assert final["PipelineExecutionStatus"] == "Succeeded"
    assert steps["CheckValidation"]["Metadata"]["Condition"]["Outcome"] == "True"
    assert steps["RegisterModel"]["StepStatus"] == "Succeeded"
    assert "ValidationFailed" not in steps
    assert steps["ValidateModel"]["Metadata"]["Callback"]["OutputParameters"] == [
        {"Name": "validation_passed", "Value": "true"}
    ]

    final, steps = outcomes["false"]
    assert final["PipelineExecutionStatus"] == "Failed"
    assert steps["CheckValidation"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert "RegisterModel" not in steps
    assert steps["ValidationFailed"]["StepStatus"] == "Failed"
    assert "Model validation failed for execution" in final["FailureReason"]


def test_callback_failure_fails_execution_with_reason(local_aws: Any, sm: Any, sqs: Any, demo: Any) -> None:
    arn = sm.start_pipeline_execution(PipelineName="training")["PipelineExecutionArn"]
    message = wait_for_message(sqs, demo["queue_url"], lambda body: body.get("pipelineExecutionArn") == arn)
    sm.send_pipeline_execution_step_failure(
        CallbackToken=message["token"], FailureReason="validator crashed: OOM"
    )

    final = wait_for_status(sm, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert "validator crashed: OOM" in final["FailureReason"]
    steps = latest_steps(sm, arn)
    assert steps["ValidateModel"]["StepStatus"] == "Failed"
    assert "validator crashed: OOM" in steps["ValidateModel"]["FailureReason"]
    assert "CheckValidation" not in steps


@pytest.mark.parametrize("answer", ["success", "failure"])
def test_stop_during_callback_sends_stopping_then_stopped_after_answer(
    local_aws: Any, sm: Any, sqs: Any, demo: Any, answer: str
) -> None:
    queue_url = demo["queue_url"]
    arn = sm.start_pipeline_execution(PipelineName="training")["PipelineExecutionArn"]
    first = wait_for_message(sqs, queue_url, lambda body: body.get("pipelineExecutionArn") == arn)

    sm.stop_pipeline_execution(PipelineExecutionArn=arn)
    assert describe(sm, arn)["PipelineExecutionStatus"] == "Stopping"
    stopping = wait_for_message(
        sqs,
        queue_url,
        lambda body: body.get("pipelineExecutionArn") == arn and body.get("status") == "Stopping",
    )
    assert stopping["token"] == first["token"]
    # The callback holds the execution in Stopping until its token is answered.
    assert describe(sm, arn)["PipelineExecutionStatus"] == "Stopping"

    if answer == "success":
        sm.send_pipeline_execution_step_success(
            CallbackToken=first["token"], OutputParameters=[{"Name": "validation_passed", "Value": "true"}]
        )
    else:
        sm.send_pipeline_execution_step_failure(CallbackToken=first["token"], FailureReason="stopped by user")
    assert wait_for_status(sm, arn)["PipelineExecutionStatus"] == "Stopped"
    steps = latest_steps(sm, arn)
    # The engine's documented choice: the callback step ends by its answer; nothing after it starts.
    assert steps["ValidateModel"]["StepStatus"] == ("Succeeded" if answer == "success" else "Failed")
    assert "CheckValidation" not in steps and "RegisterModel" not in steps


def test_retry_after_failed_step_reruns_only_failed_step(local_aws: Any, sm: Any) -> None:
    create_pipeline(sm, "retry-me", chain_definition(["Prepare", "Flaky", "Publish"]))
    local_aws.controls.set_step_behaviour("retry-me", "Flaky", fail="disk full", fail_attempts=1)
    arn = sm.start_pipeline_execution(PipelineName="retry-me")["PipelineExecutionArn"]

    failed = wait_for_status(sm, arn)
    assert failed["PipelineExecutionStatus"] == "Failed"
    assert "disk full" in failed["FailureReason"]
    before = latest_steps(sm, arn)
    assert before["Flaky"]["StepStatus"] == "Failed" and "Publish" not in before

    sm.retry_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=str(uuid.uuid4()))
    assert wait_for_status(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    after = latest_steps(sm, arn)
    assert {name: step["AttemptCount"] for name, step in after.items()} == {
        "Prepare": 1,
        "Flaky": 2,
        "Publish": 1,
    }
    assert all(step["StepStatus"] == "Succeeded" for step in after.values())
    assert after["Prepare"]["StartTime"] == before["Prepare"]["StartTime"]  # kept, not re-run


# ------------------------------------------------------------------------------------------------------
# Idempotency and validation


def test_same_client_request_token_starts_one_execution(local_aws: Any, sm: Any) -> None:
    create_pipeline(sm, "idem", chain_definition(["Only"]))
    token = uuid.uuid4().hex
    first = sm.start_pipeline_execution(PipelineName="idem", ClientRequestToken=token)["PipelineExecutionArn"]
    second = sm.start_pipeline_execution(PipelineName="idem", ClientRequestToken=token)[
        "PipelineExecutionArn"
    ]
    assert first == second
    summaries = sm.list_pipeline_executions(PipelineName="idem")["PipelineExecutionSummaries"]
    assert [s["PipelineExecutionArn"] for s in summaries] == [first]


def test_unknown_pipeline_parameter_is_rejected_and_nothing_starts(local_aws: Any, sm: Any) -> None:
    create_pipeline(
        sm,
        "params",
        definition([processing_step("Only")], [{"Name": "Epochs", "Type": "Integer", "DefaultValue": 1}]),
    )
    with pytest.raises(ClientError) as caught:
        sm.start_pipeline_execution(
            PipelineName="params", PipelineParameters=[{"Name": "Epoch", "Value": "3"}]
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "Epoch" in caught.value.response["Error"]["Message"]
    assert sm.list_pipeline_executions(PipelineName="params")["PipelineExecutionSummaries"] == []


def test_unknown_request_member_is_rejected_and_nothing_starts(local_aws: Any, sm: Any) -> None:
    create_pipeline(sm, "strict", chain_definition(["Only"]))
    body = {"PipelineName": "strict", "ClientRequestToken": uuid.uuid4().hex, "PipelineParameter": []}
    status, error = raw_sagemaker_call(local_aws.url, "StartPipelineExecution", body)
    assert status == 400
    assert error["__type"] == "ValidationException"
    assert "PipelineParameter" in error["message"]
    assert sm.list_pipeline_executions(PipelineName="strict")["PipelineExecutionSummaries"] == []


def raw_sagemaker_call(
    url: str, action: str, body: Any, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    """POST a SageMaker JSON request without botocore (so nothing is validated or dropped client-side)."""
    request = urllib.request.Request(
        url,
        data=raw if raw is not None else json.dumps(body).encode(),
        method="POST",
        headers={
            "X-Amz-Target": f"SageMaker.{action}",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": (
                "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sagemaker/aws4_request, "
                "SignedHeaders=host;x-amz-date;x-amz-target, Signature=0"
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["x-amzn-ErrorType"]
        return exc.code, json.loads(exc.read())


def test_request_validation_against_service_model(local_aws: Any, sm: Any) -> None:
    create_pipeline(sm, "valid", chain_definition(["Only"]))
    unchecked = local_aws.client("sagemaker", config=Config(parameter_validation=False))

    cases = {
        "clientRequestToken": dict(PipelineName="valid", ClientRequestToken="too-short"),
        "pipelineExecutionDisplayName": dict(PipelineName="valid", PipelineExecutionDisplayName="bad_name!"),
        "pipelineName": dict(PipelineExecutionDisplayName="no-pipeline-name"),
    }
    for member, kwargs in cases.items():
        with pytest.raises(ClientError) as caught:
            unchecked.start_pipeline_execution(**kwargs)
        error = caught.value.response["Error"]
        assert error["Code"] == "ValidationException", (member, error)
        assert f"at '{member}'" in error["Message"], error["Message"]
    assert sm.list_pipeline_executions(PipelineName="valid")["PipelineExecutionSummaries"] == []

    with pytest.raises(ClientError) as caught:
        unchecked.list_pipeline_execution_steps(
            PipelineExecutionArn="arn:aws:sagemaker:us-east-1:123456789012:pipeline/valid/execution/x",
            SortOrder="Sideways",
        )
    assert "enum value set: [Ascending, Descending]" in caught.value.response["Error"]["Message"]

    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.start_pipeline_execution(PipelineName="no-such-pipeline")
    with pytest.raises(sm.exceptions.ResourceNotFound):
        describe(sm, "arn:aws:sagemaker:us-east-1:123456789012:pipeline/valid/execution/doesnotexist")

    status, raw_error = raw_sagemaker_call(local_aws.url, "DescribePipelineExecution", None, raw=b"{not json")
    assert (status, raw_error["__type"]) == (400, "SerializationException")


# ------------------------------------------------------------------------------------------------------
# The SDK-shaped definition end to end


def test_sdk_shaped_definition_runs_end_to_end_and_registers_model(local_aws: Any, sm: Any, sqs: Any) -> None:
    path = FIXTURES / "sdk_pipeline_definition.json"
    if not path.exists():
        pytest.fail(f"{path} is missing (the engine's SDK-shaped fixture)")
    body = json.loads(path.read_text())
    callbacks = [s for s in _all_steps(body["Steps"]) if s["Type"] == "Callback"]
    queue_names = {s["SqsQueueUrl"].rstrip("/").rsplit("/", 1)[-1] for s in callbacks}
    queue_urls = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in queue_names}
    for step in _all_steps(body["Steps"]):
        for property_file in step.get("PropertyFiles", []):
            local_aws.controls.set_step_behaviour(
                "sdk-pipeline",
                step["Name"],
                property_files={property_file["PropertyFileName"]: _passing_report()},
            )
    create_pipeline(sm, "sdk-pipeline", json.dumps(body))
    arn = sm.start_pipeline_execution(PipelineName="sdk-pipeline")["PipelineExecutionArn"]

    def answer_callbacks() -> dict[str, Any] | None:
        for url in queue_urls.values():
            for message in receive_messages(sqs, url):
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                payload = json.loads(message["Body"])
                if payload.get("pipelineExecutionArn") != arn or payload.get("status") == "Stopping":
                    continue
                step = next(
                    s
                    for s in latest_steps(sm, arn).values()
                    if s.get("Metadata", {}).get("Callback", {}).get("CallbackToken") == payload["token"]
                )
                spec = next(s for s in callbacks if s["Name"] == step["StepName"])
                outputs = [
                    {"Name": o["OutputName"], "Value": _passing_value(o.get("OutputType", "String"))}
                    for o in spec.get("OutputParameters", [])
                ]
                sm.send_pipeline_execution_step_success(
                    CallbackToken=payload["token"], OutputParameters=outputs
                )
        status = describe(sm, arn)
        return status if status["PipelineExecutionStatus"] in TERMINAL else None

    final = wait_until(answer_callbacks, timeout=20, what="the SDK pipeline to finish")
    steps = latest_steps(sm, arn)
    assert final["PipelineExecutionStatus"] == "Succeeded", (final, steps)
    registered = [s for s in steps.values() if "RegisterModel" in s.get("Metadata", {})]
    assert registered, steps
    package_arn = registered[0]["Metadata"]["RegisterModel"]["Arn"]
    package = sm.describe_model_package(ModelPackageName=package_arn)  # served by moto, same endpoint
    assert package["ModelPackageArn"] == package_arn
    assert package["ModelApprovalStatus"]


def _all_steps(steps: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for step in steps:
        yield step
        if step["Type"] == "Condition":
            yield from _all_steps(step["Arguments"].get("IfSteps", []))
            yield from _all_steps(step["Arguments"].get("ElseSteps", []))


def _passing_report() -> dict[str, Any]:
    """An evaluation report that passes any sane threshold, in the shapes SDK examples read."""
    metrics = {"value": 0.99, "standard_deviation": 0.0}
    return {
        "metrics": {"accuracy": metrics, "auc": metrics, "f1": metrics},
        "regression_metrics": {"mse": {"value": 0.01}, "rmse": {"value": 0.01}},
        "binary_classification_metrics": {"accuracy": metrics, "auc": metrics},
    }


def _passing_value(output_type: str) -> str:
    return {"Boolean": "true", "Integer": "1", "Float": "1.0"}.get(output_type, "true")


# ------------------------------------------------------------------------------------------------------
# Async clients, EventBridge, faults, limits


def test_aiobotocore_reaches_endpoint_through_environment_only(local_aws: Any, sm: Any) -> None:
    from aiobotocore.session import get_session

    assert os.environ["AWS_ENDPOINT_URL"] == local_aws.url
    create_pipeline(sm, "async", chain_definition(["Only"]))

    async def run() -> str:
        async with get_session().create_client("sagemaker") as client:  # no endpoint_url, no credentials
            arn = (await client.start_pipeline_execution(PipelineName="async"))["PipelineExecutionArn"]
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status = (await client.describe_pipeline_execution(PipelineExecutionArn=arn))[
                    "PipelineExecutionStatus"
                ]
                if status in TERMINAL:
                    return str(status)
                await asyncio.sleep(0.02)
            return "timeout"

    assert asyncio.run(run()) == "Succeeded"


def test_eventbridge_rule_delivers_execution_status_changes_to_sqs(local_aws: Any, sm: Any, sqs: Any) -> None:
    events = local_aws.client("events")
    queue_url = sqs.create_queue(QueueName="pipeline-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rule_arn = events.put_rule(
        Name="pipeline-status",
        EventPattern=json.dumps({"source": ["aws.sagemaker"], "detail-type": [STATUS_CHANGE]}),
    )["RuleArn"]
    # as on AWS, EventBridge delivers only to a queue whose policy allows it
    policy = json.dumps(events_queue_policy(queue_arn, rule_arn))
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
    events.put_targets(Rule="pipeline-status", Targets=[{"Id": "queue", "Arn": queue_arn}])
    create_pipeline(sm, "evented", chain_definition(["One", "Two"]))
    arn = sm.start_pipeline_execution(PipelineName="evented")["PipelineExecutionArn"]
    wait_for_status(sm, arn)

    event = wait_for_message(
        sqs,
        queue_url,
        lambda body: (
            body["detail"].get("pipelineExecutionArn") == arn
            and body["detail"].get("currentPipelineExecutionStatus") == "Succeeded"
        ),
    )
    assert event["source"] == "aws.sagemaker"
    assert event["detail-type"] == STATUS_CHANGE
    assert event["detail"]["previousPipelineExecutionStatus"] == "Executing"
    assert event["detail"]["pipelineArn"].endswith(":pipeline/evented")
    assert arn in event["resources"] or event["detail"]["pipelineArn"] in event["resources"]


def test_fault_injection_throttles_and_call_record(local_aws: Any, sm: Any) -> None:
    controls = local_aws.controls
    create_pipeline(sm, "faulty", chain_definition(["Only"]))
    arn = sm.start_pipeline_execution(PipelineName="faulty")["PipelineExecutionArn"]
    no_retry = local_aws.client("sagemaker", config=NO_RETRIES)
    cursor = controls.calls()[-1]["seq"]

    controls.set_faults("DescribePipelineExecution", throttle_rate=1.0)
    with pytest.raises(ClientError) as caught:
        no_retry.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    no_retry.list_pipeline_executions(PipelineName="faulty")  # other actions are not affected

    controls.set_faults("*", error_rate=1.0, seed=7)
    with pytest.raises(ClientError) as caught:
        local_aws.client("sqs", config=NO_RETRIES).list_queues()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (500, 503)

    controls.clear_faults()
    assert controls.faults() == []
    assert no_retry.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionArn"] == arn

    recorded = controls.calls(since=cursor)
    throttled = [c for c in recorded if c["fault"] == "throttle"]
    assert [c["action"] for c in throttled] == ["DescribePipelineExecution"]
    assert throttled[0]["args"]["PipelineExecutionArn"] == arn
    assert throttled[0]["error_code"] == "ThrottlingException" and throttled[0]["service"] == "sagemaker"
    assert [c["action"] for c in recorded if c["fault"] is None][:1] == ["ListPipelineExecutions"]
    assert any(c["service"] == "sqs" and c["fault"] in ("error500", "error503") for c in recorded)
    assert recorded[-1]["routed_to"] == "engine" and recorded[-1]["status"] == 200
    assert all(c["seq"] > cursor for c in recorded)
    assert not any("Authorization" in json.dumps(c) or "testing" in json.dumps(c["args"]) for c in recorded)


def test_delay_fault_holds_the_answer_after_the_call_took_effect(local_aws: Any, sm: Any) -> None:
    """A delayed StartPipelineExecution starts its execution at once; a client that gives up before the
    answer never sees the ARN, and the same ClientRequestToken then returns that same execution."""
    from sagemaker_pipelines_provider.local.controls import LocalControlError

    controls = local_aws.controls
    create_pipeline(sm, "slow-answer", chain_definition(["Only"]))
    impatient = local_aws.client(
        "sagemaker", config=Config(retries={"total_max_attempts": 1}, read_timeout=0.5, connect_timeout=5)
    )
    controls.set_faults("StartPipelineExecution", delay=3.0)
    assert controls.faults() == [
        {
            "action": "StartPipelineExecution",
            "throttle_rate": 0.0,
            "error_rate": 0.0,
            "seed": None,
            "delay": 3.0,
        }
    ]
    token = uuid.uuid4().hex
    with pytest.raises(ReadTimeoutError):
        impatient.start_pipeline_execution(PipelineName="slow-answer", ClientRequestToken=token)
    executions = sm.list_pipeline_executions(PipelineName="slow-answer")["PipelineExecutionSummaries"]
    assert len(executions) == 1  # started although its caller never got the answer

    controls.clear_faults("StartPipelineExecution")
    again = sm.start_pipeline_execution(PipelineName="slow-answer", ClientRequestToken=token)
    assert again["PipelineExecutionArn"] == executions[0]["PipelineExecutionArn"]
    assert len(sm.list_pipeline_executions(PipelineName="slow-answer")["PipelineExecutionSummaries"]) == 1

    deadline = time.monotonic() + 30  # a call is recorded once answered: the held one comes in last
    while len(starts := controls.calls(action="StartPipelineExecution")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    starts.sort(key=lambda c: c["time"])  # by arrival
    assert [(c["fault"], c["status"]) for c in starts] == [("delay", 200), (None, 200)]
    assert starts[0]["duration_ms"] >= 3000
    with pytest.raises(LocalControlError) as caught:
        controls.set_faults("ListPipelines", delay=-1)
    assert caught.value.status == 400 and "delay" in caught.value.message


def test_seeded_faults_are_reproducible(local_aws: Any, sm: Any) -> None:
    controls = local_aws.controls
    no_retry = local_aws.client("sagemaker", config=NO_RETRIES)
    patterns = []
    for _ in range(2):
        controls.set_faults("ListPipelines", throttle_rate=0.5, seed=42)
        outcome = []
        for _ in range(20):
            try:
                no_retry.list_pipelines()
                outcome.append("ok")
            except ClientError as exc:
                outcome.append(exc.response["Error"]["Code"])
        patterns.append(outcome)
    assert patterns[0] == patterns[1]
    assert {"ok", "ThrottlingException"} <= set(patterns[0])


def test_concurrency_cap_and_peak_concurrency(local_aws: Any, sm: Any) -> None:
    controls = local_aws.controls
    create_pipeline(sm, "capped", chain_definition(["Long"]))
    controls.set_step_behaviour("capped", "Long", duration=3600)  # 36 s at TIME_SCALE: stopped below
    controls.set_concurrency_cap("capped", 2)
    running = [sm.start_pipeline_execution(PipelineName="capped")["PipelineExecutionArn"] for _ in range(2)]

    with pytest.raises(ClientError) as caught:
        sm.start_pipeline_execution(PipelineName="capped")
    assert caught.value.response["Error"]["Code"] == "ResourceLimitExceeded"
    assert len(sm.list_pipeline_executions(PipelineName="capped")["PipelineExecutionSummaries"]) == 2

    for arn in running:
        sm.stop_pipeline_execution(PipelineExecutionArn=arn)
    for arn in running:
        assert wait_for_status(sm, arn)["PipelineExecutionStatus"] == "Stopped"
    assert controls.peak_concurrency("capped") == 2

    controls.set_concurrency_cap("capped", None)
    controls.set_step_behaviour("capped", "Long", duration=50)  # 0.5 s: the three overlap
    arns = [sm.start_pipeline_execution(PipelineName="capped")["PipelineExecutionArn"] for _ in range(3)]
    assert all(wait_for_status(sm, arn)["PipelineExecutionStatus"] == "Succeeded" for arn in arns)
    assert controls.peak_concurrency("capped") == 3
    stats = controls.stats()
    assert stats["server"]["requests_total"] > 0 and "engine" in stats


# ------------------------------------------------------------------------------------------------------
# moto on the same port


def test_moto_services_on_the_same_port(local_aws: Any, sm: Any, demo: Any) -> None:
    sqs, s3, glue, ecs = (local_aws.client(name) for name in ("sqs", "s3", "glue", "ecs"))
    assert all(client.meta.endpoint_url == local_aws.url for client in (sqs, s3, glue, ecs))

    sqs.send_message(QueueUrl=demo["queue_url"], MessageBody="hello")
    assert [m["Body"] for m in receive_messages(sqs, demo["queue_url"])] == ["hello"]

    s3.put_object(Bucket=demo["bucket"], Key="data/x.csv", Body=b"a,b\n1,2\n")
    assert s3.get_object(Bucket=demo["bucket"], Key="data/x.csv")["Body"].read() == b"a,b\n1,2\n"

    run_id = glue.start_job_run(JobName="validate-features")["JobRunId"]
    assert glue.get_job_run(JobName="validate-features", RunId=run_id)["JobRun"]["JobRunState"]

    assert ecs.describe_clusters(clusters=["ml"])["clusters"][0]["clusterName"] == "ml"
    family = ecs.describe_task_definition(taskDefinition="model-validation")["taskDefinition"]["family"]
    assert family == "model-validation"

    package_group = sm.create_model_package_group(ModelPackageGroupName="passthrough")  # moto, not the engine
    assert package_group["ModelPackageGroupArn"].endswith("model-package-group/passthrough")
    services = {c["service"] for c in local_aws.controls.calls()}
    assert {"sqs", "s3", "glue", "ecs", "sagemaker", "iam"} <= services


def test_seed_is_idempotent(local_aws: Any, sm: Any) -> None:
    first = local_aws.seed()
    second = local_aws.seed()
    assert first == second
    names = sorted(p["PipelineName"] for p in sm.list_pipelines()["PipelineSummaries"])
    assert names == sorted(DEMO_PIPELINES)
    assert {"evaluation", "features", "training"} <= set(names)


def test_reset_forgets_engine_and_moto_state(local_aws: Any, sm: Any) -> None:
    local_aws.client("sqs").create_queue(QueueName="ephemeral")
    create_pipeline(sm, "ephemeral", chain_definition(["Only"]))
    local_aws.controls.set_faults("ListQueues", throttle_rate=0.1)
    local_aws.controls.reset()
    assert local_aws.client("sqs").list_queues().get("QueueUrls", []) == []
    assert sm.list_pipelines()["PipelineSummaries"] == []
    assert local_aws.controls.faults() == []
    assert [c["action"] for c in local_aws.controls.calls()] == ["ListQueues", "ListPipelines"]


# ------------------------------------------------------------------------------------------------------
# Load


def test_two_hundred_concurrent_executions_complete(local_aws: Any, sm: Any) -> None:
    create_pipeline(sm, "load", chain_definition(["Extract", "Transform", "Load"]))
    local_aws.controls.set_default_step_duration(10)  # 0.1 s per step at TIME_SCALE
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        arns = set(
            pool.map(
                lambda _: sm.start_pipeline_execution(PipelineName="load")["PipelineExecutionArn"], range(200)
            )
        )
    assert len(arns) == 200

    def all_done() -> dict[str, str] | None:
        statuses: dict[str, str] = {}
        for page in sm.get_paginator("list_pipeline_executions").paginate(
            PipelineName="load", PaginationConfig={"PageSize": 100}
        ):
            statuses.update(
                {
                    s["PipelineExecutionArn"]: s["PipelineExecutionStatus"]
                    for s in page["PipelineExecutionSummaries"]
                }
            )
        return statuses if len(statuses) == 200 and all(s in TERMINAL for s in statuses.values()) else None

    statuses = wait_until(all_done, timeout=40, interval=0.2, what="200 executions to finish")
    assert set(statuses) == arns
    assert set(statuses.values()) == {"Succeeded"}
    assert time.monotonic() - started < 40
    assert local_aws.controls.peak_concurrency("load") > 1


def test_property_file_read_from_s3_drives_condition(local_aws: Any, sm: Any, demo: Any) -> None:
    # The seeded report s3://sagemaker-local-demo/evaluation/evaluation.json says accuracy 0.91.
    passing = sm.start_pipeline_execution(PipelineName="evaluation")["PipelineExecutionArn"]
    failing = sm.start_pipeline_execution(
        PipelineName="evaluation", PipelineParameters=[{"Name": "AccuracyThreshold", "Value": "0.95"}]
    )["PipelineExecutionArn"]

    assert wait_for_status(sm, passing)["PipelineExecutionStatus"] == "Succeeded"
    steps = latest_steps(sm, passing)
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "True"
    package_arn = steps["RegisterEvaluatedModel"]["Metadata"]["RegisterModel"]["Arn"]
    group = sm.describe_model_package(ModelPackageName=package_arn)["ModelPackageGroupName"]
    assert group == "demo-models"

    final = wait_for_status(sm, failing)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert "Accuracy below threshold 0.95" in final["FailureReason"]
    assert latest_steps(sm, failing)["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "False"
