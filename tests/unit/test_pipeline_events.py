"""utils.pipeline_events: parsing EventBridge envelopes, the metadata key conversion, ranks, step entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest
from sagemaker_pipelines_provider.local.engine.events import camel
from sagemaker_pipelines_provider.local.server.event_delivery import envelope
from sagemaker_pipelines_provider.utils.pipeline_events import (
    EXECUTION_EVENT,
    STEP_EVENT,
    MalformedEvent,
    PipelineEvent,
    execution_rank,
    parse_event,
    pascal,
    step_rank,
)

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/train-model/execution/abc123xyz"
PIPELINE_ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/train-model"

#: One metadata value of each kind SageMaker documents for ListPipelineExecutionSteps, as the API spells it.
METADATA_KINDS: dict[str, dict[str, Any]] = {
    "TrainingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/t"},
    "ProcessingJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/p"},
    "TransformJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/t"},
    "TuningJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/t"},
    "Model": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"},
    "RegisterModel": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1"},
    "Condition": {"Outcome": "True"},
    "Callback": {
        "CallbackToken": "AbCdE12345",
        "SqsQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "OutputParameters": [{"Name": "rows", "Value": "42"}, {"Name": "Path", "Value": "s3://b/k"}],
    },
    "Lambda": {"Arn": "arn:aws:lambda:us-east-1:123456789012:function:f", "OutputParameters": []},
    "Fail": {"ErrorMessage": "accuracy too low"},
    "EMR": {"ClusterId": "j-ABC", "StepId": "s-DEF", "StepName": "spark", "LogFilePath": "s3://b/l"},
    "EMRServerless": {"ApplicationId": "app", "JobRunId": "run", "JobRunName": "n", "LogFilePath": "s3://b"},
    "QualityCheck": {
        "CheckType": "DATA_QUALITY",
        "BaselineUsedForDriftCheckStatistics": "s3://b/s",
        "CalculatedBaselineConstraints": "s3://b/c",
        "ModelPackageGroupName": "g",
        "ViolationReport": "s3://b/v",
        "CheckJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/q",
        "SkipCheck": False,
        "RegisterNewBaseline": True,
    },
    "ClarifyCheck": {"CheckType": "MODEL_BIAS", "SkipCheck": True, "RegisterNewBaseline": False},
    "AutoMLJob": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:automl-job/a"},
    "Endpoint": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
    "EndpointConfig": {"Arn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/e"},
}


def step_envelope(**detail: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "stepName": "Train",
        "stepType": "Training",
        "currentStepStatus": "Executing",
        "previousStepStatus": "Starting",
        "metadata": {"trainingJob": {"arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/t"}},
        "attemptCount": 1,
        "stepStartTime": "2026-12-02T04:00:01Z",
        "pipelineArn": PIPELINE_ARN,
        "pipelineExecutionArn": ARN,
    }
    base.update(detail)
    return envelope("123456789012", "us-east-1", "aws.sagemaker", STEP_EVENT, base, [PIPELINE_ARN, ARN])


def execution_envelope(**detail: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pipelineExecutionDisplayName": "nightly",
        "currentPipelineExecutionStatus": "Succeeded",
        "previousPipelineExecutionStatus": "Executing",
        "executionStartTime": "2026-12-02T04:00:00Z",
        "executionEndTime": "2026-12-02T04:05:00Z",
        "pipelineArn": PIPELINE_ARN,
        "pipelineExecutionArn": ARN,
    }
    base.update(detail)
    return envelope("123456789012", "us-east-1", "aws.sagemaker", EXECUTION_EVENT, base, [PIPELINE_ARN, ARN])


# -- metadata keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(METADATA_KINDS))
def test_metadata_round_trips_through_the_engines_camel_case(kind: str) -> None:
    api = {kind: METADATA_KINDS[kind]}
    on_the_wire = camel(api)
    assert on_the_wire != api  # the event really spells it differently
    assert pascal(on_the_wire) == api


def test_acronym_and_mixed_capital_keys() -> None:
    assert camel({"EMR": {}, "EMRServerless": {}, "AutoMLJob": {}}) == {
        "emr": {},
        "emrServerless": {},
        "autoMLJob": {},
    }
    assert pascal({"emr": {"clusterId": "j"}, "emrServerless": {}, "autoMLJob": {"arn": "a"}}) == {
        "EMR": {"ClusterId": "j"},
        "EMRServerless": {},
        "AutoMLJob": {"Arn": "a"},
    }
    # "emrxyz" is no acronym: only its first letter is raised; keys already capitalised are kept
    assert pascal({"emrxyz": 1, "Arn": 2, "": 3}) == {"Emrxyz": 1, "Arn": 2, "": 3}


def _member_names(shape: Any, seen: set[str]) -> set[str]:
    names: set[str] = set()
    if shape.name in seen:
        return names
    seen.add(shape.name)
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            names.add(name)
            names |= _member_names(member, seen)
    elif shape.type_name == "list":
        names |= _member_names(shape.member, seen)
    return names


def test_every_key_of_the_api_step_model_round_trips() -> None:
    """Every member name under ListPipelineExecutionSteps' Metadata and CacheHitResult (botocore's model):
    a kind added to the API later is caught here if camel/pascal do not invert each other on it."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    step: Any = model.shape_for("PipelineExecutionStep")
    names = _member_names(step.members["Metadata"], set()) | _member_names(
        step.members["CacheHitResult"], set()
    )
    assert {"EMR", "AutoMLJob", "OutputParameters", "SourcePipelineExecutionArn"} <= names
    for name in sorted(names):
        assert pascal(camel({name: None})) == {name: None}, name


