"""The pipeline engine (``local.engine``), driven directly with a fake SideEffects.

The fake stands for the AWS boundary (SQS, model registry, EventBridge, S3). Step durations are scaled
down (1 s default x 0.01) so the suite stays fast.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sagemaker_pipelines_provider.local.engine import (
    ConflictError,
    EngineError,
    EngineValidationError,
    PipelineEngine,
    ResourceLimitExceeded,
    ResourceNotFound,
)

from tests.support.waiting import wait_until

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerPipelineRole"
TERMINAL = ("Succeeded", "Failed", "Stopped")
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "sdk_pipeline_definition.json"
EXECUTION_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
STEP_EVENT = "SageMaker Model Building Pipeline Execution Step Status Change"


class FakeSideEffects:
    """In-memory stand-in for SQS, the model registry, EventBridge and S3."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, dict[str, Any], list[str], str]] = []
        self.packages: list[tuple[dict[str, Any], str]] = []
        self.objects: dict[str, bytes] = {}
        self.reader: Callable[[str], bytes | None] | None = None
        self.broken_queues: set[str] = set()

    def send_sqs_message(self, queue_url: str, body: str) -> None:
        if queue_url in self.broken_queues:
            raise RuntimeError("AWS.SimpleQueueService.NonExistentQueue")
        with self.lock:
            self.messages.append((queue_url, json.loads(body)))

    def create_model_package(self, request: dict[str, Any], region: str) -> str:
        with self.lock:
            self.packages.append((request, region))
            version = len(self.packages)
        group = str(request["ModelPackageGroupName"]).lower()
        return f"arn:aws:sagemaker:{region}:123456789012:model-package/{group}/{version}"

    def put_event(self, detail_type: str, detail: dict[str, Any], resources: list[str], region: str) -> None:
        with self.lock:
            self.events.append((detail_type, detail, resources, region))

    def read_s3_object(self, s3_uri: str) -> bytes | None:
        if self.reader is not None:
            return self.reader(s3_uri)
        return self.objects.get(s3_uri)


@pytest.fixture
def fx() -> FakeSideEffects:
    return FakeSideEffects()


@pytest.fixture
def engine(fx: FakeSideEffects) -> Iterator[PipelineEngine]:
    engine = PipelineEngine(fx)
    engine.set_time_scale(0.01)
    yield engine
    engine.shutdown()


# -- helpers ---------------------------------------------------------------------------------------


def call(engine: PipelineEngine, action: str, **request: Any) -> dict[str, Any]:
    return engine.dispatch(action, request, region=REGION)


def token() -> str:
    return uuid.uuid4().hex


def step(name: str, type_: str = "Processing", **extra: Any) -> dict[str, Any]:
    return {"Name": name, "Type": type_, "Arguments": extra.pop("Arguments", {}), **extra}


def definition(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"Version": "2020-12-01", "Parameters": parameters or [], "Steps": steps})


def create(engine: PipelineEngine, name: str, body: str, **extra: Any) -> str:
    response = call(
        engine,
        "CreatePipeline",
        PipelineName=name,
        PipelineDefinition=body,
        RoleArn=ROLE,
        ClientRequestToken=token(),
        **extra,
    )
    return str(response["PipelineArn"])


def start(engine: PipelineEngine, name: str, **extra: Any) -> str:
    extra.setdefault("ClientRequestToken", token())
    return str(call(engine, "StartPipelineExecution", PipelineName=name, **extra)["PipelineExecutionArn"])


def describe(engine: PipelineEngine, arn: str) -> dict[str, Any]:
    return call(engine, "DescribePipelineExecution", PipelineExecutionArn=arn)


def wait(
    engine: PipelineEngine, arn: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 10.0
) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        described = describe(engine, arn)
        return described if described["PipelineExecutionStatus"] in statuses else None

    return wait_until(ended, timeout)


