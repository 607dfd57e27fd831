"""Every example DAG of ``dags/`` runs green, in-process, against the local endpoint.

The DAG files are parsed from the repository's ``dags/`` folder (as the dag processor would) with the
provider's option ``[sagemaker_pipelines] default_poll_interval`` set low
(``AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL`` = 0.2), so the pipeline tasks poll every 0.2 s;
the endpoint's simulated steps take 0.05 s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from example_dags import FAST_ENV, executions, load_dag, prepare

pytestmark = pytest.mark.integration


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def _release_leases() -> Any:
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def test_retraining_chain_runs_green(local_aws: Any, dag_runner: Any, example_env: None) -> None:
    prepare(local_aws)
    dag = load_dag("retraining_chain")
    run = dag_runner.run_dag(dag, logical_date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    states = dag_runner.task_states(run)
    assert run.state == "success", states
    assert {k: v for k, v in states.items() if not k.endswith(".answer_failure")} == dict.fromkeys(
        [k for k in states if not k.endswith(".answer_failure")], "success"
    ), (states, durations(run))
    for pipeline in ("features", "training", "evaluation"):
        (summary,) = executions(local_aws, pipeline)
        assert summary["PipelineExecutionStatus"] == "Succeeded"
        assert summary["PipelineExecutionDisplayName"] == f"{pipeline}-20260105"
    extra = run.get_task_instance("retrain.publish_model").xcom_pull(task_ids="retrain.publish_model")
    assert extra["model_package_arn"].startswith("arn:aws:sagemaker:")
    assert extra["pipeline_execution_arn"] == executions(local_aws, "evaluation")[0]["PipelineExecutionArn"]


def durations(run: Any) -> dict[str, float]:
    return {
        ti.task_id: round((ti.end_date - ti.start_date).total_seconds(), 1)
        for ti in run.get_task_instances()
        if ti.start_date and ti.end_date
    }


def test_historical_retraining_one_date_emits_the_model_event(
    local_aws: Any, dag_runner: Any, example_env: None
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    prepare(local_aws)
    dag = load_dag("historical_retraining")
    run = dag_runner.run_dag(dag, logical_date=dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    assert run.state == "success", dag_runner.task_states(run)
    (summary,) = executions(local_aws, "retraining")
    assert summary["PipelineExecutionStatus"] == "Succeeded"
    # dag.test() infers the manual interval ending at the logical date
    assert summary["PipelineExecutionDisplayName"] == "retraining-20250601"
    with create_session() as session:
        events = [e for e in session.query(AssetEvent) if e.source_run_id == run.run_id]
        extras = [dict(e.extra) for e in events]
    assert len(extras) == 1, extras
    assert extras[0]["pipeline_execution_arn"] == summary["PipelineExecutionArn"]
    assert extras[0]["model_package_arn"].startswith("arn:aws:sagemaker:")


def test_retraining_consumer_reads_the_latest_model(
    local_aws: Any, dag_runner: Any, example_env: None
) -> None:
    prepare(local_aws)
    producer = dag_runner.run_dag(
        load_dag("historical_retraining"), logical_date=dt.datetime(2025, 7, 2, tzinfo=dt.UTC)
    )
    assert producer.state == "success"
    arn = executions(local_aws, "retraining")[0]["PipelineExecutionArn"]
    run = dag_runner.run_dag(load_dag("retraining_consumer"), logical_date=None)
    assert run.state == "success", dag_runner.task_states(run)
    models = run.get_task_instance("new_models").xcom_pull(task_ids="new_models")
    assert arn in [m["pipeline_execution_arn"] for m in models], models


def test_callback_handler_dag_answers_a_callback_from_its_asset_event(
    local_aws: Any, dag_runner: Any, example_env: None
) -> None:
    """The triggerer's path: the watcher's trigger fires, the event is registered on the asset, the
    scheduler creates an asset-triggered run consuming it; here the same steps, then the run is driven."""
    import asyncio

    import scheduler_loop
    from airflow.assets.manager import AssetManager
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.sdk import timezone
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackEventTrigger

    prepare(local_aws)
    dag = load_dag("callback_handler_dag")
    dag_runner.sync_dag(dag)
    scheduler_loop.unpause(dag.dag_id)
    sm = local_aws.client("sagemaker")
    arn = sm.start_pipeline_execution(
        PipelineName="scheduled-training",
        PipelineExecutionDisplayName="scheduled-training-event",
        ClientRequestToken="event-driven-test-token-0123456789abcdef",
    )["PipelineExecutionArn"]

    condition = dag.timetable.asset_condition
    asset = condition.objects[0] if hasattr(condition, "objects") else condition
    watcher_trigger = asset.watchers[0].trigger
    trigger = SageMakerCallbackEventTrigger(**{**watcher_trigger.serialize()[1], "wait_time_seconds": 1})

    async def first_event() -> Any:
        async for event in trigger.run():
            return event
        return None

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=30))
    assert event.payload["pipeline_execution_arn"] == arn
    with create_session() as session:
        model = session.query(AssetModel).filter(AssetModel.name == asset.name).one()
        asset_event = AssetManager.register_asset_change(
            asset=model, extra={"from_trigger": True, "payload": event.payload}, session=session
        )
        assert session.query(AssetDagRunQueue).filter_by(target_dag_id=dag.dag_id).count() == 1
        scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        now = timezone.utcnow()
        run = scheduler_dag.create_dagrun(
            run_id=f"asset_triggered__{now.isoformat()}",
            logical_date=None,
            data_interval=None,
            run_after=now,
            run_type=DagRunType.ASSET_TRIGGERED,
            triggered_by=DagRunTriggeredByType.ASSET,
            state=DagRunState.QUEUED,
            session=session,
        )
        run.consumed_asset_events.append(asset_event)
        run_id = run.run_id
    (final,) = scheduler_loop.run_dag_runs(dag, [run_id], timeout=90)
    assert str(final.state) == "success"
    described = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    for _ in range(100):
        if described["PipelineExecutionStatus"] != "Executing":
            break
        import time

        time.sleep(0.1)
        described = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionStatus"] == "Succeeded", described
