"""Names, pipelines, queues and executions on the local endpoint (the ``local_aws`` fixture)."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from typing import Any

ROLE_ARN = "arn:aws:iam::123456789012:role/SageMakerPipelineExecutionRole"
START_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_ids = itertools.count()


def unique(prefix: str) -> str:
    """A DAG id, pipeline or queue name no other test of the session uses."""
    return f"{prefix}-{next(_ids)}-{int(time.time() * 1000) % 100000}"


def fast_endpoint(local_aws: Any, step_seconds: float = 0.05) -> None:
    """Simulated steps take ``step_seconds`` of real time."""
    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(step_seconds)


def create_queue(local_aws: Any, name: str | None = None, **attributes: str) -> str:
    """A fresh SQS queue on the endpoint (for Callback steps); returns its URL."""
    sqs = local_aws.client("sqs")
    return str(sqs.create_queue(QueueName=name or unique("callbacks"), Attributes=attributes)["QueueUrl"])


def executions(local_aws: Any, pipeline: str) -> list[dict[str, Any]]:
    """Every execution of ``pipeline`` (all pages), newest first."""
    client = local_aws.client("sagemaker")
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"PipelineName": pipeline, "MaxResults": 100}
    while True:
        page = client.list_pipeline_executions(**kwargs)
        found.extend(page["PipelineExecutionSummaries"])
        if not page.get("NextToken"):
            return found
        kwargs["NextToken"] = page["NextToken"]
