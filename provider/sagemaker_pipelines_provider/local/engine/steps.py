"""What a simulated step produces: Describe*-shaped properties and ListPipelineExecutionSteps metadata,
as pure functions of the step type, its resolved Arguments and the job name. The properties per step
type: docs/local-endpoint.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sagemaker_pipelines_provider.definition import coerce_value, format_value

from .state import StepRun

__all__ = [
    "CREATE_MODEL_PACKAGE_FIELDS",
    "job_name",
    "job_outputs",
    "merge_properties",
    "model_package_request",
    "typed_outputs",
]

CREATE_MODEL_PACKAGE_FIELDS = frozenset(
    {
        "ModelPackageName",
        "ModelPackageGroupName",
        "ModelPackageDescription",
        "ModelPackageRegistrationType",
        "InferenceSpecification",
        "ValidationSpecification",
        "SourceAlgorithmSpecification",
        "CertifyForMarketplace",
        "Tags",
        "ModelApprovalStatus",
        "MetadataProperties",
        "ModelMetrics",
        "Domain",
        "Task",
        "SamplePayloadUrl",
        "CustomerMetadataProperties",
        "DriftCheckBaselines",
        "AdditionalInferenceSpecifications",
        "SkipModelValidation",
        "SourceUri",
        "SecurityConfig",
        "ModelCard",
        "ModelLifeCycle",
    }
)
"""Top-level members of the CreateModelPackage request (botocore model) the RegisterModel step forwards."""

_NOT_NAME_CHARS = re.compile(r"[^a-zA-Z0-9]+")


def job_name(execution_id: str, step_name: str, suffix: str) -> str:
    """``pipelines-<execution id>-<step name>-<suffix>``, sanitised to a valid job name (<= 63 chars).

    SageMaker names pipeline jobs the same way; a re-run (retry) gets a new suffix, hence a new job.
    """
    step_part = _NOT_NAME_CHARS.sub("-", step_name).strip("-")[:30] or "step"
    return f"pipelines-{execution_id}-{step_part}-{suffix}"[:63].rstrip("-")


def _arn(region: str, account: str, resource: str, name: str) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:{resource}/{name.lower()}"


def job_outputs(
    step_type: str,
    step_name: str,
    arguments: Mapping[str, Any],
    raw_step: Mapping[str, Any],
    name: str,
    region: str,
    account: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(properties, metadata) of a job-like step at start. ``arguments`` are resolved, plain JSON.

    Condition, Fail, Callback, Lambda and RegisterModel get their metadata from the engine; for them
    this returns the echoed arguments and empty metadata.
    """
    properties: dict[str, Any] = dict(arguments)
    metadata: dict[str, Any] = {}
    if step_type == "Processing":
        arn = _arn(region, account, "processing-job", name)
        properties.update(ProcessingJobName=name, ProcessingJobArn=arn, ProcessingJobStatus="Completed")
        metadata = {"ProcessingJob": {"Arn": arn}}
    elif step_type == "Training":
        arn = _arn(region, account, "training-job", name)
        output_path = str((arguments.get("OutputDataConfig") or {}).get("S3OutputPath", "")).rstrip("/")
        properties.update(
            TrainingJobName=name,
            TrainingJobArn=arn,
            TrainingJobStatus="Completed",
            SecondaryStatus="Completed",
            ModelArtifacts={"S3ModelArtifacts": f"{output_path}/{name}/output/model.tar.gz"},
            FinalMetricDataList=[],
        )
        metadata = {"TrainingJob": {"Arn": arn}}
    elif step_type == "Transform":
        arn = _arn(region, account, "transform-job", name)
        properties.update(TransformJobName=name, TransformJobArn=arn, TransformJobStatus="Completed")
        properties.setdefault("TransformOutput", {"S3OutputPath": ""})
        metadata = {"TransformJob": {"Arn": arn}}
    elif step_type == "Tuning":
        tuning_name = name[:32].rstrip("-")
        arn = _arn(region, account, "hyper-parameter-tuning-job", tuning_name)
        best_name = f"{tuning_name}-001-00000000"
        best = {
            "TrainingJobName": best_name,
            "TrainingJobArn": _arn(region, account, "training-job", best_name),
            "TrainingJobStatus": "Completed",
        }
        properties.update(
            HyperParameterTuningJobName=tuning_name,
            HyperParameterTuningJobArn=arn,
            HyperParameterTuningJobStatus="Completed",
            BestTrainingJob=best,
            TrainingJobSummaries=[best],
        )
        metadata = {"TuningJob": {"Arn": arn}}
    elif step_type == "AutoML":
        automl_name = name[:32].rstrip("-")
        arn = _arn(region, account, "automl-job", automl_name)
        properties.update(
            AutoMLJobName=automl_name,
            AutoMLJobArn=arn,
            AutoMLJobStatus="Completed",
            BestCandidate={"CandidateName": f"{automl_name}-best", "CandidateStatus": "Completed"},
        )
        metadata = {"AutoMLJob": {"Arn": arn}}
    elif step_type == "Model":
        arn = _arn(region, account, "model", name)
        properties.update(ModelName=name, ModelArn=arn)
        metadata = {"Model": {"Arn": arn}}
    elif step_type == "EMR":
        cluster = str(raw_step.get("ClusterId") or arguments.get("ClusterId") or "j-LOCAL0000000")
        step_id = "s-" + name[-12:].upper()
        properties.update(ClusterId=cluster, StepId=step_id)
        metadata = {"EMR": {"ClusterId": cluster, "StepId": step_id, "StepName": step_name}}
    elif step_type == "EMRServerless":
        application = str(arguments.get("ApplicationId") or raw_step.get("ApplicationId") or "local-app")
        run_id = name[-16:]
        properties.update(ApplicationId=application, JobRunId=run_id)
        metadata = {"EMRServerless": {"ApplicationId": application, "JobRunId": run_id, "JobRunName": name}}
    elif step_type in ("QualityCheck", "ClarifyCheck"):
        check_job = _arn(region, account, "processing-job", name)
        fields: dict[str, Any] = {
            "CheckType": str(raw_step.get("CheckType") or arguments.get("CheckType") or "DATA_QUALITY"),
            "CheckJobArn": check_job,
            "SkipCheck": bool(raw_step.get("SkipCheck", False)),
            "RegisterNewBaseline": bool(raw_step.get("RegisterNewBaseline", False)),
        }
        if raw_step.get("ModelPackageGroupName"):
            fields["ModelPackageGroupName"] = str(raw_step["ModelPackageGroupName"])
        properties.update(fields)
        metadata = {step_type: fields}
    return properties, metadata


