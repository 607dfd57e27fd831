"""The local endpoint answers SQS calls made with an outdated receipt handle as SQS documents them."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.callbacks import create_queue, queue_counts, wait_until

pytestmark = pytest.mark.integration


def test_an_outdated_receipt_handle_deletes_nothing_and_cannot_hide_the_message(local_aws: Any) -> None:
    sqs = local_aws.client("sqs")
    queue = create_queue(local_aws)
    sqs.send_message(QueueUrl=queue, MessageBody="hello")
    (first,) = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1, WaitTimeSeconds=1)["Messages"]
    wait_until(lambda: queue_counts(local_aws, queue) == (1, 0), timeout=10, what="the message to come back")
    (again,) = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=30, WaitTimeSeconds=1)["Messages"]
    assert again["ReceiptHandle"] != first["ReceiptHandle"]

    sqs.delete_message(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"])  # "succeeds"...
    assert queue_counts(local_aws, queue) == (0, 1)  # ... and deletes nothing
    with pytest.raises(ClientError) as raised:
        sqs.change_message_visibility(
            QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0
        )
    assert raised.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert queue_counts(local_aws, queue) == (0, 1)  # still hidden at its current consumer

    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=60)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=again["ReceiptHandle"])  # the latest handle deletes
    assert queue_counts(local_aws, queue) == (0, 0)
    calls = local_aws.controls.calls(action="DeleteMessage")
    assert [c["routed_to"] for c in calls] == ["sqs_receipts", "moto"]
