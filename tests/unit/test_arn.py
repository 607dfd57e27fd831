"""The one ARN parser: every part of an execution ARN, and a clear error for anything else."""

from __future__ import annotations

import pytest
from sagemaker_pipelines_provider.links.pipeline import execution_console_url
from sagemaker_pipelines_provider.references import execution_id_from_arn
from sagemaker_pipelines_provider.utils.arn import ExecutionArn, as_pipeline_name

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/my-pipe/execution/abc123"


def test_an_execution_arn_splits_into_its_parts_and_back() -> None:
    arn = ExecutionArn.parse(ARN)
    assert arn == ExecutionArn("aws", "eu-west-1", "123456789012", "my-pipe", "abc123")
    assert str(arn) == ARN
    assert execution_id_from_arn(ARN) == "abc123"
    assert execution_console_url(ARN) == (
        "https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1"
        "#/pipelines/my-pipe/executions/abc123"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "my-pipe",
        "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/my-pipe",
        "arn:aws:sagemaker:eu-west-1:12345:pipeline/my-pipe/execution/abc",
        "arn:aws:s3:eu-west-1:123456789012:pipeline/my-pipe/execution/abc",
        f"{ARN}/extra",
    ],
)
def test_anything_else_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match=r"is not a SageMaker pipeline execution ARN \(expected arn:<part"):
        ExecutionArn.parse(bad)
    assert ExecutionArn.parse_or_none(bad) is None
    assert execution_console_url(bad) == ""


def test_a_pipeline_is_named_by_its_name_its_arn_or_an_execution_arn() -> None:
    assert as_pipeline_name("my-pipe") == "my-pipe"
    assert as_pipeline_name("arn:aws-cn:sagemaker:cn-north-1:123456789012:pipeline/my-pipe") == "my-pipe"
    assert as_pipeline_name(ARN) == "my-pipe"
    with pytest.raises(ValueError, match="not a SageMaker pipeline ARN"):
        as_pipeline_name("arn:aws:sagemaker:eu-west-1:123456789012:model-package/g/1")
