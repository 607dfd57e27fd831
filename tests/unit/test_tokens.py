"""The one idempotency-token derivation: stable, bounded, sensitive to every part."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sagemaker_pipelines_provider.utils.tokens import TOKEN_LENGTH, idempotency_token, stop_token

IDENTITY = ("dag", "manual__2024-01-01T00:00:00+00:00", "run", -1)


def test_same_parts_same_token_and_known_value() -> None:
    token = idempotency_token(IDENTITY, "pipe", "start", 0)
    assert token == idempotency_token(IDENTITY, "pipe", "start", 0)
    # Pinned: a change here would make in-flight retries start a second execution after an upgrade.
    assert token == idempotency_token(
        "dag", "manual__2024-01-01T00:00:00+00:00", "run", -1, "pipe", "start", 0
    )
    assert token == "88800abb1e1df1c15fa438fc9d1fb37d4811adfa8241c7cf9a478b8c696d2fbe"


def test_token_is_stable_across_processes() -> None:
    code = (
        "from sagemaker_pipelines_provider.utils.tokens import idempotency_token;"
        f"print(idempotency_token({IDENTITY!r}, 'pipe', 'start', 0))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == idempotency_token(IDENTITY, "pipe", "start", 0)


def test_length_and_alphabet_fit_sagemaker_bounds() -> None:
    token = idempotency_token(IDENTITY, "x" * 5000)
    assert 32 <= len(token) <= 128
    assert len(token) == TOKEN_LENGTH
    assert set(token) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((IDENTITY, "start", 0), (IDENTITY, "start", 1)),
        ((IDENTITY, "start", 0), (IDENTITY, "retry", 0)),
        (("d", "r", "t", 0), ("d", "r", "t", 1)),  # map index
        (("d", "r", "t", -1, 1), ("d", "r", "t", -1, "1")),  # types are kept apart
        (("d", None), ("d", "None")),
        (("ab", "c"), ("a", "bc")),  # the split between parts counts
        (("d", True), ("d", 1)),
    ],
)
def test_any_difference_changes_the_token(a: tuple, b: tuple) -> None:
    assert idempotency_token(*a) != idempotency_token(*b)


def test_non_scalar_parts_are_refused() -> None:
    with pytest.raises(TypeError, match="JSON scalars"):
        idempotency_token({"a": 1})
    with pytest.raises(TypeError, match="JSON scalars"):
        idempotency_token(("a", object()))  # type: ignore[arg-type]


def test_stop_token_is_one_request_per_attempt() -> None:
    """Every stop path of one attempt sends the same token; a resume (retries + 1) or a fresh execution
    (counter + 1) makes the next stop a new request."""
    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc"
    first = stop_token(IDENTITY, arn, counter=0, retries=0)
    assert first == stop_token(list(IDENTITY), arn, counter=0, retries=0)
    assert first == idempotency_token(IDENTITY, "stop", arn, 0, 0)
    assert len(first) == TOKEN_LENGTH
    after_resume = stop_token(IDENTITY, arn, counter=0, retries=1)
    assert len({first, after_resume, stop_token(IDENTITY, arn, counter=1, retries=0)}) == 3
    assert stop_token((), arn, counter=0, retries=1) != after_resume  # the identity is part of it
