"""The one terminal-status policy."""

from __future__ import annotations

import pytest
from sagemaker_pipelines_provider.utils.status import Outcome, execution_outcome, is_terminal


@pytest.mark.parametrize(
    ("status", "allow_stopped", "expected"),
    [
        ("Executing", False, Outcome.RUNNING),
        ("Stopping", False, Outcome.RUNNING),
        ("Stopping", True, Outcome.RUNNING),
        ("Succeeded", False, Outcome.SUCCESS),
        ("Succeeded", True, Outcome.SUCCESS),
        ("Failed", False, Outcome.FAILURE),
        ("Failed", True, Outcome.FAILURE),
        ("Stopped", False, Outcome.FAILURE),
        ("Stopped", True, Outcome.SUCCESS),
    ],
)
def test_policy(status: str, allow_stopped: bool, expected: Outcome) -> None:
    assert execution_outcome(status, allow_stopped=allow_stopped) is expected


def test_unknown_status_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"Paused.*Executing, Failed, Stopped, Stopping, Succeeded"):
        execution_outcome("Paused")


def test_terminal() -> None:
    assert {s for s in ("Executing", "Stopping", "Stopped", "Failed", "Succeeded") if is_terminal(s)} == {
        "Stopped",
        "Failed",
        "Succeeded",
    }
