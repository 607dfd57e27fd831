"""Event-driven handling: a SageMakerCallbackEventTrigger in an AssetWatcher schedules the handler DAG.

SageMaker is the outer DAG, Airflow the inner one: each callback message becomes an asset event, and the
run it schedules takes the message from its triggering asset event (``callback_handler(from_asset=...)``).

What a triggerer and scheduler would do is done here by the same code paths they use: the trigger's own
``run()`` loop produces the event, ``AssetManager.register_asset_change`` records it (as
``Trigger.submit_event`` does for watchers), and the handler DAG run consumes it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_callback_helpers import (
    VISIBILITY,
    answer_calls,
    callback_pipeline,
    create_queue,
    dag,
    fast_endpoint,
    queue_counts,
    start,
    unique,
    wait_for,
    wait_status,
    waiting_token,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _stop_leases() -> Any:
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def next_event(trigger: Any) -> Any:
    """Run the watcher trigger until it fires once (what the triggerer does, one event at a time)."""

    async def first() -> Any:
        return await anext(trigger.run())

    return asyncio.run(asyncio.wait_for(first(), timeout=30))


def record_asset_event(asset: Any, payload: Any) -> Any:
    """Record the asset event as ``Trigger.submit_event`` does for an AssetWatcher's trigger."""
    from airflow.assets.manager import AssetManager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        model = session.scalars(select(AssetModel).where(AssetModel.name == asset.name)).one()
        event = AssetManager.register_asset_change(
            asset=model.to_serialized(), extra={"from_trigger": True, "payload": payload}, session=session
        )
        session.flush()
        return event.id


def run_consuming(dag_runner: Any, handler_dag: Any, event_ids: list[int], monkeypatch: Any) -> Any:
    """``dag.test()`` the handler DAG, its run consuming the given asset events as a scheduled run would."""
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent

    original = dagrun_module.get_or_create_dagrun

    def with_events(*args: Any, **kwargs: Any) -> Any:
        run = original(*args, **kwargs)
        session = kwargs["session"]
        for event_id in event_ids:
            run.consumed_asset_events.append(session.get(AssetEvent, event_id))
        session.commit()
        return run

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", with_events)
    return dag_runner.run_dag(handler_dag)


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
    wait_for(
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