# -- parsing ---------------------------------------------------------------------------------------------


def test_step_event_parses_from_json_text_and_reads_as_a_listed_step() -> None:
    raw = step_envelope(
        currentStepStatus="Failed",
        previousStepStatus="Executing",
        stepEndTime="2026-12-02T04:03:00Z",
        failureReason="ClientError: boom",
        attemptCount=2,
        metadata=camel({"Callback": METADATA_KINDS["Callback"]}),
        cacheHitResult={"sourcePipelineExecutionArn": ARN},
        extraFieldFromTheFuture={"x": 1},
    )
    event = parse_event(json.dumps(raw))
    assert event == PipelineEvent(
        event_id=raw["id"],
        kind="step",
        execution_arn=ARN,
        pipeline_name="train-model",
        status="Failed",
        previous_status="Executing",
        time=datetime.fromisoformat(raw["time"]),
        step_name="Train",
        step_type="Training",
        metadata={"Callback": METADATA_KINDS["Callback"]},
        failure_reason="ClientError: boom",
        attempt_count=2,
        start_time=datetime(2026, 12, 2, 4, 0, 1, tzinfo=UTC),
        end_time=datetime(2026, 12, 2, 4, 3, 0, tzinfo=UTC),
        cache_hit_result={"SourcePipelineExecutionArn": ARN},
    )
    entry = event.as_step_entry()
    assert entry == {
        "StepName": "Train",
        "StepStatus": "Failed",
        "StartTime": datetime(2026, 12, 2, 4, 0, 1, tzinfo=UTC),
        "EndTime": datetime(2026, 12, 2, 4, 3, 0, tzinfo=UTC),
        "AttemptCount": 2,
        "FailureReason": "ClientError: boom",
        "Metadata": {"Callback": METADATA_KINDS["Callback"]},
        "CacheHitResult": {"SourcePipelineExecutionArn": ARN},
    }
    entry["Metadata"]["Callback"]["OutputParameters"].clear()  # the entry is the caller's own copy
    assert event.metadata["Callback"]["OutputParameters"]


def test_step_entry_leaves_out_what_the_event_does_not_carry() -> None:
    raw = step_envelope(attemptCount=None, stepStartTime=None, metadata=None)
    entry = parse_event(raw).as_step_entry()
    assert entry == {"StepName": "Train", "StepStatus": "Executing", "Metadata": {}}