def model_package_request(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The CreateModelPackage request a RegisterModel step makes from its resolved Arguments.

    Keeps the CreateModelPackage members (:data:`CREATE_MODEL_PACKAGE_FIELDS`), drops None values.
    Raises ``ValueError`` when neither ``ModelPackageGroupName`` nor ``ModelPackageName`` is given.
    """
    request = {k: v for k, v in arguments.items() if k in CREATE_MODEL_PACKAGE_FIELDS and v is not None}
    if not request.get("ModelPackageGroupName") and not request.get("ModelPackageName"):
        raise ValueError(
            "RegisterModel needs a ModelPackageGroupName (or a ModelPackageName) in its Arguments"
        )
    return request


def merge_properties(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_properties(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def typed_outputs(run: StepRun, values: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Typed outputs (declared OutputType, default String) and their API list form; ValueError when a
    value does not fit its declared type."""
    if isinstance(values, list):
        values = {str(item.get("Name")): item.get("Value") for item in values}
    typed: dict[str, Any] = {}
    listed: list[dict[str, str]] = []
    for name, value in values.items():
        declared = run.spec.output_parameter(name)
        output_type = declared.type if declared else "String"
        try:
            typed[name] = coerce_value(output_type, value)
        except ValueError as err:
            raise ValueError(
                f"output {name!r} of step {run.name!r} is declared {output_type}: {err}"
            ) from None
        listed.append({"Name": name, "Value": format_value(value)})
    return typed, listed
