"""PipelineStatusEventTrigger: schedule DAGs when executions of a pipeline reach given statuses.

A ``BaseEventTrigger`` for an ``AssetWatcher``. It reads SageMaker's status-change events from an SQS queue
fed by the EventBridge rule of docs/events.md, through the queue's shared receiver
(:mod:`.event_receiver`), so it sees every execution of the pipeline, whoever started it (a SageMaker
schedule, the console, another team's DAG). docs/events.md "Scheduling DAGs on pipeline outcomes" has the
lifecycle and the event's extra.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
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
    from airflow.sdk.execution_time.context import AssetStateStoreAccessors
    from pydantic import JsonValue

#: Backoff between subscriptions while the queue cannot be read (missing, access denied ...).
QUEUE_RETRY_POLICY = BackoffPolicy(base_delay=1.0, max_delay=60.0)
#: Event ids remembered against duplicates: in this process, and in the asset's state store.
SEEN_IN_MEMORY = 1000
SEEN_IN_STORE = 200
#: The asset state store key holding the ids of the events fired last (newest last).
STORE_KEY = "sagemaker_pipelines.fired_event_ids"
DEFAULT_STATUSES = ("Succeeded",)
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
    :param aws_conn_id: Airflow AWS connection (``aws_default``); ``region_name``, ``verify`` and
        ``botocore_config`` as on the Amazon provider's hooks.

    The event's payload (the asset event's ``extra["payload"]``): ``pipeline_execution_arn``,
    ``pipeline_name``, ``status``, ``display_name``, ``failure_reason`` (Failed: SageMaker's, from one
    DescribePipelineExecution unless the event carried it), ``model_package_arns`` (Succeeded: the
    ModelPackageArn of each succeeded RegisterModel step, from one ListPipelineExecutionSteps; ``[]``
    for other statuses; ``None`` when that listing failed), ``event_id`` and ``event_time``.

    Each event fires at most once: the receiver drops copies of an event id, this trigger remembers the
    ids it fired (and, in a triggerer, records them in the asset's state store, so that a copy arriving
    after the trigger moved to another triggerer does not fire again). A queue that cannot be read is
    logged at ERROR, naming the queue and the AWS error, and tried again with a growing delay (capped at
    60 s): the watcher never fires an error as an asset event.
    """

    def __init__(
        self,
        *,
        pipeline_name: str,
        queue_url: str,
        statuses: str | Iterable[str] = DEFAULT_STATUSES,
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
        self.pipeline_name = pipeline_name
        self.queue_url = queue_url
        self.statuses = _statuses(statuses)
        self.aws = AwsConnectionArgs.of(aws_conn_id, region_name, verify, botocore_config)
        self._fired: OrderedDict[str, None] = OrderedDict()
        self._store_usable = True

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {
                "pipeline_name": self.pipeline_name,
                "queue_url": self.queue_url,
                "statuses": list(self.statuses),
                **self.aws.to_kwargs(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        receiver = get_event_receiver(EventQueueKey(self.queue_url, self.aws))
        failures = 0
        while True:
            error: EventStreamError | None = None
            async with receiver.subscribe_pipeline(self.pipeline_name, self.statuses) as queue:
                while error is None:
                    item = await queue.get()
                    if isinstance(item, EventStreamError):
                        error = item
                        continue
                    failures = 0
                    if item.kind != "execution" or item.status not in self.statuses:
                        continue  # the receiver's filter should have kept it away
                    stored = await self._stored_ids()
                    if item.event_id in self._fired or item.event_id in stored:
                        self.log.info("Event %s fired already; a duplicate is ignored", item.event_id)
                        continue
                    payload = await self._payload(item)
                    await self._remember(item.event_id, stored)
                    yield TriggerEvent(payload)
            delay = QUEUE_RETRY_POLICY.delay(failures, Retryable.TRANSIENT)
            failures += 1
            self.log.error(
                "Cannot read the pipeline events of %s from %s: %s; trying again in %.0f s",
                self.pipeline_name,
                self.queue_url,
                error.message,
                delay,
            )
            await asyncio.sleep(delay)

    # -- the payload --------------------------------------------------------------------------------------

    async def _payload(self, event: PipelineEvent) -> dict[str, Any]:
        """The asset event's payload; at most one SageMaker call (Succeeded: the steps, Failed: the
        failure reason when the event has none)."""
        failure_reason = event.failure_reason
        model_package_arns: list[str] | None = []
        hook = self.aws.hook(SageMakerPipelineHook)
        try:
            if event.status == "Succeeded":
                model_package_arns = None
                async with hook.async_client() as client:
                    steps = await hook.alist_pipeline_execution_steps(event.execution_arn, client=client)
                model_package_arns = model_package_arns_of(steps)
            elif event.status == "Failed" and not failure_reason:
                async with hook.async_client() as client:
                    described = await hook.adescribe_pipeline_execution(event.execution_arn, client=client)
                failure_reason = described.get("FailureReason")
        except Exception as err:  # fire anyway: the event happened; the payload says what is unknown
            self.log.warning(
                "Reading the details of %s failed (%s: %s); its event fires without them",
                event.execution_arn,
                type(err).__name__,
                err,
            )
        return {
            "pipeline_execution_arn": event.execution_arn,
            "pipeline_name": self.pipeline_name,  # as configured (ARNs lower-case it)
            "status": event.status,
            "display_name": event.display_name,
            "failure_reason": failure_reason,
            "model_package_arns": model_package_arns,
            "event_id": event.event_id,
            "event_time": _iso(event.time),
        }

    # -- duplicates ---------------------------------------------------------------------------------------

    async def _remember(self, event_id: str, stored: list[str]) -> None:
        """Record ``event_id`` as fired: in memory, and after ``stored`` in the asset state store."""
        self._fired[event_id] = None
        while len(self._fired) > SEEN_IN_MEMORY:
            self._fired.popitem(last=False)
        store = self._store()
        if store is None:
            return
        ids: list[JsonValue] = [i for i in stored if i != event_id]
        ids.append(event_id)
        try:
            await store.aset(STORE_KEY, ids[-SEEN_IN_STORE:])
        except Exception as err:
            self.log.warning("Recording event %s in the asset state store failed: %s", event_id, err)

    async def _stored_ids(self) -> list[str]:
        store = self._store()
        if store is None:
            return []
        try:
            ids = await store.aget(STORE_KEY, [])
        except ValueError:  # a trigger shared by several assets has no single store: memory only
            self._store_usable = False
            return []
        except Exception as err:
            self.log.warning("Reading the fired event ids from the asset state store failed: %s", err)
            return []
        return [str(i) for i in ids] if isinstance(ids, list) else []

    def _store(self) -> AssetStateStoreAccessors | None:
        """The asset state store a triggerer gives a watcher (None outside a triggerer)."""
        return self.asset_state_store if self._store_usable else None


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


__all__ = ["DEFAULT_STATUSES", "PipelineStatusEventTrigger", "model_package_arns_of"]
