"""The one retry/backoff policy: what is retried, how long it waits, when it gives up (sync and async)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from sagemaker_pipelines_provider.utils.backoff import (
    BackoffPolicy,
    Retryable,
    RetryState,
    acall_with_backoff,
    call_with_backoff,
    capacity_delay,
    classify,
    is_capacity_error,
)


def client_error(code: str, status: int = 400, action: str = "DescribePipelineExecution") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"{code}!"}, "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
        action,
    )


TINY = BackoffPolicy(base_delay=0.001, max_delay=0.002, max_attempts=5, budget_seconds=10)


@pytest.mark.parametrize(
    ("error", "action", "expected"),
    [
        (client_error("ThrottlingException"), "ListPipelineExecutions", Retryable.TRANSIENT),
        (client_error("TooManyRequestsException"), "ListPipelineExecutions", Retryable.TRANSIENT),
        (client_error("InternalFailure", 500), "StartPipelineExecution", Retryable.TRANSIENT),
        (client_error("ServiceUnavailable", 503), "StartPipelineExecution", Retryable.TRANSIENT),
        (client_error("Whatever", 502), "StartPipelineExecution", Retryable.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://x"), "StartPipelineExecution", Retryable.TRANSIENT),
        (client_error("ConflictException"), "StopPipelineExecution", Retryable.TRANSIENT),
        (client_error("ConflictException"), "StartPipelineExecution", None),
        (client_error("ConflictException"), "SendPipelineExecutionStepSuccess", None),
        (client_error("ResourceLimitExceeded"), "StartPipelineExecution", Retryable.CAPACITY),
        (client_error("ValidationException"), "StartPipelineExecution", None),
        (client_error("ResourceNotFound"), "DescribePipelineExecution", None),
        (ValueError("not AWS"), "StartPipelineExecution", None),
    ],
)
def test_classify(error: BaseException, action: str, expected: Retryable | None) -> None:
    assert classify(error, action=action) is expected


def test_is_capacity_error() -> None:
    assert is_capacity_error(client_error("ResourceLimitExceeded"))
    assert not is_capacity_error(client_error("ThrottlingException"))


class Flaky:
    """Fails with the given errors, then returns ``"ok"``; counts calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_throttling_and_5xx_are_retried_until_success() -> None:
    sleeps: list[float] = []
    call = Flaky(client_error("ThrottlingException"), client_error("InternalFailure", 500))
    assert call_with_backoff(call, action="X", policy=TINY, sleep=sleeps.append) == "ok"
    assert call.calls == 3
    assert len(sleeps) == 2


def test_gives_up_after_max_attempts_with_a_note() -> None:
    call = Flaky(*[client_error("ThrottlingException") for _ in range(10)])
    with pytest.raises(ClientError) as info:
        call_with_backoff(call, action="ListPipelineExecutions", policy=TINY, sleep=lambda _: None)
    assert call.calls == TINY.max_attempts
    assert "gave up after 5 attempts" in "".join(info.value.__notes__)


def test_gives_up_when_the_time_budget_is_spent() -> None:
    now = [0.0]
    state = RetryState(
        "X",
        BackoffPolicy(base_delay=1, max_delay=1, budget_seconds=3),
        wait_for_capacity=False,
        clock=lambda: now[0],
    )
    error = client_error("ThrottlingException")
    delays = []
    while (delay := state.next_delay(error)) is not None:
        delays.append(delay)
        now[0] += delay
    assert 1 <= sum(delays) <= 3
    assert "budget" in "".join(error.__notes__)


def test_not_retryable_errors_raise_at_once() -> None:
    call = Flaky(client_error("ValidationException"))
    with pytest.raises(ClientError):
        call_with_backoff(call, action="X", policy=TINY, sleep=lambda _: None)
    assert call.calls == 1


def test_capacity_is_retried_only_when_asked() -> None:
    call = Flaky(client_error("ResourceLimitExceeded"))
    with pytest.raises(ClientError):
        call_with_backoff(call, action="StartPipelineExecution", policy=TINY, sleep=lambda _: None)
    assert call.calls == 1

    sleeps: list[float] = []
    call = Flaky(
        *[client_error("ResourceLimitExceeded") for _ in range(20)]
    )  # beyond max_attempts: own budget
    policy = BackoffPolicy(capacity_base_delay=0.5, capacity_max_delay=4)
    result = call_with_backoff(
        call, action="StartPipelineExecution", policy=policy, wait_for_capacity=True, sleep=sleeps.append
    )
    assert result == "ok"
    assert len(sleeps) == 20
    assert all(0.25 <= s <= 4 for s in sleeps)


def test_capacity_budget_bounds_the_wait() -> None:
    now = [0.0]
    policy = BackoffPolicy(capacity_base_delay=1, capacity_max_delay=1, capacity_budget_seconds=2.5)
    state = RetryState("StartPipelineExecution", policy, wait_for_capacity=True, clock=lambda: now[0])
    error = client_error("ResourceLimitExceeded")
    count = 0
    while (delay := state.next_delay(error)) is not None:
        count += 1
        now[0] += delay
    assert 2 <= count <= 5
    assert "capacity budget" in "".join(error.__notes__)


def test_equal_jitter_bounds() -> None:
    policy = BackoffPolicy(base_delay=1, max_delay=8)
    rng = random.Random(7)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        for _ in range(50):
            delay = policy.delay(attempt, Retryable.TRANSIENT, rng)
            assert ceiling / 2 <= delay <= ceiling
    assert 1.0 <= capacity_delay(0) <= 2.0  # default capacity base: 2 s


def test_async_twin_retries_the_same_way() -> None:
    attempts: list[int] = []

    async def call() -> Any:
        attempts.append(1)
        if len(attempts) < 3:
            raise client_error("ThrottlingException")
        return "ok"

    assert asyncio.run(acall_with_backoff(call, action="X", policy=TINY)) == "ok"
    assert len(attempts) == 3

    async def conflict() -> Any:
        raise client_error("ConflictException")

    with pytest.raises(ClientError):
        asyncio.run(acall_with_backoff(conflict, action="StopPipelineExecution", policy=TINY))
