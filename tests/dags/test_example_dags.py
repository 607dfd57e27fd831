"""Every example DAG of ``dags/`` runs green, in-process, against the local endpoint.

The DAG files are parsed from the repository's ``dags/`` folder (as the dag processor would) with the
provider's option ``[sagemaker_pipelines] default_poll_interval`` set low
(``AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL`` = 0.2), so the pipeline tasks poll every 0.2 s;
the endpoint's simulated steps take 0.05 s. They run once per session (the ``example_runs`` fixture,
:mod:`tests.support.example_dags`), shared with the IAM policy and no-secret-in-logs checks; the
executions of each pipeline are those right after the example's run.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.example_dags import ExampleRuns

pytestmark = pytest.mark.integration


def test_retraining_chain_runs_green(example_runs: ExampleRuns, dag_runner: Any) -> None:
    run = example_runs.runs["retraining_chain"]
    states = dag_runner.task_states(run)
    assert run.state == "success", states
    assert {k: v for k, v in states.items() if not k.endswith(".answer_failure")} == dict.fromkeys(
        [k for k in states if not k.endswith(".answer_failure")], "success"
    ), (states, durations(run))
    found = example_runs.executions["retraining_chain"]
    for pipeline in ("features", "training", "evaluation"):
        (summary,) = found[pipeline]
        assert summary["PipelineExecutionStatus"] == "Succeeded"
        assert summary["PipelineExecutionDisplayName"] == f"{pipeline}-20260105"
    extra = run.get_task_instance("retrain.publish_model").xcom_pull(task_ids="retrain.publish_model")
    assert extra["model_package_arn"].startswith("arn:aws:sagemaker:")
    assert extra["pipeline_execution_arn"] == found["evaluation"][0]["PipelineExecutionArn"]


def durations(run: Any) -> dict[str, float]:
    return {
        ti.task_id: round((ti.end_date - ti.start_date).total_seconds(), 1)
        for ti in run.get_task_instances()
        if ti.start_date and ti.end_date
    }


def test_historical_retraining_one_date_emits_the_model_event(
    example_runs: ExampleRuns, dag_runner: Any
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    run = example_runs.runs["historical_retraining"]
    assert run.state == "success", dag_runner.task_states(run)
    (summary,) = example_runs.executions["historical_retraining"]["retraining"]
    assert summary["PipelineExecutionStatus"] == "Succeeded"
    # dag.test() infers the manual interval ending at the logical date (2025-06-02)
    assert summary["PipelineExecutionDisplayName"] == "retraining-20250601"
    with create_session() as session:
        events = [e for e in session.query(AssetEvent) if e.source_run_id == run.run_id]
        extras = [dict(e.extra) for e in events]
    assert len(extras) == 1, extras
    assert extras[0]["pipeline_execution_arn"] == summary["PipelineExecutionArn"]
    assert extras[0]["model_package_arn"].startswith("arn:aws:sagemaker:")


def test_retraining_consumer_reads_the_latest_model(example_runs: ExampleRuns, dag_runner: Any) -> None:
    # The consumer's manual run comes right after the historical retraining (the producer).
    assert example_runs.runs["historical_retraining"].state == "success"
    arn = example_runs.executions["historical_retraining"]["retraining"][0]["PipelineExecutionArn"]
    run = example_runs.runs["retraining_consumer"]
    assert run.state == "success", dag_runner.task_states(run)
    models = run.get_task_instance("new_models").xcom_pull(task_ids="new_models")
    assert arn in [m["pipeline_execution_arn"] for m in models], models


def test_callback_handler_dag_answers_a_callback_from_its_asset_event(example_runs: ExampleRuns) -> None:
    """The triggerer's path: the watcher's trigger fires, the event is registered on the asset, the
    scheduler creates an asset-triggered run consuming it; here the same steps, then the run is driven."""
    callback = example_runs.callback
    assert callback["payload"]["pipeline_execution_arn"] == callback["arn"]
    assert callback["queued"] == 1  # the asset event queued one run of the handler DAG
    assert str(example_runs.runs["callback_handler_dag"].state) == "success"
    assert callback["status"] == "Succeeded", callback["described"]


def test_on_pipeline_succeeded_runs_for_an_execution_started_outside_airflow(
    example_runs: ExampleRuns,
) -> None:
    """The watcher's trigger fires for the ``retraining`` execution boto3 started (and for earlier ones
    of the queue); the asset-triggered run's task reads every event it consumed."""
    outcome = example_runs.outcome
    run = example_runs.runs["on_pipeline_succeeded"]
    assert str(run.state) == "success"
    ours = [p for p in outcome["payloads"] if p["pipeline_execution_arn"] == outcome["arn"]]
    assert len(ours) == 1, outcome["payloads"]
    assert ours[0]["status"] == "Succeeded" and ours[0]["pipeline_name"] == "retraining"
    assert outcome["registered"] and ours[0]["model_package_arns"] == outcome["registered"]
    models = run.get_task_instance("new_models").xcom_pull(task_ids="new_models")
    by_arn = {m["pipeline_execution_arn"]: m for m in models}
    assert sorted(by_arn) == sorted(p["pipeline_execution_arn"] for p in outcome["payloads"]), models
    assert by_arn[outcome["arn"]]["model_package_arns"] == outcome["registered"]
