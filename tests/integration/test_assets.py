"""Model assets: the event extra of a retraining, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

EXECUTION = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/evaluation/execution/abc"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/demo-models/3"


def result(status: str = "Succeeded", outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "pipeline_execution_arn": EXECUTION,
        "pipeline_name": "evaluation",
        "display_name": "evaluation-20260101",
        "status": status,
        "outputs": outputs
        if outputs is not None
        else {"RegisterEvaluatedModel": {"ModelPackageArn": PACKAGE}},
    }


def test_asset_names_the_model_package_group() -> None:
    from sagemaker_pipelines_provider.assets import model_package_group_asset

    asset = model_package_group_asset("demo-models")
    assert asset.uri == "sagemaker://model-package-group/demo-models"
    assert asset.name == "sagemaker-model-package-group-demo-models"


def test_event_extra_carries_execution_and_model_package() -> None:
    from sagemaker_pipelines_provider.assets import model_event_extra

    extra = model_event_extra(result())
    assert extra["pipeline_execution_arn"].endswith("/execution/abc")
    assert extra["model_package_arn"] == PACKAGE
    assert extra["model_package_group"] == "demo-models"
    assert model_event_extra(result(), step="RegisterEvaluatedModel") == extra


@pytest.mark.parametrize(
    ("kwargs", "step", "message"),
    [
        ({"status": "Failed"}, None, "not Succeeded"),
        ({"outputs": {"Evaluate": {"ProcessingJobArn": "x"}}}, None, "registered no model package"),
        ({}, "RegisterModel", "in step 'RegisterModel'"),
    ],
)
def test_unpublishable_results_are_refused(kwargs: dict[str, Any], step: str | None, message: str) -> None:
    from sagemaker_pipelines_provider.assets import model_event_extra

    with pytest.raises(ValueError, match=message):
        model_event_extra(result(**kwargs), step=step)
