"""Event-driven handling: a SageMakerCallbackEventTrigger in an AssetWatcher schedules the handler DAG.

SageMaker is the outer DAG, Airflow the inner one: each callback message becomes an asset event, and the
run it schedules takes the message from its triggering asset event (``callback_handler(from_asset=...)``).

What a triggerer and scheduler would do is done here by the same code paths they use: the trigger's own
``run()`` loop produces the event, ``AssetManager.register_asset_change`` records it (as
``Trigger.submit_event`` does for watchers), and the handler DAG run consumes it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.callbacks import (
    VISIBILITY,
    answer_calls,
    callback_pipeline,
    create_queue,
    dag,
    fast_endpoint,
    next_event,
    queue_counts,
    record_asset_event,
    run_consuming,
    start,
    unique,
    wait_status,
    wait_until,
    waiting_token,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _stop_leases() -> Any:
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def test_event_driven_handler_dag_answers_a_callback_end_to_end(
    local_aws: Any, dag_runner: Any, monkeypatch: Any
) -> None:
    from airflow.sdk import Asset, AssetWatcher, task
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackEventTrigger

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    trigger_kwargs = {
        "queue_url": queue,
        "pipeline_name": pipeline,
        "visibility_timeout": VISIBILITY,
        "wait_time_seconds": 1,
        "inspect_visibility_timeout": 5,
    }
    asset = Asset(
        unique("callbacks"),
        watchers=[AssetWatcher(name=unique("w"), trigger=SageMakerCallbackEventTrigger(**trigger_kwargs))],
    )
    seen: list[dict[str, Any]] = []

    @task
    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        seen.append(arguments)
        return {"passed": True, "rows": 3}

    with dag(schedule=[asset]) as handler_dag:
        callback_handler("validate", from_asset=asset, work=validate, visibility_timeout=VISIBILITY)
    dag_runner.sync_dag(handler_dag)

    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)

    # the watcher fires; no handler run follows (lost): the message is not deleted, it comes back
    first = next_event(SageMakerCallbackEventTrigger(**trigger_kwargs))
    assert first.payload["token"] == token
    assert queue_counts(local_aws, queue) == (0, 1)
    wait_until(
        lambda: queue_counts(local_aws, queue) == (1, 0), timeout=VISIBILITY * 4, what="the message back"
    )

    # it fires again; this time the scheduled run handles it
    second = next_event(SageMakerCallbackEventTrigger(**trigger_kwargs))
    assert second.payload["message_id"] == first.payload["message_id"]
    assert second.payload["receive_count"] >= 2
    event_id = record_asset_event(asset, second.payload)
    run = run_consuming(dag_runner, handler_dag, [event_id], monkeypatch)
    states = dag_runner.task_states(run)
    assert run.state == "success", states
    assert states["validate.validate"] == "success"
    assert seen and seen[0]["dataset"] == "s3://bucket/data"
    final = wait_status(local_aws, arn, "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Succeeded", final
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
    assert queue_counts(local_aws, queue) == (0, 0)

    # a duplicate event for the same (now answered and deleted) message: its run does nothing
    event_id = record_asset_event(asset, first.payload)
    run = run_consuming(dag_runner, handler_dag, [event_id], monkeypatch)
    states = dag_runner.task_states(run)
    assert states["validate.wait"] == "skipped", states
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