def steps_of(engine: PipelineEngine, arn: str) -> dict[str, dict[str, Any]]:
    listed = call(engine, "ListPipelineExecutionSteps", PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    return {entry["StepName"]: entry for entry in listed}


def wait_step(engine: PipelineEngine, arn: str, name: str, status: str) -> dict[str, Any]:
    return wait_until(lambda: (s := steps_of(engine, arn).get(name)) and s["StepStatus"] == status and s)


def messages_for(fx: FakeSideEffects, arn: str) -> list[dict[str, Any]]:
    with fx.lock:
        return [body for _, body in fx.messages if body["pipelineExecutionArn"] == arn]


def max_overlap(entries: list[dict[str, Any]]) -> int:
    points: list[tuple[datetime, int]] = []
    for entry in entries:
        points.append((entry["StartTime"], 1))
        points.append((entry["EndTime"], -1))
    points.sort(key=lambda p: (p[0], p[1]))  # an end and a start at the same instant do not overlap
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


LINEAR = definition(
    [
        step(
            "Prep",
            Arguments={
                "ProcessingOutputConfig": {
                    "Outputs": [
                        {"OutputName": "train", "S3Output": {"S3Uri": "s3://bucket/train", "LocalPath": "/x"}}
                    ]
                }
            },
        ),
        step(
            "Train",
            "Training",
            Arguments={
                "OutputDataConfig": {"S3OutputPath": "s3://bucket/models/"},
                "InputDataConfig": [
                    {
                        "ChannelName": "train",
                        "DataSource": {
                            "S3DataSource": {
                                "S3Uri": {
                                    "Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"
                                }
                            }
                        },
                    }
                ],
            },
        ),
        step(
            "Model",
            "Model",
            Arguments={
                "PrimaryContainer": {"ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}
            },
        ),
    ],
    [{"Name": "Epochs", "Type": "Integer", "DefaultValue": 3}, {"Name": "Flag", "Type": "Boolean"}],
)


# -- pipelines -------------------------------------------------------------------------------------


def test_linear_pipeline_end_to_end(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    pipeline_arn = create(engine, "linear", LINEAR)
    assert pipeline_arn == "arn:aws:sagemaker:us-east-1:123456789012:pipeline/linear"
    arn = start(engine, "linear", PipelineParameters=[{"Name": "Flag", "Value": "true"}])
    assert arn.startswith(pipeline_arn + "/execution/")
    execution_id = arn.rsplit("/", 1)[1]
    assert len(execution_id) == 12 and execution_id.isalnum() and execution_id == execution_id.lower()

    assert describe(engine, arn)["PipelineExecutionStatus"] == "Executing"
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Succeeded"
    assert final["PipelineArn"] == pipeline_arn
    assert final["CreationTime"].tzinfo is not None
    assert final["PipelineExecutionDisplayName"].startswith("execution-")

    listed = call(engine, "ListPipelineExecutionSteps", PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [s["StepName"] for s in listed] == ["Model", "Train", "Prep"]  # newest first, like AWS
    by_name = {s["StepName"]: s for s in listed}
    for entry in listed:
        assert entry["StepStatus"] == "Succeeded"
        assert entry["AttemptCount"] == 1
        assert entry["StartTime"] <= entry["EndTime"]
    assert by_name["Prep"]["EndTime"] <= by_name["Train"]["StartTime"]
    assert by_name["Train"]["EndTime"] <= by_name["Model"]["StartTime"]
    assert by_name["Prep"]["Metadata"]["ProcessingJob"]["Arn"].startswith(
        f"arn:aws:sagemaker:us-east-1:123456789012:processing-job/pipelines-{execution_id}-prep-"
    )
    assert "training-job/" in by_name["Train"]["Metadata"]["TrainingJob"]["Arn"]
    assert "model/" in by_name["Model"]["Metadata"]["Model"]["Arn"]

    step_statuses = [(d["stepName"], d["currentStepStatus"]) for t, d, _, _ in fx.events if t == STEP_EVENT]
    assert step_statuses[:3] == [("Prep", "Starting"), ("Prep", "Executing"), ("Prep", "Succeeded")]
    assert len(step_statuses) == 9


def test_step_properties_are_describe_shaped_and_flow_downstream(engine: PipelineEngine) -> None:
    create(engine, "props", LINEAR)
    arn = start(engine, "props", PipelineParameters=[{"Name": "Flag", "Value": "false"}])
    wait(engine, arn)
    runs = engine._executions[arn].steps  # white-box: the properties later steps read
    train = runs["Train"].properties
    assert train is not None
    assert train["TrainingJobName"].startswith("pipelines-")
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://bucket/train"
    expected_model = f"s3://bucket/models/{train['TrainingJobName']}/output/model.tar.gz"
    assert train["ModelArtifacts"]["S3ModelArtifacts"] == expected_model
    model = runs["Model"].properties
    assert model is not None and model["PrimaryContainer"]["ModelDataUrl"] == expected_model
    assert model["ModelArn"].endswith(model["ModelName"].lower())


def test_pipeline_crud_and_arn_lookup(engine: PipelineEngine) -> None:
    arn = create(
        engine,
        "crud",
        LINEAR,
        PipelineDescription="first",
        ParallelismConfiguration={"MaxParallelExecutionSteps": 2},
    )
    described = call(engine, "DescribePipeline", PipelineName=arn)
    assert described["PipelineName"] == "crud"
    assert described["PipelineDefinition"] == LINEAR
    assert described["PipelineStatus"] == "Active"
    assert described["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 2}

    updated = call(engine, "UpdatePipeline", PipelineName="crud", PipelineDescription="second")
    assert updated == {"PipelineArn": arn, "PipelineVersionId": 1}
    body = definition([step("Only")])
    assert call(engine, "UpdatePipeline", PipelineName=arn, PipelineDefinition=body)["PipelineVersionId"] == 2
    assert call(engine, "DescribePipeline", PipelineName="crud")["PipelineDefinition"] == body
    assert (
        call(engine, "DescribePipeline", PipelineName="crud", PipelineVersionId=1)["PipelineDefinition"]
        == LINEAR
    )

    create(engine, "another", LINEAR)
    names = [p["PipelineName"] for p in call(engine, "ListPipelines")["PipelineSummaries"]]
    assert names == ["another", "crud"]
    page = call(engine, "ListPipelines", SortBy="Name", SortOrder="Ascending", MaxResults=1)
    assert [p["PipelineName"] for p in page["PipelineSummaries"]] == ["another"]
    rest = call(
        engine,
        "ListPipelines",
        SortBy="Name",
        SortOrder="Ascending",
        MaxResults=1,
        NextToken=page["NextToken"],
    )
    assert [p["PipelineName"] for p in rest["PipelineSummaries"]] == ["crud"] and "NextToken" not in rest
    assert [
        p["PipelineName"] for p in call(engine, "ListPipelines", PipelineNamePrefix="cr")["PipelineSummaries"]
    ] == ["crud"]

    delete_token = token()
    assert call(engine, "DeletePipeline", PipelineName="crud", ClientRequestToken=delete_token) == {
        "PipelineArn": arn
    }
    assert call(engine, "DeletePipeline", PipelineName="crud", ClientRequestToken=delete_token) == {
        "PipelineArn": arn
    }
    with pytest.raises(ResourceNotFound):
        call(engine, "DescribePipeline", PipelineName="crud")
    with pytest.raises(ResourceNotFound):
        call(
            engine,
            "DescribePipeline",
            PipelineName="arn:aws:sagemaker:eu-west-1:123456789012:pipeline/another",
        )
    with pytest.raises(ResourceNotFound):
        engine.dispatch("DescribePipeline", {"PipelineName": "another"}, region="eu-west-1")


def test_duplicate_pipeline_is_a_validation_exception_like_sagemaker(engine: PipelineEngine) -> None:
    create_token = token()
    request = {
        "PipelineName": "dup",
        "PipelineDefinition": LINEAR,
        "RoleArn": ROLE,
        "ClientRequestToken": create_token,
    }
    arn = call(engine, "CreatePipeline", **request)["PipelineArn"]
    assert call(engine, "CreatePipeline", **request)["PipelineArn"] == arn  # same token: idempotent
    with pytest.raises(EngineValidationError) as raised:
        call(engine, "CreatePipeline", **{**request, "ClientRequestToken": token(), "PipelineName": "DUP"})
    assert raised.value.code == "ValidationException"
    assert "Pipeline names must be unique within an AWS account and region" in raised.value.message


@pytest.mark.parametrize("action", ["CreatePipeline", "UpdatePipeline"])
def test_invalid_definition_is_rejected_naming_the_problem(engine: PipelineEngine, action: str) -> None:
    if action == "UpdatePipeline":
        create(engine, "bad", LINEAR)
    bad = definition([step("A", DependsOn=["Nope"])])
    with pytest.raises(
        EngineValidationError,
        match="Invalid PipelineDefinition for pipeline 'bad': step 'A' DependsOn unknown step 'Nope'",
    ):
        call(
            engine,
            action,
            PipelineName="bad",
            PipelineDefinition=bad,
            RoleArn=ROLE,
            ClientRequestToken=token(),
        )


def test_definition_from_s3_location(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    fx.objects["s3://defs/pipeline.json"] = LINEAR.encode()
    call(
        engine,
        "CreatePipeline",
        PipelineName="froms3",
        PipelineDefinitionS3Location={"Bucket": "defs", "ObjectKey": "pipeline.json"},
        RoleArn=ROLE,
        ClientRequestToken=token(),
    )
    assert call(engine, "DescribePipeline", PipelineName="froms3")["PipelineDefinition"] == LINEAR


# -- starting --------------------------------------------------------------------------------------


def test_parameters_are_merged_with_defaults_and_validated(engine: PipelineEngine) -> None:
    create(engine, "params", LINEAR)
    for bad, message in [
        ([{"Name": "Flag", "Value": "true"}, {"Name": "Nope", "Value": "1"}], "unknown parameter 'Nope'"),
        ([{"Name": "Flag", "Value": "yes"}], "'Flag' is Boolean"),
        ([{"Name": "Flag", "Value": "true"}, {"Name": "Epochs", "Value": "many"}], "'Epochs' is Integer"),
        ([], "parameter 'Flag' (Boolean) has no default and no value"),
    ]:
        with pytest.raises(EngineValidationError) as raised:
            start(engine, "params", PipelineParameters=bad)
        assert message in raised.value.message
        assert (
            "Valid parameters: Epochs (Integer, default 3), Flag (Boolean, required)" in raised.value.message
        )
    assert call(engine, "ListPipelineExecutions", PipelineName="params")["PipelineExecutionSummaries"] == []

    arn = start(engine, "params", PipelineParameters=[{"Name": "Flag", "Value": "True"}])
    parameters = call(engine, "ListPipelineParametersForExecution", PipelineExecutionArn=arn)[
        "PipelineParameters"
    ]
    assert parameters == [{"Name": "Epochs", "Value": "3"}, {"Name": "Flag", "Value": "True"}]


def test_client_request_token_is_idempotent_per_pipeline(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    create(engine, "idem", LINEAR)
    create(engine, "other", LINEAR)
    start_token = token()
    request = {
        "PipelineParameters": [{"Name": "Flag", "Value": "true"}],
        "PipelineExecutionDisplayName": "run-1",
        "PipelineExecutionDescription": "nightly",
        "ClientRequestToken": start_token,
    }
    first = start(engine, "idem", **request)
    assert start(engine, "idem", **request) == first
    assert start(engine, "arn:aws:sagemaker:us-east-1:123456789012:pipeline/idem", **request) == first
    wait(engine, first)
    assert start(engine, "idem", **request) == first  # even once it has finished
    summaries = call(engine, "ListPipelineExecutions", PipelineName="idem")["PipelineExecutionSummaries"]
    assert len(summaries) == 1
    assert engine.stats()["executions"]["idem"] == 1

    with pytest.raises(ConflictError, match="already used to start"):
        start(engine, "idem", **{**request, "PipelineParameters": [{"Name": "Flag", "Value": "false"}]})
    with pytest.raises(ConflictError):
        start(engine, "idem", **{**request, "PipelineExecutionDisplayName": "run-2"})
    # tokens are per pipeline
    assert start(engine, "other", **request) != first

    described = describe(engine, first)
    assert described["PipelineExecutionDisplayName"] == "run-1"
    assert described["PipelineExecutionDescription"] == "nightly"


def test_display_name_is_validated(engine: PipelineEngine) -> None:
    create(engine, "names", LINEAR)
    with pytest.raises(EngineValidationError, match="PipelineExecutionDisplayName"):
        start(
            engine,
            "names",
            PipelineExecutionDisplayName="has spaces",
            PipelineParameters=[{"Name": "Flag", "Value": "true"}],
        )


def test_unknown_pipeline_and_execution(engine: PipelineEngine) -> None:
    with pytest.raises(ResourceNotFound) as raised:
        start(engine, "ghost")
    assert raised.value.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFound):
        describe(engine, "arn:aws:sagemaker:us-east-1:123456789012:pipeline/ghost/execution/abcdefabcdef")
    with pytest.raises(EngineValidationError, match="not served"):
        call(engine, "CreateTrainingJob")


# -- scheduling ------------------------------------------------------------------------------------

SIX = definition(
    [
        step("A"),
        step("B", DependsOn=["A"]),
        step("C", DependsOn=["A"]),
        step("D", DependsOn=["A"]),
        step("E", DependsOn=["B", "C"]),
        step("F", DependsOn=["D"]),
    ]
)


def _six_step(engine: PipelineEngine, name: str, **pipeline_extra: Any) -> None:
    create(engine, name, SIX, **pipeline_extra)
    for step_name, seconds in {"A": 1, "B": 2, "C": 1, "D": 3, "E": 1, "F": 1}.items():
        engine.set_step_behaviour(name, step_name, duration=seconds)


def test_parallel_branches_start_in_dependency_order(engine: PipelineEngine) -> None:
    engine.set_time_scale(0.02)
    _six_step(engine, "six")
    arn = start(engine, "six")
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    s = steps_of(engine, arn)
    assert len(s) == 6
    for child in ("B", "C", "D"):
        assert s[child]["StartTime"] >= s["A"]["EndTime"]
    assert s["E"]["StartTime"] >= max(s["B"]["EndTime"], s["C"]["EndTime"])
    assert s["F"]["StartTime"] >= s["D"]["EndTime"]
    # B, C and D ran at the same time; E started before D finished (no needless serialisation)
    assert max(s[c]["StartTime"] for c in "BCD") < min(s[c]["EndTime"] for c in "BCD")
    assert s["E"]["StartTime"] < s["D"]["EndTime"]
    assert max_overlap(list(s.values())) == 3
    ascending = call(engine, "ListPipelineExecutionSteps", PipelineExecutionArn=arn, SortOrder="Ascending")
    assert ascending["PipelineExecutionSteps"][0]["StepName"] == "A"


def test_max_parallel_execution_steps_execution_overrides_pipeline(engine: PipelineEngine) -> None:
    engine.set_time_scale(0.02)
    _six_step(engine, "limited", ParallelismConfiguration={"MaxParallelExecutionSteps": 1})
    sequential = start(engine, "limited")
    two = start(engine, "limited", ParallelismConfiguration={"MaxParallelExecutionSteps": 2})
    assert wait(engine, sequential)["PipelineExecutionStatus"] == "Succeeded"
    assert wait(engine, two)["PipelineExecutionStatus"] == "Succeeded"
    assert max_overlap(list(steps_of(engine, sequential).values())) == 1
    assert max_overlap(list(steps_of(engine, two).values())) == 2
    assert describe(engine, two)["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 2}
    assert describe(engine, sequential)["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 1}


def test_update_pipeline_execution_changes_name_description_and_parallelism(engine: PipelineEngine) -> None:
    engine.set_time_scale(0.02)
    _six_step(engine, "updatable")
    arn = start(engine, "updatable", ParallelismConfiguration={"MaxParallelExecutionSteps": 1})
    call(
        engine,
        "UpdatePipelineExecution",
        PipelineExecutionArn=arn,
        PipelineExecutionDisplayName="renamed",
        PipelineExecutionDescription="new",
        ParallelismConfiguration={"MaxParallelExecutionSteps": 3},
    )
    wait(engine, arn)
    described = describe(engine, arn)
    assert described["PipelineExecutionDisplayName"] == "renamed"
    assert described["PipelineExecutionDescription"] == "new"
    assert max_overlap(list(steps_of(engine, arn).values())) == 3


def test_step_failure_fails_execution_naming_the_step(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    create(engine, "failing", SIX)
    engine.set_step_behaviour("failing", "B", fail="ClientError: out of memory")
    arn = start(engine, "failing")
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert final["FailureReason"] == "Step B failed: ClientError: out of memory"
    s = steps_of(engine, arn)
    assert s["B"]["StepStatus"] == "Failed" and s["B"]["FailureReason"] == "ClientError: out of memory"
    assert "E" not in s  # never started because of B
    summary = call(engine, "ListPipelineExecutions", PipelineName="failing")["PipelineExecutionSummaries"][0]
    assert summary["PipelineExecutionFailureReason"] == final["FailureReason"]
    failed_events = [d for t, d, _, _ in fx.events if t == STEP_EVENT and d["currentStepStatus"] == "Failed"]
    assert failed_events[0]["failureReason"] == "ClientError: out of memory"


# -- conditions, fail, register, lambda ------------------------------------------------------------


def _condition_pipeline() -> str:
    inner = step(
        "Inner",
        "Condition",
        Arguments={
            "Conditions": [
                {"Type": "GreaterThan", "LeftValue": {"Get": "Parameters.Score"}, "RightValue": 10}
            ],
            "IfSteps": [step("High")],
            "ElseSteps": [step("Medium")],
        },
    )
    outer = step(
        "Outer",
        "Condition",
        Arguments={
            "Conditions": [
                {"Type": "GreaterThanOrEqualTo", "LeftValue": {"Get": "Parameters.Score"}, "RightValue": 5}
            ],
            "IfSteps": [inner],
            "ElseSteps": [
                step(
                    "TooLow",
                    "Fail",
                    Arguments={
                        "ErrorMessage": {
                            "Std:Join": {
                                "On": " ",
                                "Values": ["score", {"Get": "Parameters.Score"}, "too low"],
                            }
                        }
                    },
                )
            ],
        },
    )
    return definition(
        [step("Start"), outer, step("AfterMedium", DependsOn=["Medium"])],
        [{"Name": "Score", "Type": "Integer"}],
    )


def test_nested_conditions_run_only_the_chosen_branches(engine: PipelineEngine) -> None:
    create(engine, "cond", _condition_pipeline())
    medium = start(engine, "cond", PipelineParameters=[{"Name": "Score", "Value": "7"}])
    high = start(engine, "cond", PipelineParameters=[{"Name": "Score", "Value": "11"}])
    assert wait(engine, medium)["PipelineExecutionStatus"] == "Succeeded"
    assert wait(engine, high)["PipelineExecutionStatus"] == "Succeeded"
    s = steps_of(engine, medium)
    assert set(s) == {"Start", "Outer", "Inner", "Medium", "AfterMedium"}
    assert s["Outer"]["Metadata"] == {"Condition": {"Outcome": "True"}}
    assert s["Inner"]["Metadata"] == {"Condition": {"Outcome": "False"}}
    # a step depending on a step of a branch not taken does not run either
    assert set(steps_of(engine, high)) == {"Start", "Outer", "Inner", "High"}


def test_fail_step_fails_execution_with_its_message(engine: PipelineEngine) -> None:
    create(engine, "cond-fail", _condition_pipeline())
    arn = start(engine, "cond-fail", PipelineParameters=[{"Name": "Score", "Value": "2"}])
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert final["FailureReason"] == "score 2 too low"
    s = steps_of(engine, arn)
    assert s["TooLow"]["Metadata"] == {"Fail": {"ErrorMessage": "score 2 too low"}}
    assert s["TooLow"]["StepStatus"] == "Failed"
    assert s["Outer"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert "Inner" not in s


def test_register_model_creates_a_model_package(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    body = definition(
        [
            step("Train", "Training", Arguments={"OutputDataConfig": {"S3OutputPath": "s3://m"}}),
            step(
                "Register",
                "RegisterModel",
                Arguments={
                    "ModelPackageGroupName": "Group",
                    "ModelApprovalStatus": {"Get": "Parameters.Approval"},
                    "InferenceSpecification": {
                        "Containers": [
                            {
                                "Image": "img",
                                "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
                            }
                        ],
                        "SupportedContentTypes": ["text/csv"],
                        "SupportedResponseMIMETypes": ["text/csv"],
                    },
                    "NotAModelPackageField": "dropped",
                },
            ),
            step(
                "Use",
                "Lambda",
                Arguments={"package": {"Get": "Steps.Register.ModelPackageArn"}},
                FunctionArn={"Get": "Parameters.Function"},
            ),
        ],
        [
            {"Name": "Approval", "Type": "String", "DefaultValue": "Approved"},
            {
                "Name": "Function",
                "Type": "String",
                "DefaultValue": "arn:aws:lambda:us-east-1:123456789012:function:f",
            },
        ],
    )
    create(engine, "register", body)
    engine.set_step_behaviour("register", "Use", properties={"OutputParameters": {"endpoint": "ep-1"}})
    arn = start(engine, "register")
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    request, region = fx.packages[0]
    assert region == REGION
    assert request["ModelPackageGroupName"] == "Group"
    assert request["ModelApprovalStatus"] == "Approved"
    assert request["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].endswith("/output/model.tar.gz")
    assert "NotAModelPackageField" not in request
    s = steps_of(engine, arn)
    package_arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/group/1"
    assert s["Register"]["Metadata"] == {"RegisterModel": {"Arn": package_arn}}
    assert s["Use"]["Metadata"] == {
        "Lambda": {
            "Arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "OutputParameters": [{"Name": "endpoint", "Value": "ep-1"}],
        }
    }
    assert engine._executions[arn].steps["Use"].arguments == {"package": package_arn}


# -- property files --------------------------------------------------------------------------------


def _property_file_pipeline() -> str:
    return definition(
        [
            step(
                "Eval",
                Arguments={
                    "ProcessingOutputConfig": {
                        "Outputs": [
                            {
                                "OutputName": "evaluation",
                                "S3Output": {
                                    "S3Uri": {
                                        "Std:Join": {
                                            "On": "/",
                                            "Values": [
                                                "s3://b",
                                                {"Get": "Execution.PipelineExecutionId"},
                                                "eval",
                                            ],
                                        }
                                    }
                                },
                            }
                        ]
                    }
                },
                PropertyFiles=[
                    {
                        "PropertyFileName": "Report",
                        "OutputName": "evaluation",
                        "FilePath": "metrics/evaluation.json",
                    }
                ],
            ),
            step(
                "Check",
                "Condition",
                Arguments={
                    "Conditions": [
                        {
                            "Type": "LessThan",
                            "LeftValue": {
                                "Std:JsonGet": {
                                    "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"},
                                    "Path": "mse.value",
                                }
                            },
                            "RightValue": 5.0,
                        }
                    ],
                    "IfSteps": [step("Good")],
                    "ElseSteps": [step("Bad")],
                },
            ),
        ]
    )


def test_property_file_is_read_from_the_output_s3_uri(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    create(engine, "pf", _property_file_pipeline())
    reads: list[str] = []

    def reader(uri: str) -> bytes | None:
        reads.append(uri)
        return json.dumps({"mse": {"value": 3.5}}).encode()

    fx.reader = reader
    arn = start(engine, "pf")
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    execution_id = arn.rsplit("/", 1)[1]
    assert reads == [f"s3://b/{execution_id}/eval/metrics/evaluation.json"]
    assert "Good" in steps_of(engine, arn) and "Bad" not in steps_of(engine, arn)


def test_property_file_from_behaviour_overrides_s3(engine: PipelineEngine) -> None:
    create(engine, "pf-behaviour", _property_file_pipeline())
    engine.set_step_behaviour("pf-behaviour", "Eval", property_files={"Report": {"mse": {"value": 9.0}}})
    arn = start(engine, "pf-behaviour")
    wait(engine, arn)
    assert "Bad" in steps_of(engine, arn)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (None, "property file 'Report' of step 'Eval' was not found at s3://b/"),
        ({"rmse": 1}, "(Std:JsonGet path 'mse.value') has no mse"),
    ],
)
def test_missing_property_file_or_path_fails_the_referencing_step(
    engine: PipelineEngine, fx: FakeSideEffects, document: Any, reason: str
) -> None:
    create(engine, "pf-missing", _property_file_pipeline())
    fx.reader = lambda uri: None if document is None else json.dumps(document).encode()
    arn = start(engine, "pf-missing")
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    check = steps_of(engine, arn)["Check"]
    assert check["StepStatus"] == "Failed"
    assert reason in check["FailureReason"]
    assert final["FailureReason"].startswith("Step Check failed: ")


# -- callbacks -------------------------------------------------------------------------------------

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/callbacks"


def _callback_pipeline() -> str:
    return definition(
        [
            step("Prep"),
            step(
                "Approve",
                "Callback",
                Arguments={"model": {"Get": "Steps.Prep.ProcessingJobName"}, "threshold": 0.5, "flag": True},
                SqsQueueUrl=QUEUE,
                OutputParameters=[
                    {"OutputName": "approved", "OutputType": "Boolean"},
                    {"OutputName": "note"},
                ],
            ),
            step(
                "Gate",
                "Condition",
                Arguments={
                    "Conditions": [
                        {
                            "Type": "Equals",
                            "LeftValue": {"Get": "Steps.Approve.OutputParameters['approved']"},
                            "RightValue": True,
                        }
                    ],
                    "IfSteps": [
                        step("Deploy", Arguments={"Note": {"Get": "Steps.Approve.OutputParameters['note']"}})
                    ],
                    "ElseSteps": [],
                },
            ),
        ]
    )


def _waiting_callback(
    engine: PipelineEngine, fx: FakeSideEffects, name: str
) -> tuple[str, str, dict[str, Any]]:
    create(engine, name, _callback_pipeline())
    arn = start(engine, name)
    entry = wait_step(engine, arn, "Approve", "Executing")
    callback_token = entry["Metadata"]["Callback"]["CallbackToken"]
    message = wait_until(lambda: messages_for(fx, arn))[0]
    return arn, callback_token, message


def test_callback_success_outputs_flow_to_conditions(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    arn, callback_token, message = _waiting_callback(engine, fx, "cb-success")
    assert len(callback_token) == 10 and callback_token.isalnum()
    assert message["token"] == callback_token
    assert message["pipelineExecutionArn"] == arn
    prep_name = engine._executions[arn].steps["Prep"].properties["ProcessingJobName"]  # type: ignore[index]
    assert message["arguments"] == {"model": prep_name, "threshold": "0.5", "flag": "true"}
    entry = steps_of(engine, arn)["Approve"]
    assert entry["Metadata"]["Callback"]["SqsQueueUrl"] == QUEUE
    time.sleep(0.05)
    assert describe(engine, arn)["PipelineExecutionStatus"] == "Executing"  # it waits

    answer_token = token()
    response = call(
        engine,
        "SendPipelineExecutionStepSuccess",
        CallbackToken=callback_token,
        OutputParameters=[{"Name": "approved", "Value": "true"}, {"Name": "note", "Value": "lgtm"}],
        ClientRequestToken=answer_token,
    )
    assert response == {"PipelineExecutionArn": arn}
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    s = steps_of(engine, arn)
    assert s["Approve"]["StepStatus"] == "Succeeded"
    assert s["Approve"]["Metadata"]["Callback"]["OutputParameters"] == [
        {"Name": "approved", "Value": "true"},
        {"Name": "note", "Value": "lgtm"},
    ]
    assert s["Gate"]["Metadata"]["Condition"]["Outcome"] == "True"
    assert engine._executions[arn].steps["Deploy"].arguments == {"Note": "lgtm"}
    assert len(messages_for(fx, arn)) == 1  # exactly one message

    # a repeat of the accepted answer is idempotent; any other answer conflicts
    assert call(
        engine,
        "SendPipelineExecutionStepSuccess",
        CallbackToken=callback_token,
        OutputParameters=[{"Name": "approved", "Value": "true"}],
        ClientRequestToken=answer_token,
    ) == {"PipelineExecutionArn": arn}
    with pytest.raises(ConflictError) as raised:
        call(
            engine,
            "SendPipelineExecutionStepSuccess",
            CallbackToken=callback_token,
            ClientRequestToken=token(),
        )
    assert raised.value.code == "ConflictException"
    with pytest.raises(ConflictError):
        call(
            engine,
            "SendPipelineExecutionStepFailure",
            CallbackToken=callback_token,
            ClientRequestToken=answer_token,
        )
    with pytest.raises(ResourceNotFound):
        call(
            engine, "SendPipelineExecutionStepSuccess", CallbackToken="AAAAAAAAAA", ClientRequestToken=token()
        )


def test_callback_output_of_wrong_type_is_rejected_and_token_stays_open(
    engine: PipelineEngine, fx: FakeSideEffects
) -> None:
    arn, callback_token, _ = _waiting_callback(engine, fx, "cb-types")
    with pytest.raises(EngineValidationError, match="'approved' of step 'Approve' is declared Boolean"):
        call(
            engine,
            "SendPipelineExecutionStepSuccess",
            CallbackToken=callback_token,
            OutputParameters=[{"Name": "approved", "Value": "perhaps"}],
            ClientRequestToken=token(),
        )
    call(
        engine,
        "SendPipelineExecutionStepSuccess",
        CallbackToken=callback_token,
        OutputParameters=[{"Name": "approved", "Value": "false"}],
        ClientRequestToken=token(),
    )
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert "Deploy" not in steps_of(engine, arn)


def test_callback_failure_fails_step_and_execution(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    arn, callback_token, _ = _waiting_callback(engine, fx, "cb-failure")
    call(
        engine,
        "SendPipelineExecutionStepFailure",
        CallbackToken=callback_token,
        FailureReason="rejected by reviewer",
        ClientRequestToken=token(),
    )
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert final["FailureReason"] == "Step Approve failed: rejected by reviewer"
    approve = steps_of(engine, arn)["Approve"]
    assert approve["StepStatus"] == "Failed" and approve["FailureReason"] == "rejected by reviewer"


def test_stop_waits_for_the_callback_answer(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    arn, callback_token, first = _waiting_callback(engine, fx, "cb-stop")
    stop_token = token()
    assert call(engine, "StopPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=stop_token) == {
        "PipelineExecutionArn": arn
    }
    sent = messages_for(fx, arn)
    assert len(sent) == 2
    assert sent[1] == {**first, "status": "Stopping"}
    time.sleep(0.05)
    assert describe(engine, arn)["PipelineExecutionStatus"] == "Stopping"
    assert steps_of(engine, arn)["Approve"]["StepStatus"] == "Stopping"
    # the same stop request again is idempotent
    assert call(engine, "StopPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=stop_token)
    call(
        engine,
        "SendPipelineExecutionStepFailure",
        CallbackToken=callback_token,
        FailureReason="stopped",
        ClientRequestToken=token(),
    )
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Stopped"
    assert set(steps_of(engine, arn)) == {"Prep", "Approve"}  # nothing started after the stop


def test_undeliverable_callback_message_fails_the_step(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    fx.broken_queues.add(QUEUE)
    create(engine, "cb-broken", _callback_pipeline())
    arn = start(engine, "cb-broken")
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert "Could not send the callback message" in steps_of(engine, arn)["Approve"]["FailureReason"]


# -- stop ------------------------------------------------------------------------------------------


def test_stop_stops_running_steps_but_lambda_runs_to_its_end(
    engine: PipelineEngine, fx: FakeSideEffects
) -> None:
    body = definition(
        [
            step("Long"),
            step("Fn", "Lambda", FunctionArn="arn:aws:lambda:us-east-1:123456789012:function:f"),
            step("Later", DependsOn=["Long"]),
        ]
    )
    create(engine, "stoppable", body)
    engine.set_step_behaviour("stoppable", "Long", duration=100)
    engine.set_step_behaviour("stoppable", "Fn", duration=20)
    arn = start(engine, "stoppable")
    wait_step(engine, arn, "Long", "Executing")
    call(engine, "StopPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=token())
    assert describe(engine, arn)["PipelineExecutionStatus"] == "Stopping"
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Stopped"
    s = steps_of(engine, arn)
    assert s["Long"]["StepStatus"] == "Stopped"
    assert s["Fn"]["StepStatus"] == "Succeeded"  # ran to its end
    assert s["Fn"]["EndTime"] - s["Fn"]["StartTime"] >= timedelta(seconds=0.15)
    assert "Later" not in s
    execution_statuses = [
        d["currentPipelineExecutionStatus"] for t, d, _, _ in fx.events if t == EXECUTION_EVENT
    ]
    assert execution_statuses == ["Executing", "Stopping", "Stopped"]

    with pytest.raises(EngineValidationError, match="Only pipelines with 'Executing' status can be stopped"):
        call(engine, "StopPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=token())


# -- retry -----------------------------------------------------------------------------------------


def test_retry_reruns_failed_steps_and_keeps_succeeded_ones(
    engine: PipelineEngine, fx: FakeSideEffects
) -> None:
    create(engine, "retry", SIX)
    engine.set_step_behaviour("retry", "B", fail="flaky", fail_attempts=1)
    arn = start(engine, "retry")
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Failed"
    before = steps_of(engine, arn)
    assert "E" not in before

    running = start(engine, "retry")
    with pytest.raises(ConflictError, match="is Executing; only a Failed execution can be retried"):
        call(engine, "RetryPipelineExecution", PipelineExecutionArn=running, ClientRequestToken=token())
    engine.set_step_behaviour(
        "retry", "B", fail="flaky", fail_attempts=1
    )  # fresh behaviour, attempts count per run

    retry_token = token()
    assert call(
        engine, "RetryPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=retry_token
    ) == {"PipelineExecutionArn": arn}
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Succeeded"
    assert "FailureReason" not in final
    after = steps_of(engine, arn)
    assert after["B"]["AttemptCount"] == 2 and after["B"]["StepStatus"] == "Succeeded"
    assert after["B"]["Metadata"] != before["B"]["Metadata"]  # a new job
    for kept in ("A", "C", "D"):
        assert after[kept]["AttemptCount"] == 1
        assert after[kept]["StartTime"] == before[kept]["StartTime"]  # not re-run
    assert after["E"]["AttemptCount"] == 1 and after["E"]["StepStatus"] == "Succeeded"
    # idempotent per token, and a Succeeded execution cannot be retried
    assert call(engine, "RetryPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=retry_token)
    with pytest.raises(ConflictError, match="only a Failed execution can be retried"):
        call(engine, "RetryPipelineExecution", PipelineExecutionArn=arn, ClientRequestToken=token())
    statuses = [
        d["currentPipelineExecutionStatus"]
        for t, d, _, _ in fx.events
        if t == EXECUTION_EVENT and d["pipelineExecutionArn"] == arn
    ]
    assert statuses == ["Executing", "Failed", "Executing", "Succeeded"]


def test_retry_honours_parallelism(engine: PipelineEngine) -> None:
    engine.set_time_scale(0.02)
    _six_step(engine, "retry-par")
    engine.set_step_behaviour("retry-par", "A", duration=1, fail="boom", fail_attempts=1)
    arn = start(engine, "retry-par")
    wait(engine, arn)
    call(
        engine,
        "RetryPipelineExecution",
        PipelineExecutionArn=arn,
        ClientRequestToken=token(),
        ParallelismConfiguration={"MaxParallelExecutionSteps": 1},
    )
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert max_overlap(list(steps_of(engine, arn).values())) == 1


# -- selective execution ---------------------------------------------------------------------------


def test_selective_execution_reuses_source_results(engine: PipelineEngine) -> None:
    create(engine, "selective", LINEAR)
    source = start(engine, "selective", PipelineParameters=[{"Name": "Flag", "Value": "true"}])
    wait(engine, source)
    source_train = engine._executions[source].steps["Train"].properties
    config = {"SourcePipelineExecutionArn": source, "SelectedSteps": [{"StepName": "Model"}]}
    arn = start(
        engine,
        "selective",
        PipelineParameters=[{"Name": "Flag", "Value": "true"}],
        SelectiveExecutionConfig=config,
    )
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert set(steps_of(engine, arn)) == {"Model"}
    model = engine._executions[arn].steps["Model"].properties
    assert source_train is not None and model is not None
    assert model["PrimaryContainer"]["ModelDataUrl"] == source_train["ModelArtifacts"]["S3ModelArtifacts"]
    assert describe(engine, arn)["SelectiveExecutionConfig"] == config

    params = [{"Name": "Flag", "Value": "true"}]
    with pytest.raises(ResourceNotFound, match="Source pipeline execution"):
        start(
            engine,
            "selective",
            PipelineParameters=params,
            SelectiveExecutionConfig={**config, "SourcePipelineExecutionArn": source[:-12] + "000000000000"},
        )
    with pytest.raises(EngineValidationError, match="SourcePipelineExecutionArn is required"):
        start(
            engine,
            "selective",
            PipelineParameters=params,
            SelectiveExecutionConfig={"SelectedSteps": [{"StepName": "Model"}]},
        )
    with pytest.raises(EngineValidationError, match="selects unknown steps"):
        start(
            engine,
            "selective",
            PipelineParameters=params,
            SelectiveExecutionConfig={**config, "SelectedSteps": [{"StepName": "X"}]},
        )
    # a first step selected alone needs no source
    alone = start(
        engine,
        "selective",
        PipelineParameters=params,
        SelectiveExecutionConfig={"SelectedSteps": [{"StepName": "Prep"}]},
    )
    wait(engine, alone)
    assert set(steps_of(engine, alone)) == {"Prep"}


# -- listing ---------------------------------------------------------------------------------------


def test_list_pipeline_executions_filters_sorts_and_paginates(engine: PipelineEngine) -> None:
    create(engine, "many", definition([step("Only")]))
    arns = []
    for index in range(5):
        arns.append(start(engine, "many", PipelineExecutionDisplayName=f"run-{index}"))
        time.sleep(0.002)
    newest_first = call(engine, "ListPipelineExecutions", PipelineName="many")["PipelineExecutionSummaries"]
    assert [s["PipelineExecutionArn"] for s in newest_first] == arns[::-1]
    assert newest_first[0]["PipelineExecutionDisplayName"] == "run-4"
    assert {"PipelineExecutionArn", "StartTime", "PipelineExecutionStatus"} <= set(newest_first[0])

    collected: list[str] = []
    request: dict[str, Any] = {"PipelineName": "many", "MaxResults": 2, "SortOrder": "Ascending"}
    pages = 0
    while True:
        response = call(engine, "ListPipelineExecutions", **request)
        collected += [s["PipelineExecutionArn"] for s in response["PipelineExecutionSummaries"]]
        pages += 1
        if "NextToken" not in response:
            break
        request["NextToken"] = response["NextToken"]
    assert collected == arns and pages == 3

    by_arn = call(
        engine,
        "ListPipelineExecutions",
        PipelineName="many",
        SortBy="PipelineExecutionArn",
        SortOrder="Ascending",
    )
    assert [s["PipelineExecutionArn"] for s in by_arn["PipelineExecutionSummaries"]] == sorted(arns)

    times = [describe(engine, arn)["CreationTime"] for arn in arns]
    window = call(
        engine, "ListPipelineExecutions", PipelineName="many", CreatedAfter=times[0], CreatedBefore=times[4]
    )
    assert [s["PipelineExecutionArn"] for s in window["PipelineExecutionSummaries"]] == arns[3:0:-1]
    with pytest.raises(EngineValidationError, match="NextToken"):
        call(engine, "ListPipelineExecutions", PipelineName="many", NextToken="garbage")
    with pytest.raises(EngineValidationError, match="MaxResults"):
        call(engine, "ListPipelineExecutions", PipelineName="many", MaxResults=101)


def test_list_steps_paginates(engine: PipelineEngine) -> None:
    create(engine, "steps-pages", SIX)
    arn = start(engine, "steps-pages")
    wait(engine, arn)
    first = call(engine, "ListPipelineExecutionSteps", PipelineExecutionArn=arn, MaxResults=4)
    second = call(
        engine,
        "ListPipelineExecutionSteps",
        PipelineExecutionArn=arn,
        MaxResults=4,
        NextToken=first["NextToken"],
    )
    names = [s["StepName"] for s in first["PipelineExecutionSteps"] + second["PipelineExecutionSteps"]]
    assert len(names) == 6 and set(names) == set("ABCDEF") and names[-1] == "A"
    assert "NextToken" not in second


def test_definition_snapshot_per_execution(engine: PipelineEngine) -> None:
    create(engine, "snapshot", LINEAR)
    arn = start(engine, "snapshot", PipelineParameters=[{"Name": "Flag", "Value": "true"}])
    call(engine, "UpdatePipeline", PipelineName="snapshot", PipelineDefinition=definition([step("New")]))
    response = call(engine, "DescribePipelineDefinitionForExecution", PipelineExecutionArn=arn)
    assert response["PipelineDefinition"] == LINEAR
    assert response["CreationTime"] == describe(engine, arn)["CreationTime"]
    assert describe(engine, arn)["PipelineVersionId"] == 1


# -- events ----------------------------------------------------------------------------------------


def test_events_have_the_documented_shapes(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    pipeline_arn = create(engine, "events", LINEAR)
    arn = start(
        engine,
        "events",
        PipelineExecutionDisplayName="evt",
        PipelineParameters=[{"Name": "Flag", "Value": "true"}],
    )
    wait(engine, arn)
    execution_events = [(d, r, reg) for t, d, r, reg in fx.events if t == EXECUTION_EVENT]
    first, _, region = execution_events[0]
    assert region == REGION
    assert first == {
        "pipelineExecutionDisplayName": "evt",
        "currentPipelineExecutionStatus": "Executing",
        "executionStartTime": first["executionStartTime"],
        "pipelineArn": pipeline_arn,
        "pipelineExecutionArn": arn,
    }
    last, resources, _ = execution_events[-1]
    assert last["previousPipelineExecutionStatus"] == "Executing"
    assert last["currentPipelineExecutionStatus"] == "Succeeded"
    assert last["executionEndTime"].endswith("Z")
    assert resources == [pipeline_arn, arn]
    step_event = next(
        d for t, d, _, _ in fx.events if t == STEP_EVENT and d["currentStepStatus"] == "Succeeded"
    )
    assert step_event["stepName"] == "Prep" and step_event["stepType"] == "Processing"
    assert step_event["previousStepStatus"] == "Executing"
    assert set(step_event["metadata"]) == {"processingJob"}
    assert step_event["metadata"]["processingJob"]["arn"].startswith("arn:aws:sagemaker:")
    assert {"pipelineArn", "pipelineExecutionArn"} <= set(step_event)


# -- controls and scale ----------------------------------------------------------------------------


def test_concurrency_cap_and_stats(engine: PipelineEngine) -> None:
    create(engine, "capped", definition([step("Only")]))
    engine.set_step_behaviour("capped", "Only", duration=1000)  # 10 s: still running at the end
    engine.set_concurrency_cap("capped", 2)
    first = start(engine, "capped")
    start(engine, "capped")
    with pytest.raises(ResourceLimitExceeded) as raised:
        start(engine, "capped")
    assert raised.value.code == "ResourceLimitExceeded"
    assert isinstance(raised.value, EngineError)
    stats = engine.stats()
    assert stats["active"]["capped"] == 2 and stats["peak_concurrency"]["capped"] == 2
    assert stats["executions"]["capped"] == 2
    call(engine, "StopPipelineExecution", PipelineExecutionArn=first, ClientRequestToken=token())
    wait(engine, first)
    start(engine, "capped")  # a slot is free again
    engine.set_concurrency_cap("capped", None)
    start(engine, "capped")
    assert engine.stats()["peak_concurrency"]["capped"] == 3


def test_reset_forgets_everything_and_shutdown_is_idempotent(engine: PipelineEngine) -> None:
    create(engine, "gone", LINEAR)
    arn = start(engine, "gone", PipelineParameters=[{"Name": "Flag", "Value": "true"}])
    engine.reset()
    with pytest.raises(ResourceNotFound):
        describe(engine, arn)
    assert engine.stats() == {"peak_concurrency": {}, "executions": {}, "active": {}}
    engine.shutdown()
    engine.shutdown()
    create(engine, "after", definition([step("Only")]))
    assert wait(engine, start(engine, "after"))["PipelineExecutionStatus"] == "Succeeded"  # thread restarts


def test_concurrent_api_calls_are_thread_safe(engine: PipelineEngine) -> None:
    create(engine, "threads", definition([step("A"), step("B", DependsOn=["A"])]))
    arns: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                arn = start(engine, "threads")
                arns.append(arn)
                describe(engine, arn)
                call(engine, "ListPipelineExecutions", PipelineName="threads", MaxResults=5)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(arns)) == 80
    for arn in arns:
        assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"


@pytest.mark.parametrize("count", [200, 1000])
def test_many_concurrent_executions_complete_quickly(engine: PipelineEngine, count: int) -> None:
    engine.set_time_scale(0.1)  # 100 ms per step, 300 ms per execution
    create(engine, "scale", definition([step("A"), step("B", DependsOn=["A"]), step("C", DependsOn=["B"])]))
    began = time.monotonic()
    arns = [start(engine, "scale") for _ in range(count)]
    assert engine.stats()["peak_concurrency"]["scale"] >= 100  # they really run at the same time
    deadline = time.monotonic() + 30

    def all_done() -> bool:
        summaries: list[dict[str, Any]] = []
        request: dict[str, Any] = {"PipelineName": "scale", "MaxResults": 100}
        while True:
            response = call(engine, "ListPipelineExecutions", **request)
            summaries += response["PipelineExecutionSummaries"]
            if "NextToken" not in response:
                break
            request["NextToken"] = response["NextToken"]
        return len(summaries) == count and all(s["PipelineExecutionStatus"] == "Succeeded" for s in summaries)

    while not all_done():
        assert time.monotonic() < deadline, "executions did not finish"
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    assert elapsed < (5 if count <= 200 else 15), elapsed
    assert len(set(arns)) == count
    assert engine.stats()["active"]["scale"] == 0


# -- the SDK-shaped definition ---------------------------------------------------------------------


def _sdk_pipeline(engine: PipelineEngine, name: str) -> None:
    create(engine, name, FIXTURE.read_text())


def test_sdk_definition_happy_path(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    _sdk_pipeline(engine, "abalone")
    fx.reader = lambda uri: (
        json.dumps({"regression_metrics": {"mse": {"value": 4.2}}}).encode()
        if uri.endswith("/evaluation/evaluation.json")
        else None
    )
    arn = start(
        engine,
        "abalone",
        PipelineParameters=[{"Name": "MaxDepth", "Value": "8"}, {"Name": "UseSpot", "Value": "true"}],
    )
    entry = wait_step(engine, arn, "AbaloneApproval", "Executing")
    assert entry["StepDisplayName"] == "Manual approval"
    message = wait_until(lambda: messages_for(fx, arn))[0]
    package_arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/abalonemodelpackagegroup/1"
    assert message["arguments"] == {
        "model_package_arn": package_arn,
        "mse": "4.2",
        "execution_id": arn.rsplit("/", 1)[1],
    }
    call(
        engine,
        "SendPipelineExecutionStepSuccess",
        CallbackToken=entry["Metadata"]["Callback"]["CallbackToken"],
        OutputParameters=[{"Name": "approved", "Value": "true"}, {"Name": "reviewer", "Value": "ana"}],
        ClientRequestToken=token(),
    )
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Succeeded"
    execution_id = arn.rsplit("/", 1)[1]
    assert final["PipelineExperimentConfig"] == {"ExperimentName": "abalone", "TrialName": execution_id}
    s = steps_of(engine, arn)
    assert set(s) == {
        "AbaloneProcess",
        "AbaloneTrain",
        "AbaloneEval",
        "AbaloneMSECond",
        "AbaloneRegisterModel-RegisterModel",
        "AbaloneApproval",
    }
    assert s["AbaloneMSECond"]["Metadata"] == {"Condition": {"Outcome": "True"}}
    assert s["AbaloneRegisterModel-RegisterModel"]["Metadata"] == {"RegisterModel": {"Arn": package_arn}}
    runs = engine._executions[arn].steps
    train = runs["AbaloneTrain"].properties
    assert train is not None
    assert train["HyperParameters"] == {
        "objective": "reg:linear",
        "num_round": "50",
        "max_depth": "8",
        "use_spot": "true",
    }
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://sagemaker-us-east-1-123456789012/abalone/{execution_id}/train"
    )
    request, _ = fx.packages[0]
    assert request["ModelPackageGroupName"] == "AbaloneModelPackageGroup"
    assert request["ModelApprovalStatus"] == "PendingManualApproval"
    assert (
        request["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        == train["ModelArtifacts"]["S3ModelArtifacts"]
    )


def test_sdk_definition_fail_branch(engine: PipelineEngine, fx: FakeSideEffects) -> None:
    _sdk_pipeline(engine, "abalone-bad")
    engine.set_step_behaviour(
        "abalone-bad",
        "AbaloneEval",
        property_files={"EvaluationReport": {"regression_metrics": {"mse": {"value": 9.1}}}},
    )
    arn = start(engine, "abalone-bad")
    final = wait(engine, arn)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert final["FailureReason"] == "Execution failed due to MSE > 6.0"
    s = steps_of(engine, arn)
    assert s["AbaloneMSEFail"]["Metadata"] == {"Fail": {"ErrorMessage": "Execution failed due to MSE > 6.0"}}
    assert "AbaloneRegisterModel-RegisterModel" not in s and "AbaloneApproval" not in s
    assert fx.packages == [] and messages_for(fx, arn) == []


def test_naive_timestamps_are_utc(engine: PipelineEngine) -> None:
    create(engine, "tz", definition([step("Only")]))
    start(engine, "tz")
    future = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    assert (
        call(engine, "ListPipelineExecutions", PipelineName="tz", CreatedAfter=future)[
            "PipelineExecutionSummaries"
        ]
        == []
    )


def test_behaviour_properties_override_generated_ones(engine: PipelineEngine) -> None:
    body = definition(
        [
            step("Train", "Training", Arguments={"OutputDataConfig": {"S3OutputPath": "s3://m"}}),
            step("Score", "Transform", Arguments={"TransformOutput": {"S3OutputPath": "s3://scores/"}}),
            step(
                "Good",
                "Condition",
                Arguments={
                    "Conditions": [
                        {
                            "Type": "GreaterThanOrEqualTo",
                            "LeftValue": {"Get": "Steps.Train.FinalMetricDataList['val:acc'].Value"},
                            "RightValue": 0.9,
                        }
                    ],
                    "IfSteps": [
                        step(
                            "Publish",
                            Arguments={
                                "Model": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
                                "Scores": {"Get": "Steps.Score.TransformOutput.S3OutputPath"},
                            },
                        )
                    ],
                },
            ),
        ]
    )
    create(engine, "override", body)
    engine.set_step_behaviour(
        "override",
        "Train",
        properties={
            "FinalMetricDataList": [{"MetricName": "val:acc", "Value": 0.93}],
            "ModelArtifacts": {"S3ModelArtifacts": "s3://elsewhere/model.tar.gz"},
        },
    )
    arn = start(engine, "override")
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    s = steps_of(engine, arn)
    assert s["Good"]["Metadata"]["Condition"]["Outcome"] == "True"
    assert "transform-job/" in s["Score"]["Metadata"]["TransformJob"]["Arn"]
    assert engine._executions[arn].steps["Publish"].arguments == {
        "Model": "s3://elsewhere/model.tar.gz",
        "Scores": "s3://scores/",
    }
    train = engine._executions[arn].steps["Train"].properties
    assert train is not None and train["TrainingJobArn"]  # generated fields kept beside the override


@pytest.mark.parametrize(
    ("type_", "extra", "metadata_key", "field"),
    [
        ("Tuning", {}, "TuningJob", "Arn"),
        ("AutoML", {}, "AutoMLJob", "Arn"),
        ("EMR", {"Arguments": {"ClusterId": "j-123"}}, "EMR", "ClusterId"),
        ("EMRServerless", {}, "EMRServerless", "JobRunId"),
        ("QualityCheck", {"CheckType": "DATA_QUALITY"}, "QualityCheck", "CheckType"),
        ("ClarifyCheck", {"CheckType": "DATA_BIAS"}, "ClarifyCheck", "CheckJobArn"),
    ],
)
def test_other_step_types_succeed_with_their_metadata(
    engine: PipelineEngine, type_: str, extra: dict[str, Any], metadata_key: str, field: str
) -> None:
    create(engine, f"type-{type_.lower()}", definition([step("S", type_, **extra)]))
    arn = start(engine, f"type-{type_.lower()}")
    assert wait(engine, arn)["PipelineExecutionStatus"] == "Succeeded"
    metadata = steps_of(engine, arn)["S"]["Metadata"]
    assert list(metadata) == [metadata_key] and metadata[metadata_key][field]
    if type_ == "EMR":
        assert metadata["EMR"]["ClusterId"] == "j-123"
    if type_ == "Tuning":
        properties = engine._executions[arn].steps["S"].properties
        assert properties is not None and properties["BestTrainingJob"]["TrainingJobName"]
