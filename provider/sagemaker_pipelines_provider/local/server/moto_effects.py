"""The engine's ``SideEffects`` with moto's in-process backends (no HTTP): callback messages to SQS,
model packages, EventBridge events, property files from S3."""

from __future__ import annotations

import inspect
import logging
import re
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from .environ import DEFAULT_ACCOUNT_ID
from .event_delivery import deliver, envelope
from .event_faults import REORDER_HOLD_SECONDS, EventFaults

__all__ = ["MotoSideEffects"]

log = logging.getLogger(__name__)


class MotoSideEffects:
    """The engine's ``SideEffects`` implemented with moto's in-process backends (no HTTP).

    Calls are serialised by one lock (moto's backends are not designed for concurrent mutation; moto's
    own server threads still run unlocked, as in ``ThreadedMotoServer``). Raises ``LookupError`` when
    a queue does not exist, so the engine can fail the callback step with that message.
    """

    EVENT_SOURCE = "aws.sagemaker"

    def __init__(self, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self.account_id = account_id
        self._lock = threading.RLock()
        self.event_faults = EventFaults()
        self._held: tuple[str, dict[str, Any], int] | None = None

    @staticmethod
    def _backend(service: str) -> Any:
        from moto.backends import get_backend

        from ..aws_session import isolate_moto

        isolate_moto()
        return get_backend(service)  # type: ignore[call-overload]

    def _parse_queue_url(self, queue_url: str) -> tuple[str, str, str | None]:
        """(account, queue name, region or None) from an SQS queue URL of any host (AWS or loopback)."""
        parts = urlsplit(queue_url)
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) < 2:
            raise LookupError(f"not an SQS queue URL: {queue_url!r} (expected .../<account>/<queue name>)")
        account, name = segments[-2], segments[-1]
        host = parts.hostname or ""
        match = re.match(r"^(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d)\.", host)
        return account, name, match.group(1) if match else None

    def send_sqs_message(self, queue_url: str, body: str) -> None:
        """Send ``body`` to the queue; the region comes from the URL or, for a loopback URL, from the
        region that holds a queue of that name."""
        account, name, region = self._parse_queue_url(queue_url)
        with self._lock:
            per_account = self._backend("sqs")[account]
            regions = [region] if region else [r for r, b in list(per_account.items()) if name in b.queues]
            for candidate in regions:
                backend = per_account[candidate]
                if name in backend.queues:
                    backend.send_message(name, body)
                    return
        raise LookupError(f"SQS queue {queue_url!r} does not exist (account {account}, queue {name!r})")

    def create_model_package(self, request: dict[str, Any], region: str) -> str:
        """Create a model package from a CreateModelPackage-shaped request; returns its ARN.

        The model package group is created first when it does not exist (a RegisterModel step on AWS
        requires it to exist; the local endpoint creates it so demo pipelines need no set-up)."""
        from moto.core.utils import camelcase_to_underscores

        with self._lock:
            backend = self._backend("sagemaker")[self.account_id][region]
            request = dict(request)
            group = request.get("ModelPackageGroupName")
            if isinstance(group, str) and group.startswith("arn:"):
                group = group.rsplit("/", 1)[-1]
                request["ModelPackageGroupName"] = group
            if group and group not in backend.model_package_groups:
                backend.create_model_package_group(
                    model_package_group_name=group, model_package_group_description=None, tags=None
                )
            params = inspect.signature(backend.create_model_package).parameters
            by_snake = {camelcase_to_underscores(k): v for k, v in request.items()}
            kwargs = {name: by_snake.get(name) for name in params}
            kwargs["certify_for_marketplace"] = bool(by_snake.get("certify_for_marketplace", False))
            kwargs["client_token"] = request.get("ClientToken")
            ignored = sorted(set(by_snake) - set(params))
            if ignored:
                log.debug("CreateModelPackage members moto does not model, ignored: %s", ignored)
            return str(backend.create_model_package(**kwargs))

    def put_event(self, detail_type: str, detail: dict[str, Any], resources: list[str], region: str) -> None:
        """Put one ``aws.sagemaker`` event on the default bus: matching rules deliver it to their targets
        (:mod:`.event_delivery`), as many times and in the order :attr:`event_faults` decides. A copy
        delivered twice keeps its ``id``, as AWS's duplicate deliveries do."""
        event = envelope(self.account_id, region, self.EVENT_SOURCE, detail_type, detail, resources)
        copies, hold = self.event_faults.decide()
        with self._lock:
            held, self._held = self._held, None
            if copies and hold and held is None:
                self._held = (region, event, copies)
                timer = threading.Timer(REORDER_HOLD_SECONDS, self._release_held, (event["id"],))
                timer.daemon = True
                timer.start()
                return
            for _ in range(copies):
                deliver(self.account_id, region, event)
            if held is not None:
                held_region, held_event, held_copies = held
                for _ in range(held_copies):
                    deliver(self.account_id, held_region, held_event)

    def _release_held(self, event_id: str) -> None:
        """Deliver the reordered event ``event_id`` if no later event came to overtake it."""
        with self._lock:
            held = self._held
            if held is not None and held[1]["id"] == event_id:
                self._held = None
                region, event, copies = held
                for _ in range(copies):
                    deliver(self.account_id, region, event)

    def read_s3_object(self, s3_uri: str) -> bytes | None:
        """The object's bytes, or None when the bucket or key does not exist."""
        parts = urlsplit(s3_uri)
        if parts.scheme != "s3" or not parts.netloc:
            return None
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        with self._lock:
            backend = self._backend("s3")[self.account_id]["global"]
            try:
                obj = backend.get_object(bucket, key)
            except Exception:  # MissingBucket, MissingKey ...
                return None
        return None if obj is None else bytes(obj.value)
