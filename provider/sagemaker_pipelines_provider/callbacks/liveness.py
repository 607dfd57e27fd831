"""Is a callback token still waiting for its answer? The rule every consumer of callback messages applies.

Read from ``ListPipelineExecutionSteps`` of the message's execution: WAITING, SETTLED (its messages are
deleted) or UNKNOWN (handed over: the check only removes work that is certainly done).
:data:`SETTLED_TOKENS` remembers settled tokens per process. The rule in full: ``docs/callbacks.md``."""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sagemaker_pipelines_provider.callbacks.message import (
    BatchPlan,
    CallbackMessage,
    CallbackRoute,
    plan_batch,
)
from sagemaker_pipelines_provider.utils.status import is_terminal

#: Step statuses of a callback step still waiting for its answer.
WAITING_STEP_STATUSES = frozenset({"Starting", "Executing", "Stopping"})


class TokenState(enum.Enum):
    """What the listing says of a callback token (``docs/callbacks.md``)."""

    WAITING = "waiting"
    SETTLED = "settled"
    UNKNOWN = "unknown"


def token_state(
    steps: Sequence[Mapping[str, Any]], token: str, execution_status: str | None = None
) -> TokenState:
    """The state of ``token`` from its execution's ``ListPipelineExecutionSteps`` entries (pure).

    :param execution_status: the execution's status, when known; used only when the token is not listed.
    """
    for step in steps:
        callback = (step.get("Metadata") or {}).get("Callback") or {}
        if callback.get("CallbackToken") == token:
            waiting = step.get("StepStatus") in WAITING_STEP_STATUSES
            return TokenState.WAITING if waiting else TokenState.SETTLED
    if execution_status and is_terminal(execution_status):  # no step waits after the execution ended
        return TokenState.SETTLED
    return TokenState.UNKNOWN


class SettledTokens:
    """A bounded, thread-safe memory of callback tokens known to be answered."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, tokens: Iterable[str]) -> None:
        with self._lock:
            for token in tokens:
                self._tokens[token] = None
                self._tokens.move_to_end(token)
            while len(self._tokens) > self.capacity:
                self._tokens.popitem(last=False)

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self._tokens

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


#: The process-wide memory of settled tokens.
SETTLED_TOKENS = SettledTokens()


class LiveBatch:
    """One received batch routed to waiters, with every message to hand over checked first: the one
    planning loop of the triggerer's receiver and the poke-mode sensor (they differ only in how they call
    SageMaker).

    Drive it with::

        batch = LiveBatch(raw, queue_url, routes)
        while todo := batch.unchecked():
            batch.record({message.token: check(message) for message in todo})
        plan = batch.plan  # claims: WAITING or UNKNOWN tokens only; settled: every copy to delete

    A claim whose token turns out settled frees its waiter, and the batch is routed again without it, so
    that waiter can take another message of the same batch.
    """

    def __init__(
        self,
        raw_messages: Sequence[Mapping[str, Any]],
        queue_url: str,
        routes: Sequence[CallbackRoute | None],
        settled: SettledTokens = SETTLED_TOKENS,
    ) -> None:
        self._raw = list(raw_messages)
        self._queue_url = queue_url
        self._routes = list(routes)
        self._settled = settled
        self.states: dict[str, TokenState] = {}
        self.plan = self._route()

    def _route(self) -> BatchPlan:
        return plan_batch(self._raw, self._queue_url, self._routes, is_settled=self._is_settled)

    def _is_settled(self, token: str) -> bool:
        return self.states.get(token) is TokenState.SETTLED or token in self._settled

    def unchecked(self) -> list[CallbackMessage]:
        """The messages the plan hands over whose token was not checked yet."""
        return [message for _, message, _ in self.plan.claims if message.token not in self.states]

    def record(self, states: Mapping[str, TokenState]) -> None:
        """Record one round of checks; route again if a token turned out settled."""
        self.states.update(states)
        settled = [token for token, state in states.items() if state is TokenState.SETTLED]
        if settled:
            self._settled.add(settled)
            self.plan = self._route()


__all__ = [
    "SETTLED_TOKENS",
    "WAITING_STEP_STATUSES",
    "LiveBatch",
    "SettledTokens",
    "TokenState",
    "token_state",
]
