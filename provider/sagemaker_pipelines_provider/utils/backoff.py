"""The one retry/backoff policy for AWS calls made by this provider (synchronous and asynchronous).

What is retried, and for how long:

- **transient** errors — throttling (``ThrottlingException`` and its aliases), any 5xx answer, dropped or
  timed-out connections, and ``ConflictException`` from ``StopPipelineExecution`` (AWS raises it when a
  stop lands during a step transition) — are retried with jittered exponential backoff until
  ``max_attempts`` calls were made or ``budget_seconds`` have passed since the first call, whichever comes
  first. Only then is the last error raised, with a note saying how many attempts were made;
- **capacity** errors — ``ResourceLimitExceeded`` (too many concurrent pipeline executions) — are retried
  only where the caller opts in (``wait_for_capacity=True``: starting or retrying an execution), with a
  longer, separately bounded backoff (``capacity_budget_seconds``; ``None`` waits until the task's own
  ``execution_timeout`` ends it). The pipeline operator waits for capacity itself, with the same delays
  (:func:`capacity_delay`) and bounds (``capacity_budget_seconds`` and its task's ``execution_timeout``),
  sleeping or, when deferrable, deferring between attempts;
- everything else is raised at once.

Retrying a mutating call is only safe because every mutating call this provider makes carries a
``ClientRequestToken`` (see :mod:`sagemaker_pipelines_provider.utils.tokens`): a repeated start, retry,
stop or callback answer is recognised by SageMaker as the same request.

The jitter is "equal jitter": the n-th wait is drawn uniformly from ``[d/2, d]`` with
``d = min(max_delay, base_delay * 2**n)``, so concurrent callers spread out but each still backs off.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Error codes AWS services use for request throttling.
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
#: Error codes that mean "the service failed", whatever the HTTP status says.
SERVER_ERROR_CODES = frozenset(
    {"InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable", "ServiceFailure"}
)
#: Actions for which a ConflictException is transient (the execution is between two states).
CONFLICT_RETRY_ACTIONS = frozenset({"StopPipelineExecution"})
CAPACITY_CODE = "ResourceLimitExceeded"

_CONNECTION_ERRORS = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)


class Retryable(enum.StrEnum):
    """Why an error may be retried."""

    TRANSIENT = "transient"
    CAPACITY = "capacity"


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``None`` for anything else)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "") or None
    return None


def classify(error: BaseException, *, action: str) -> Retryable | None:
    """Say whether ``error``, raised by the SageMaker ``action``, may be retried, and why.

    ``action`` is the API operation name (``"StopPipelineExecution"``), used for the errors that are
    transient for one call only (``ConflictException`` on stop).
    """
    if isinstance(error, _CONNECTION_ERRORS):
        return Retryable.TRANSIENT
    if not isinstance(error, ClientError):
        return None
    code = error_code(error) or ""
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in THROTTLING_CODES or code in SERVER_ERROR_CODES or status >= 500:
        return Retryable.TRANSIENT
    if code == "ConflictException" and action in CONFLICT_RETRY_ACTIONS:
        return Retryable.TRANSIENT
    if code == CAPACITY_CODE:
        return Retryable.CAPACITY
    return None


def is_capacity_error(error: BaseException) -> bool:
    """True for ``ResourceLimitExceeded``: the pipeline (or account) has too many running executions."""
    return error_code(error) == CAPACITY_CODE


@dataclass(frozen=True)
class BackoffPolicy:
    """Bounds of the retry loop. The defaults suit production; tests pass smaller delays.

    :param base_delay: first transient wait, doubled on each attempt (seconds).
    :param max_delay: cap of one transient wait (seconds).
    :param max_attempts: total calls for transient errors, the first one included.
    :param budget_seconds: time after the first call beyond which no transient retry starts.
    :param capacity_base_delay: first wait after ``ResourceLimitExceeded`` (seconds).
    :param capacity_max_delay: cap of one capacity wait (seconds).
    :param capacity_budget_seconds: time after the first call beyond which no capacity retry starts;
        ``None`` keeps waiting (the task's ``execution_timeout`` is then the bound).
    """

    base_delay: float = 0.25
    max_delay: float = 8.0
    max_attempts: int = 12
    budget_seconds: float = 120.0
    capacity_base_delay: float = 2.0
    capacity_max_delay: float = 60.0
    capacity_budget_seconds: float | None = None

    def delay(self, attempt: int, kind: Retryable, rng: random.Random | None = None) -> float:
        """The jittered wait before retry number ``attempt`` (0-based) of an error of ``kind``."""
        if kind is Retryable.CAPACITY:
            base, cap = self.capacity_base_delay, self.capacity_max_delay
        else:
            base, cap = self.base_delay, self.max_delay
        ceiling = min(cap, base * (2 ** min(attempt, 30)))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


DEFAULT_POLICY = BackoffPolicy()


def capacity_delay(attempt: int, policy: BackoffPolicy = DEFAULT_POLICY) -> float:
    """How long a deferrable task should defer before its ``attempt``-th (0-based) new start attempt."""
    return policy.delay(attempt, Retryable.CAPACITY)


class RetryState:
    """The retry decisions of one logical call; the sync and async loops below share it.

    :meth:`next_delay` returns how long to sleep before the next attempt, or ``None`` when the error must
    be raised now (not retryable, or budget spent — the error then carries a note saying so).
    """

    def __init__(
        self,
        action: str,
        policy: BackoffPolicy,
        *,
        wait_for_capacity: bool,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.action = action
        self.policy = policy
        self.wait_for_capacity = wait_for_capacity
        self._clock = clock
        self._rng = rng
        self._started = clock()
        self.transient_retries = 0
        self.capacity_retries = 0

    def next_delay(self, error: BaseException) -> float | None:
        kind = classify(error, action=self.action)
        if kind is None:
            return None
        if kind is Retryable.CAPACITY and not self.wait_for_capacity:
            return None
        elapsed = self._clock() - self._started
        policy = self.policy
        if kind is Retryable.CAPACITY:
            delay = policy.delay(self.capacity_retries, kind, self._rng)
            budget = policy.capacity_budget_seconds
            if budget is not None and elapsed + delay > budget:
                error.add_note(
                    f"{self.action}: still ResourceLimitExceeded after {self.capacity_retries + 1} attempts "
                    f"over {elapsed:.0f}s (capacity budget {budget:.0f}s spent)."
                )
                return None
            self.capacity_retries += 1
            return delay
        delay = policy.delay(self.transient_retries, kind, self._rng)
        attempts = self.transient_retries + 1
        if attempts >= policy.max_attempts or elapsed + delay > policy.budget_seconds:
            error.add_note(
                f"{self.action}: gave up after {attempts} attempts over {elapsed:.1f}s of retrying "
                f"transient errors (budget: {policy.max_attempts} attempts, {policy.budget_seconds:.0f}s)."
            )
            return None
        self.transient_retries += 1
        return delay


def _log_retry(action: str, error: BaseException, delay: float) -> None:
    log.info("%s: %s; retrying in %.2fs", action, error_code(error) or type(error).__name__, delay)


def call_with_backoff(
    call: Callable[[], T],
    *,
    action: str,
    policy: BackoffPolicy = DEFAULT_POLICY,
    wait_for_capacity: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call`` (one AWS request) until it succeeds or the policy says to give up; return its result.

    :param action: the API operation name, for classification and log lines.
    :param wait_for_capacity: also retry ``ResourceLimitExceeded`` (start/retry of an execution).
    :raises: the last error of ``call`` when it is not retryable or the budget is spent.
    """
    state = RetryState(action, policy, wait_for_capacity=wait_for_capacity)
    while True:
        try:
            return call()
        except Exception as error:
            delay = state.next_delay(error)
            if delay is None:
                raise
            _log_retry(action, error, delay)
            sleep(delay)


async def acall_with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    action: str,
    policy: BackoffPolicy = DEFAULT_POLICY,
    wait_for_capacity: bool = False,
) -> T:
    """The asynchronous twin of :func:`call_with_backoff` (``call`` returns a fresh awaitable each time)."""
    state = RetryState(action, policy, wait_for_capacity=wait_for_capacity)
    while True:
        try:
            return await call()
        except Exception as error:
            delay = state.next_delay(error)
            if delay is None:
                raise
            _log_retry(action, error, delay)
            await asyncio.sleep(delay)
