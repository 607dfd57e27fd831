"""The local endpoint's moto speed-up: ReceiveMessage keeps its answers (retention included) without
building the queue's attributes for every message it returns."""

from __future__ import annotations

from typing import Any

import pytest
from sagemaker_pipelines_provider.local.server.moto_speedups import install


def test_receive_keeps_the_retention_rule_without_building_queue_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto import mock_aws
    from moto.sqs.models import SQSBackend

    install()
    install()  # idempotent

    def no_attributes(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ReceiveMessage built the queue's attributes")

    with mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="speedups", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        for body in ("fresh", "expired"):
            sqs.send_message(QueueUrl=url, MessageBody=body)
        from moto.backends import get_backend

        queue = get_backend("sqs")["123456789012"]["us-east-1"].queues["speedups"]  # type: ignore[index]
        expired: Any = next(m for m in queue._messages if m.body == "expired")
        expired.sent_timestamp -= 61_000  # sent 61 s ago: past the 60 s retention

        monkeypatch.setattr(SQSBackend, "get_queue_attributes", no_attributes)
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in received] == ["fresh"]
