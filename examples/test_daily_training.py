"""Testing your own DAG against the local endpoint, as a user of the provider would.

Nothing here comes from the repository's test harness: the fixtures ``local_aws`` and ``dag_runner`` come
from the pytest plugin installed with ``airflow-provider-sagemaker-pipelines[local]``, which also gives the
session a scratch Airflow home (SQLite) when ``AIRFLOW_HOME`` is not set. Run it with ``pytest examples``.

``dags/daily_training.py`` is the short example of the README.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

DAG_FILE = Path(__file__).parent / "dags" / "daily_training.py"


@pytest.fixture
def daily_training(monkeypatch):
    # poll fast: [sagemaker_pipelines] default_poll_interval, read when the DAG file is parsed
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL", "0.1")
    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["daily_training"]


@pytest.fixture
def sagemaker(local_aws):
    local_aws.seed()  # the demo pipelines, queue, bucket... of `sagemaker-pipelines-local seed`
    local_aws.controls.set_default_step_duration(0.05)
    return local_aws.client("sagemaker")


def only_execution(sagemaker):
    (execution,) = sagemaker.list_pipeline_executions(PipelineName="retraining")["PipelineExecutionSummaries"]
    return execution


def test_trigger_button_run(daily_training, sagemaker, dag_runner):
    """A manual run without a logical date, what the UI's Trigger button and `airflow dags trigger` make."""
    run = dag_runner.run_dag(daily_training, logical_date=None)

    assert run.state == "success", dag_runner.task_states(run)
    execution = only_execution(sagemaker)
    assert execution["PipelineExecutionStatus"] == "Succeeded"
    assert execution["PipelineExecutionDisplayName"] == f"train-{run.run_after:%Y%m%d}"


def test_scheduled_run_of_a_date(daily_training, sagemaker, dag_runner):
    run = dag_runner.run_dag(daily_training, logical_date=dt.datetime(2026, 3, 2, tzinfo=dt.UTC))

    assert run.state == "success", dag_runner.task_states(run)
    execution = only_execution(sagemaker)
    assert execution["PipelineExecutionDisplayName"] == "train-20260302"
    parameters = sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution["PipelineExecutionArn"]
    )["PipelineParameters"]
    assert {"Name": "DataStartDate", "Value": "2026-03-02"} in parameters


def test_a_failed_training_fails_the_task_with_its_reason(daily_training, local_aws, sagemaker, dag_runner):
    local_aws.controls.set_step_behaviour("retraining", "Train", fail="AlgorithmError: out of memory")

    run = dag_runner.run_dag(daily_training, logical_date=None)

    assert run.state == "failed"
    assert dag_runner.task_states(run) == {"train": "failed"}
    assert only_execution(sagemaker)["PipelineExecutionStatus"] == "Failed"
