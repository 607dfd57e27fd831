"""PipelineStatusEventTrigger: schedule DAGs when executions of a pipeline reach given statuses.

A ``BaseEventTrigger`` for an ``AssetWatcher``. It reads SageMaker's status-change events from an SQS queue
fed by the EventBridge rule of docs/events.md, through the queue's shared receiver
(:mod:`.event_receiver`), so it sees every execution of the pipeline, whoever started it (a SageMaker
schedule, the console, another team's DAG). A slow safety poll (one ListPipelineExecutions page) fires
what events missed. docs/events.md "Scheduling DAGs on pipeline outcomes" has the lifecycle and the
event's extra.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.results import latest_attempts, step_outputs
from sagemaker_pipelines_provider.triggers.event_receiver import (
    EventQueueKey,
    EventStreamError,
    get_event_receiver,
)
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs, WithAwsConnection
from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy, Retryable
from sagemaker_pipelines_provider.utils.pipeline_events import PipelineEvent
from sagemaker_pipelines_provider.utils.status import RUNNING_STATUSES, TERMINAL_STATUSES

if TYPE_CHECKING:
    pass

#: Backoff between subscriptions while the queue cannot be read (missing, access denied ...).
QUEUE_RETRY_POLICY = BackoffPolicy(base_delay=1.0, max_delay=60.0)
DEFAULT_STATUSES = ("Succeeded",)
#: Seconds between two safety polls (one ListPipelineExecutions page each).
DEFAULT_SAFETY_POLL_INTERVAL = 600.0
#: Outcomes (execution ARN + status) remembered as fired, newest last.
FIRED_MEMORY = 500
#: The asset state store key of the watch state (:class:`WatchState`).
STORE_KEY = "sagemaker_pipelines.pipeline_status_watch"
_KNOWN_STATUSES = RUNNING_STATUSES | TERMINAL_STATUSES


def _statuses(statuses: str | Iterable[str]) -> list[str]:
    """The statuses as a sorted list without repeats (equal sets make equal triggers); a clear error
    for a status SageMaker does not document."""
    chosen = [statuses] if isinstance(statuses, str) else list(statuses)
    unknown = sorted({str(s) for s in chosen} - _KNOWN_STATUSES)
    if unknown or not chosen:
        raise ValueError(
            f"statuses must be one or more of {', '.join(sorted(_KNOWN_STATUSES))}; got {chosen!r}"
        )
    return sorted(set(chosen))


class WatchState:
    """What a watcher knows: the outcomes it fired (``"<execution ARN>|<status>"``) and the picture of the
    pipeline's newest executions at the last safety poll (ARN -> status, and when, epoch seconds).

    Kept as JSON in the asset's state store, so that a watcher re-created elsewhere (another triggerer, a
    restart) neither fires an outcome again nor misses one that ended meanwhile.
    """

    def __init__(self, fired: Iterable[str] = (), picture: Mapping[str, str] | None = None, at: float = 0.0):
        self.fired: dict[str, None] = dict.fromkeys(fired)
        self.picture: dict[str, str] | None = None if picture is None else dict(picture)
        self.at = at

    @classmethod
    def from_json(cls, value: Any) -> WatchState:
        if not isinstance(value, Mapping):
            return cls()
        picture = value.get("picture")
        return cls(
            [str(k) for k in value.get("fired") or []],
            {str(k): str(v) for k, v in picture.items()} if isinstance(picture, Mapping) else None,
            float(value.get("at") or 0.0),
        )

    def to_json(self) -> dict[str, Any]:
        return {"fired": list(self.fired), "picture": self.picture, "at": self.at}

    def fire(self, key: str) -> None:
        self.fired[key] = None
        for old in list(self.fired)[: max(0, len(self.fired) - FIRED_MEMORY)]:
            del self.fired[old]

    def newly_reached(
        self, summaries: Iterable[Mapping[str, Any]], statuses: Iterable[str], now: float, max_age: float
    ) -> list[Mapping[str, Any]]:
        """The executions of a ListPipelineExecutions page (newest first) that reached one of
        ``statuses`` since the last picture and were not fired, oldest first; the page becomes the
        picture. None fire from a first picture, or from one older than ``max_age`` seconds (the DAG
        was paused, the watcher gone: no catch-up)."""
        page = {str(s.get("PipelineExecutionArn")): s for s in summaries}
        wanted = set(statuses)
        previous = self.picture if self.picture is not None and now - self.at <= max_age else None
        found = []
        for arn, summary in reversed(page.items()):
            status = str(summary.get("PipelineExecutionStatus"))
            if (
                previous is not None
                and status in wanted
                and previous.get(arn) != status
                and outcome_key(arn, status) not in self.fired
            ):
                found.append(summary)
        self.picture = {arn: str(s.get("PipelineExecutionStatus")) for arn, s in page.items()}
        self.at = now
        return found


def outcome_key(execution_arn: str, status: str) -> str:
    """One outcome of one execution: what fires at most once (ARNs compared case-insensitively)."""
    return f"{execution_arn.lower()}|{status}"


class PipelineStatusEventTrigger(WithAwsConnection, BaseEventTrigger):
    """For an ``AssetWatcher``: one asset event each time an execution of ``pipeline_name`` reaches one
    of ``statuses``, for the life of the watcher.

    Example — a DAG run per successful ``retraining`` execution::

        models = Asset(
            "sagemaker-retraining-succeeded",
            watchers=[
                AssetWatcher(
                    name="retraining-succeeded",
                    trigger=PipelineStatusEventTrigger(pipeline_name="retraining", queue_url=QUEUE_URL),
                )
            ],
        )

        with DAG("deploy_model", schedule=[models]): ...

    :param pipeline_name: the pipeline whose executions are watched (the name, not the ARN).
    :param queue_url: the SQS queue an EventBridge rule feeds with SageMaker's status-change events.
    :param statuses: execution statuses that fire (default ``("Succeeded",)``); any of Executing,
        Stopping, Stopped, Failed, Succeeded.
    :param safety_poll_interval: seconds between two safety polls (one ListPipelineExecutions page, the
        newest 100 executions), which fire the outcomes events missed (dropped events, a hand-over
        between triggerers); the first is made at start.
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on the Amazon provider's hooks.

    The event's payload (the asset event's ``extra["payload"]``): ``pipeline_execution_arn``,
    ``pipeline_name``, ``status``, ``display_name``, ``failure_reason`` (Failed: SageMaker's),
    ``model_package_arns`` (Succeeded: the ModelPackageArn of each succeeded RegisterModel step, from one
    ListPipelineExecutionSteps; ``[]`` for other statuses; ``None`` when that listing failed),
    ``detected_by`` (``event`` or ``poll``), ``event_id`` and ``event_time`` (None from a poll).

    Each outcome (execution, status) fires at most once: the fired ones and the last poll's picture are
    kept in memory and, in a triggerer, in the asset's state store, so that a watcher re-created on
    another triggerer neither fires an outcome again nor misses one that ended meanwhile (if its last
    picture is at most two poll intervals old; older, e.g. after the DAG was paused, nothing is caught
    up). A queue that cannot be read is logged at ERROR, naming the queue and the AWS error, and tried
    again with a growing delay (capped at 60 s) while the safety poll goes on: no error ever becomes an
    asset event.
    """

    def __init__(
        self,
        *,
        pipeline_name: str,
        queue_url: str,
        statuses: str | Iterable[str] = DEFAULT_STATUSES,
        safety_poll_interval: float = DEFAULT_SAFETY_POLL_INTERVAL,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(pipeline_name, str) or not pipeline_name or pipeline_name.startswith("arn:"):
            raise ValueError(f"pipeline_name must be a pipeline's name (not its ARN), got {pipeline_name!r}")
        if not isinstance(queue_url, str) or not queue_url.strip():
            raise ValueError(f"queue_url must be the URL of the events queue, got {queue_url!r}")
        if not float(safety_poll_interval) > 0:
            raise ValueError(f"safety_poll_interval must be > 0 seconds, got {safety_poll_interval!r}")
        self.pipeline_name = pipeline_name
        self.queue_url = queue_url
        self.statuses = _statuses(statuses)
        self.safety_poll_interval = float(safety_poll_interval)
        self.aws = AwsConnectionArgs.of(aws_conn_id, region_name, verify, botocore_config)
        self._state = WatchState()
        self._store_usable = True
        self._next_poll = 0.0
        self._stream_error: EventStreamError | None = None
        self._failures = 0  # subscriptions failed in a row

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "pipeline_name": self.pipeline_name,
                "queue_url": self.queue_url,
                "statuses": list(self.statuses),
                "safety_poll_interval": self.safety_poll_interval,
                **self.aws.to_kwargs(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self._state = await self._load()
        self._next_poll = time.monotonic()  # the first poll at once: a picture, or what was missed
        receiver = get_event_receiver(EventQueueKey(self.queue_url, self.aws))
        while True:
            self._stream_error = None
            async with receiver.subscribe_pipeline(self.pipeline_name, self.statuses) as queue:
                async for payload in self._serve(queue):
                    yield TriggerEvent(payload)
            error = self._stream_error.message if self._stream_error else "the subscription ended"
            delay = QUEUE_RETRY_POLICY.delay(self._failures, Retryable.TRANSIENT)
            self._failures += 1
            self.log.error(
                "Cannot read the pipeline events of %s from %s: %s; trying again in %.0f s (safety polls "
                "go on meanwhile)",
                self.pipeline_name,
                self.queue_url,
                error,
                delay,
            )
            async for payload in self._serve(None, until=time.monotonic() + delay):
                yield TriggerEvent(payload)

    async def _serve(
        self, queue: asyncio.Queue[PipelineEvent | EventStreamError] | None, until: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Payloads from ``queue``'s events and from the safety polls; ends when the queue reports an
        error or at ``until`` (monotonic)."""
        while until is None or time.monotonic() < until:
            if time.monotonic() >= self._next_poll:
                for summary in await self._poll():
                    yield await self._fire(
                        str(summary["PipelineExecutionArn"]),
                        str(summary["PipelineExecutionStatus"]),
                        display_name=summary.get("PipelineExecutionDisplayName"),
                        failure_reason=summary.get("PipelineExecutionFailureReason"),
                    )
                self._next_poll = time.monotonic() + self.safety_poll_interval
            deadline = self._next_poll if until is None else min(self._next_poll, until)
            wait = max(0.0, deadline - time.monotonic())
            if queue is None:
                await asyncio.sleep(wait)
                continue
            try:
                async with asyncio.timeout(wait):  # not wait_for: see triggers.event_wait.next_item
                    item = await queue.get()
            except TimeoutError:
                continue
            if isinstance(item, EventStreamError):
                self._stream_error = item
                return
            self._failures = 0
            if item.kind != "execution" or item.status not in self.statuses:
                continue  # the receiver's filter keeps these away
            if outcome_key(item.execution_arn, item.status) in self._state.fired:
                self.log.info("%s reached %s: fired already", item.execution_arn, item.status)
                continue
            yield await self._fire(
                item.execution_arn,
                item.status,
                display_name=item.display_name,
                failure_reason=item.failure_reason,
                event=item,
            )

    async def _poll(self) -> list[Mapping[str, Any]]:
        """One ListPipelineExecutions page: the executions that reached a status since the last picture."""
        hook = self.aws.hook(SageMakerPipelineHook)
        try:
            async with hook.async_client() as client:
                summaries, _ = await hook.alist_pipeline_executions(self.pipeline_name, client=client)
        except Exception as err:
            self.log.warning(
                "The safety poll of %s failed (%s: %s)", self.pipeline_name, type(err).__name__, err
            )
            return []
        max_age = 2 * self.safety_poll_interval + 60
        found = self._state.newly_reached(summaries, self.statuses, time.time(), max_age)
        await self._save()
        return found

    async def _fire(
        self,
        arn: str,
        status: str,
        *,
        display_name: str | None,
        failure_reason: str | None,
        event: PipelineEvent | None = None,
    ) -> dict[str, Any]:
        """The payload of one outcome (at most one SageMaker call), recorded as fired before it is yielded."""
        model_package_arns: list[str] | None = []
        hook = self.aws.hook(SageMakerPipelineHook)
        try:
            if status == "Succeeded":
                model_package_arns = None
                async with hook.async_client() as client:
                    steps = await hook.alist_pipeline_execution_steps(arn, client=client)
                model_package_arns = model_package_arns_of(steps)
            elif status == "Failed" and not failure_reason:
                async with hook.async_client() as client:
                    described = await hook.adescribe_pipeline_execution(arn, client=client)
                failure_reason = described.get("FailureReason")
        except Exception as err:  # fire anyway: the outcome happened; the payload says what is unknown
            self.log.warning(
                "Reading the details of %s failed (%s: %s); it fires without them",
                arn,
                type(err).__name__,
                err,
            )
        self._state.fire(outcome_key(arn, status))
        await self._save()
        return {
            "pipeline_execution_arn": arn,
            "pipeline_name": self.pipeline_name,  # as configured (execution ARNs lower-case it)
            "status": status,
            "display_name": display_name,
            "failure_reason": failure_reason,
            "model_package_arns": model_package_arns,
            "detected_by": "poll" if event is None else "event",
            "event_id": None if event is None else event.event_id,
            "event_time": None if event is None else _iso(event.time),
        }

    # -- the asset state store ----------------------------------------------------------------------------

    async def _load(self) -> WatchState:
        store = self.asset_state_store
        if store is None:
            return self._state
        try:
            return WatchState.from_json(await store.aget(STORE_KEY, None))
        except ValueError:  # one trigger shared by several assets has no single store: memory only
            self._store_usable = False
        except Exception as err:
            self.log.warning("Reading the watch state from the asset state store failed: %s", err)
        return self._state

    async def _save(self) -> None:
        store = self.asset_state_store
        if store is None or not self._store_usable:
            return
        try:
            await store.aset(STORE_KEY, self._state.to_json())
        except Exception as err:
            self.log.warning("Recording the watch state in the asset state store failed: %s", err)


def model_package_arns_of(steps: Iterable[Any]) -> list[str]:
    """The ModelPackageArn of each succeeded RegisterModel step (latest attempts), in start order."""
    entries = [e for e in latest_attempts(steps) if e.get("StepStatus") == "Succeeded"]
    entries.sort(key=lambda e: e.get("StartTime") or dt.datetime.min.replace(tzinfo=dt.UTC))
    arns = []
    for entry in entries:
        metadata = entry.get("Metadata") or {}
        if "RegisterModel" in metadata:
            arn = step_outputs({"RegisterModel": metadata["RegisterModel"]}).get("ModelPackageArn")
            if arn:
                arns.append(str(arn))
    return arns


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


__all__ = [
    "DEFAULT_SAFETY_POLL_INTERVAL",
    "DEFAULT_STATUSES",
    "PipelineStatusEventTrigger",
    "WatchState",
    "model_package_arns_of",
    "outcome_key",
]
