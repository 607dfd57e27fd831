"""The one idempotency-token derivation of the provider.

Every ``ClientRequestToken`` this provider sends (start, retry, stop, callback answers) comes from
:func:`idempotency_token`, fed with the identity of whoever makes the request, so that repeating the
same logical request (a task retry, a worker that died after the call but before recording its answer)
sends the same token and SageMaker answers with the first request's result instead of acting twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

#: Length of every token this module derives; within SageMaker's IdempotencyToken bounds (32-128).
TOKEN_LENGTH = 64

TokenPart = str | int | float | bool | None


def idempotency_token(*parts: TokenPart | Iterable[TokenPart]) -> str:
    """Return a stable ``ClientRequestToken`` for the request identified by ``parts``.

    Contract:

    - the same parts (same values, same order) give the same token, in every process and Python
      version (no ``hash()``, no randomness): a retried request is recognised as the same request;
    - any difference in any part (including ``None`` versus ``"None"``, ``1`` versus ``"1"``, or the
      split between parts) gives a different token;
    - the token is :data:`TOKEN_LENGTH` (64) lowercase hex characters, inside SageMaker's 32-128 bounds.

    Typical parts: ``(dag_id, run_id, task_id, map_index, purpose, counter)``. Nested iterables (a tuple of
    identity parts) are flattened by position, so ``idempotency_token(identity, "start", 0)`` works.

    :raises TypeError: when a part is not a JSON scalar (a dict, an object): such a part has no stable
        textual form, so it would make the token unstable.
    """
    flat: list[TokenPart] = []
    for part in parts:
        if isinstance(part, str | int | float | bool) or part is None:
            flat.append(part)
        elif isinstance(part, Iterable) and not isinstance(part, dict | bytes):
            for item in part:
                if not (isinstance(item, str | int | float | bool) or item is None):
                    raise TypeError(f"idempotency token parts must be JSON scalars, got {item!r}")
                flat.append(item)
        else:
            raise TypeError(f"idempotency token parts must be JSON scalars, got {part!r}")
    # JSON keeps types apart (1 vs "1" vs true vs null) and the list keeps the split between parts.
    canonical = json.dumps(flat, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:TOKEN_LENGTH]


def stop_token(
    identity: Iterable[TokenPart], pipeline_execution_arn: str, *, counter: int, retries: int
) -> str:
    """The ``ClientRequestToken`` of StopPipelineExecution for one attempt of one execution.

    An attempt is ``(counter, retries)`` of the operator's start state: ``counter`` numbers the fresh
    executions of the task instance, ``retries`` the RetryPipelineExecution calls on the current one. Every
    stop path of one attempt (the operator's ``on_kill``, the trigger's deadline and ``on_kill``, the
    deferral-timeout backstop) sends the same request; a stop after the execution was resumed with
    RetryPipelineExecution is a new request, so SageMaker does not take it for a repeat of the stop that
    preceded the resume (and answer it without stopping anything).
    """
    return idempotency_token(tuple(identity), "stop", pipeline_execution_arn, counter, retries)
