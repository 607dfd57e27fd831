"""The control client's reading of the engine's stats (no endpoint needed)."""

from __future__ import annotations

import pytest
from sagemaker_pipelines_provider.local.controls import _peak_from_engine_stats

STATS = {"peak_concurrency": {"Retraining": 3, "other": 7}}


@pytest.mark.parametrize(
    "pipeline",
    ["Retraining", "retraining", "arn:aws:sagemaker:us-east-1:123456789012:pipeline/Retraining"],
)
def test_a_pipeline_peak_is_found_by_name_any_case_or_arn(pipeline: str) -> None:
    assert _peak_from_engine_stats(STATS, pipeline) == 3


def test_a_pipeline_that_never_ran_peaks_at_zero() -> None:
    assert _peak_from_engine_stats(STATS, "never-ran") == 0
    assert _peak_from_engine_stats({}, "never-ran") == 0


def test_a_malformed_arn_is_refused() -> None:
    with pytest.raises(ValueError, match="not a SageMaker pipeline ARN"):
        _peak_from_engine_stats(STATS, "arn:aws:s3:::bucket")