def test_execution_event_parses_from_bytes() -> None:
    raw = execution_envelope()
    event = parse_event(json.dumps(raw).encode())
    assert event.kind == "execution"
    assert (event.execution_arn, event.pipeline_name, event.status, event.previous_status) == (
        ARN,
        "train-model",
        "Succeeded",
        "Executing",
    )
    assert event.display_name == "nightly"
    assert event.start_time == datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    assert event.end_time == datetime(2026, 12, 2, 4, 5, tzinfo=UTC)
    assert event.step_name is None and event.metadata == {} and event.cache_hit_result is None
    with pytest.raises(ValueError, match="execution event, not a step event"):
        event.as_step_entry()


def test_first_event_has_no_previous_status() -> None:
    raw = execution_envelope(currentPipelineExecutionStatus="Executing", executionEndTime=None)
    del raw["detail"]["previousPipelineExecutionStatus"]
    event = parse_event(raw)
    assert event.previous_status is None and event.end_time is None


def _without(raw: dict[str, Any], *path: str) -> dict[str, Any]:
    target = raw
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return raw


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not utf-8", "not JSON"),
        ("not json at all", "not JSON"),
        ("[1, 2]", "JSON list, not an EventBridge event object"),
        (42, "must be JSON text or a mapping"),
        ({**execution_envelope(), "source": "aws.s3"}, "source is 'aws.s3', not 'aws.sagemaker'"),
        ({**execution_envelope(), "detail-type": "Other"}, "detail-type 'Other' is neither"),
        ({**execution_envelope(), "id": ""}, "no id"),
        ({**execution_envelope(), "detail": "x"}, "no detail object"),
        (_without(execution_envelope(), "detail", "pipelineExecutionArn"), "pipelineExecutionArn"),
        (execution_envelope(pipelineExecutionArn=PIPELINE_ARN), "not a SageMaker pipeline execution ARN"),
        (_without(execution_envelope(), "detail", "currentPipelineExecutionStatus"), "is missing"),
        (execution_envelope(currentPipelineExecutionStatus="Starting"), "Unknown pipeline execution status"),
        (step_envelope(currentStepStatus="Done"), "Unknown step status 'Done'"),
        (step_envelope(stepName=""), "needs detail.stepName"),
        (step_envelope(stepName=7), "stepName is 7, not a string"),
        (step_envelope(metadata=[1]), "metadata is list"),
        (step_envelope(cacheHitResult="x"), "cacheHitResult is str"),
        (step_envelope(attemptCount="2"), "attemptCount is '2', not an integer"),
        (step_envelope(attemptCount=True), "attemptCount is True"),
        (step_envelope(stepStartTime="yesterday"), "stepStartTime is 'yesterday', not an ISO-8601 time"),
        ({**step_envelope(), "time": 5}, "time is 5"),
    ],
)
def test_malformed_events_say_why(body: Any, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_event(body)
    assert reason in caught.value.reason
    if isinstance(body, dict) and body.get("id"):
        assert caught.value.event_id == body["id"]


# -- ranks -----------------------------------------------------------------------------------------------


def test_execution_rank_orders_running_before_stopping_before_terminal() -> None:
    assert execution_rank("Executing") < execution_rank("Stopping") < execution_rank("Succeeded")
    assert execution_rank("Succeeded") == execution_rank("Failed") == execution_rank("Stopped")
    with pytest.raises(ValueError, match=r"Unknown pipeline execution status 'Starting'.*Executing"):
        execution_rank("Starting")


def test_step_rank_orders_starting_executing_stopping_terminal() -> None:
    assert step_rank("Starting") < step_rank("Executing") < step_rank("Stopping") < step_rank("Failed")
    assert step_rank("Succeeded") == step_rank("Failed") == step_rank("Stopped")
    with pytest.raises(ValueError, match="Unknown step status"):
        step_rank(None)  # type: ignore[arg-type]
