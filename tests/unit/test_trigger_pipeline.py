"""SageMakerPipelineExecutionTrigger and its shared poller, without an endpoint.

Serialisation goes through Airflow's own path (task runner's serde + the Trigger row's encrypted
kwargs, as the triggerer decrypts them); the poller's round is driven with an aiobotocore client whose
responses are stubbed at the botocore level (AioStubber).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from sagemaker_pipelines_provider.triggers.pipeline import CLASSPATH, SageMakerPipelineExecutionTrigger
from sagemaker_pipelines_provider.triggers.poller import (
    ExecutionStatusPoller,
    ExecutionUpdate,
    PollerKey,
    _Subscription,
    get_poller,
)
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/my-pipe/execution/{}"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def trigger(**kwargs: Any) -> SageMakerPipelineExecutionTrigger:
    options: dict[str, Any] = {
        "aws_conn_id": "my_aws",
        "region_name": "eu-west-1",
        "verify": False,
        "botocore_config": {"connect_timeout": 5},
        "poll_interval": 2.5,
        "allow_stopped": True,
        "stop_on_kill": True,
        "stop_token": "s" * 64,
        "deadline": "2030-01-01T00:00:00+00:00",
        "step_types": {"Train": "Training"},
        "parameters": {"RunDate": "2024-01-01", "Rows": "10"},
    }
    options.update(kwargs)
    return SageMakerPipelineExecutionTrigger(ARN.format("e1"), **options)


def test_round_trips_through_airflow_trigger_serialisation() -> None:
    from airflow.models.trigger import Trigger
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.serde import deserialize, serialize

    original = trigger()
    classpath, kwargs = original.serialize()
    assert classpath == CLASSPATH

    # Worker side: the task runner serde-encodes the kwargs of the deferral.
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))  # type: ignore[arg-type]
    assert rebuilt.serialize() == original.serialize()

    # Triggerer side: the Trigger row stores encrypted kwargs; the triggerer decrypts and instantiates.
    row = Trigger.from_object(original)
    revived = import_string(row.classpath)(**Trigger._decrypt_kwargs(row.encrypted_kwargs))
    assert revived.serialize() == original.serialize()
    assert revived.step_types == {"Train": "Training"}
    assert revived.botocore_config == {"connect_timeout": 5}
    assert revived.parameters == {"RunDate": "2024-01-01", "Rows": "10"}


def test_defaults_round_trip_too() -> None:
    plain = SageMakerPipelineExecutionTrigger(ARN.format("e2"))
    assert SageMakerPipelineExecutionTrigger(**plain.serialize()[1]).serialize() == plain.serialize()
    assert plain.serialize()[1]["stop_on_kill"] is False
    assert plain.serialize()[1]["parameters"] is None  # not known: read once, at the end


def test_a_malformed_arn_fires_an_error_event() -> None:
    async def first_event() -> Any:
        return await anext(SageMakerPipelineExecutionTrigger("not-an-arn").run())

    event = asyncio.run(first_event())
    assert event.payload["status"] == "error"
    assert "not a SageMaker pipeline execution ARN" in event.payload["message"]


def test_pollers_are_per_loop_and_per_connection_region_pipeline() -> None:
    key = PollerKey("p", AwsConnectionArgs.of(aws_conn_id="a", region_name="us-east-1"))
    other_region = PollerKey("p", AwsConnectionArgs.of(aws_conn_id="a", region_name="eu-west-1"))

    async def in_one_loop() -> tuple[ExecutionStatusPoller, ExecutionStatusPoller, ExecutionStatusPoller]:
        return get_poller(key), get_poller(key), get_poller(other_region)

    first, same, other = asyncio.run(in_one_loop())
    assert first is same
    assert other is not first
    second_loop, _, _ = asyncio.run(in_one_loop())
    assert second_loop is not first  # a new event loop gets its own poller (and aiobotocore client)


# ---------------------------------------------------------------------------------------------------------
# one poll round, AWS stubbed with aiobotocore's Stubber


def summary(name: str, status: str, reason: str | None = None) -> dict[str, Any]:
    item = {
        "PipelineExecutionArn": ARN.format(name),
        "PipelineExecutionStatus": status,
        "PipelineExecutionDisplayName": f"display-{name}",
        "StartTime": T0,
    }
    if reason:
        item["PipelineExecutionFailureReason"] = reason
    return item


def test_a_round_lists_pages_for_all_watched_and_describes_only_the_missing() -> None:
    from aiobotocore.stub import AioStubber

    key = PollerKey("my-pipe", AwsConnectionArgs.of(aws_conn_id=None, region_name="us-east-1"))

    async def scenario() -> dict[str, list[ExecutionUpdate]]:
        poller = ExecutionStatusPoller(key)
        subscriptions = {name: _Subscription(ARN.format(name), 1.0) for name in ("a", "b", "c")}
        poller._subscribers.update(subscriptions.values())
        list_request = {"PipelineName": "my-pipe", "SortBy": "CreationTime", "SortOrder": "Descending"}
        async with poller.hook.async_client() as client:
            with AioStubber(client) as stub:
                # Round 1: 'a' on page 1, 'b' on page 2, 'c' in neither: one Describe, for 'c' only.
                stub.add_response(
                    "list_pipeline_executions",
                    {
                        "PipelineExecutionSummaries": [summary("zz", "Succeeded"), summary("a", "Executing")],
                        "NextToken": "page2",
                    },
                    {**list_request, "MaxResults": 100},
                )
                stub.add_response(
                    "list_pipeline_executions",
                    {"PipelineExecutionSummaries": [summary("b", "Failed", "Step X failed")]},
                    {**list_request, "MaxResults": 100, "NextToken": "page2"},
                )
                stub.add_response(
                    "describe_pipeline_execution",
                    {
                        "PipelineExecutionArn": ARN.format("c"),
                        "PipelineExecutionStatus": "Executing",
                        "PipelineExecutionDisplayName": "display-c",
                        "CreationTime": T0,
                    },
                    {"PipelineExecutionArn": ARN.format("c")},
                )
                await poller._poll_round(client)
                # Round 2: every start time is known now, so the list is bounded by CreatedAfter; all three
                # are on the one page; nothing changed for 'a' and 'c', so nobody hears about them again.
                stub.add_response(
                    "list_pipeline_executions",
                    {
                        "PipelineExecutionSummaries": [
                            summary("c", "Executing"),
                            summary("b", "Failed", "Step X failed"),
                            summary("a", "Succeeded"),
                        ]
                    },
                    {**list_request, "MaxResults": 100, "CreatedAfter": T0 - dt.timedelta(minutes=5)},
                )
                await poller._poll_round(client)
                # Round 3: 'c' cannot be read: only its subscriber gets the error.
                stub.add_response(
                    "list_pipeline_executions",
                    {
                        "PipelineExecutionSummaries": [
                            summary("a", "Succeeded"),
                            summary("b", "Failed", "Step X failed"),
                        ]
                    },
                )
                stub.add_client_error("describe_pipeline_execution", service_error_code="ResourceNotFound")
                await poller._poll_round(client)
                stub.assert_no_pending_responses()
        received: dict[str, list[ExecutionUpdate]] = {}
        for name, subscription in subscriptions.items():
            received[name] = []
            while not subscription.queue.empty():
                received[name].append(subscription.queue.get_nowait())
        return received

    received = asyncio.run(scenario())
    assert [u.status for u in received["a"]] == ["Executing", "Succeeded"]
    assert received["a"][0].display_name == "display-a"
    assert received["b"] == [ExecutionUpdate("Failed", "Step X failed", "display-b")]
    assert [u.status for u in received["c"]] == ["Executing", None]
    assert received["c"][1].error is not None and "ResourceNotFound" in received["c"][1].error


def test_update_as_describe_feeds_the_result() -> None:
    update = ExecutionUpdate("Failed", "boom", "nightly")
    assert update.as_describe("arn") == {
        "PipelineExecutionArn": "arn",
        "PipelineExecutionStatus": "Failed",
        "FailureReason": "boom",
        "PipelineExecutionDisplayName": "nightly",
    }


@pytest.mark.parametrize(("deadline", "positive"), [("2000-01-01T00:00:00+00:00", False), (None, None)])
def test_seconds_left(deadline: str | None, positive: bool | None) -> None:
    left = trigger(deadline=deadline)._seconds_left()
    if positive is None:
        assert left is None
    else:
        assert left == 0.0


def test_page_budget_scales_with_the_watched_executions_up_to_a_cap() -> None:
    from sagemaker_pipelines_provider.triggers.poller import EXTRA_PAGES, MAX_PAGES, page_budget

    assert page_budget(1) == 1 + EXTRA_PAGES
    assert page_budget(100) == 1 + EXTRA_PAGES
    assert page_budget(101) == 2 + EXTRA_PAGES
    assert page_budget(1000) == 10 + EXTRA_PAGES  # 1000 watched: list pages, not ~500 describes a round
    assert page_budget(100_000) == MAX_PAGES
