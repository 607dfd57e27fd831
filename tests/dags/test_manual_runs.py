"""Manual runs without a logical date work for every example DAG.

Airflow 3's Trigger button, ``airflow dags trigger`` and ``POST /api/v2/dags/{id}/dagRuns`` with
``{"logical_date": null}`` create a run with no logical date and no data interval: ``ds``, ``ts_nodash``,
``data_interval_start`` are undefined in its templates and rendering them fails (StrictUndefined). Here the
runs are created by Airflow's own code for those entry points — the REST API's request body
(``TriggerDAGRunPostBody.validate_context``) and ``DAG.create_dagrun``, or the CLI's ``trigger_dag`` — and
driven to the end by ``scheduler_loop`` as the scheduler and triggerer would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.example_dags import executions, load_dag, prepare

pytestmark = pytest.mark.integration

#: SageMaker's PipelineExecutionDisplayName pattern (botocore's service model), anchored.
DISPLAY_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}$")


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL", "0.2")
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def trigger_like_the_ui(dag: Any, dag_runner: Any) -> str:
    """Create the run the REST API creates for ``{"logical_date": null}``; return its run id."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from tests.support import scheduler_loop

    dag_runner.sync_dag(dag)
    scheduler_loop.unpause(dag.dag_id)
    with create_session() as session:
        serialized = DBDagBag().get_latest_version_of_dag(dag.dag_id, session=session)
        assert serialized is not None
        params = TriggerDAGRunPostBody.model_validate({"logical_date": None}).validate_context(serialized)
        run = serialized.create_dagrun(
            run_id=params["run_id"],
            logical_date=params["logical_date"],
            data_interval=params["data_interval"],
            run_after=params["run_after"],
            conf=params["conf"],
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.UI,
            triggering_user_name="ui-user",
            state=DagRunState.QUEUED,
            partition_key=params["partition_key"],
            partition_date=params["partition_date"],
            session=session,
        )
        return str(run.run_id)


def run_like_the_ui(dag: Any, dag_runner: Any) -> Any:
    from tests.support import scheduler_loop

    run_id = trigger_like_the_ui(dag, dag_runner)
    (run,) = scheduler_loop.run_dag_runs(dag, [run_id], timeout=120)
    assert run.logical_date is None and run.data_interval_start is None and str(run.run_type) == "manual"
    return run


def assert_display_names(local_aws: Any, pipeline: str, prefix: str, run: Any, fmt: str) -> None:
    (summary,) = executions(local_aws, pipeline)
    assert summary["PipelineExecutionStatus"] == "Succeeded", summary
    name = summary["PipelineExecutionDisplayName"]
    assert DISPLAY_NAME.match(name), name
    assert name == f"{prefix}-{run.run_after.strftime(fmt)}", (name, run.run_after)


def test_retraining_chain(local_aws: Any, dag_runner: Any) -> None:
    prepare(local_aws)
    run = run_like_the_ui(load_dag("retraining_chain"), dag_runner)
    assert str(run.state) == "success", dag_runner.task_states(run)
    for pipeline in ("features", "training", "evaluation"):
        assert_display_names(local_aws, pipeline, pipeline, run, "%Y%m%d")
    (features,) = executions(local_aws, "features")
    parameters = local_aws.client("sagemaker").list_pipeline_parameters_for_execution(
        PipelineExecutionArn=features["PipelineExecutionArn"]
    )["PipelineParameters"]
    assert {"Name": "InputDataUrl", "Value": f"s3://sagemaker-local-demo/raw/{run.run_after:%Y-%m-%d}/"} in (
        parameters
    )


def test_historical_retraining_retrains_the_day_before_the_trigger(local_aws: Any, dag_runner: Any) -> None:
    import datetime as dt

    prepare(local_aws)
    run = run_like_the_ui(load_dag("historical_retraining"), dag_runner)
    assert str(run.state) == "success", dag_runner.task_states(run)
    day_before = run.run_after - dt.timedelta(days=1)
    (summary,) = executions(local_aws, "retraining")
    assert summary["PipelineExecutionDisplayName"] == f"retraining-{day_before:%Y%m%d}"
    parameters = {
        p["Name"]: p["Value"]
        for p in local_aws.client("sagemaker").list_pipeline_parameters_for_execution(
            PipelineExecutionArn=summary["PipelineExecutionArn"]
        )["PipelineParameters"]
    }
    assert (parameters["DataStartDate"], parameters["DataEndDate"]) == (
        f"{day_before:%Y-%m-%d}",
        f"{run.run_after:%Y-%m-%d}",
    )


def test_mirror_pipeline(local_aws: Any, dag_runner: Any) -> None:
    prepare(local_aws)
    run = run_like_the_ui(load_dag("mirror_pipeline"), dag_runner)
    assert str(run.state) == "success", dag_runner.task_states(run)
    assert_display_names(local_aws, "evaluation", "airflow", run, "%Y%m%dT%H%M%S")


def test_retraining_consumer(local_aws: Any, dag_runner: Any) -> None:
    prepare(local_aws)
    run = run_like_the_ui(load_dag("retraining_consumer"), dag_runner)
    assert str(run.state) == "success", dag_runner.task_states(run)


def test_callback_handler_dag_without_an_event_skips(local_aws: Any, dag_runner: Any) -> None:
    """Triggered by hand there is no asset event: nothing to answer, the run still ends well."""
    prepare(local_aws)
    run = run_like_the_ui(load_dag("callback_handler_dag"), dag_runner)
    assert str(run.state) == "success", dag_runner.task_states(run)
    assert set(dag_runner.task_states(run).values()) == {"skipped"}


def test_on_pipeline_succeeded_without_an_event_has_nothing_to_do(local_aws: Any, dag_runner: Any) -> None:
    """Triggered by hand there is no pipeline event: the task reports no execution, the run ends well."""
    prepare(local_aws)
    run = run_like_the_ui(load_dag("on_pipeline_succeeded"), dag_runner)
    assert str(run.state) == "success", dag_runner.task_states(run)
    assert run.get_task_instance("new_models").xcom_pull(task_ids="new_models") == []


def test_the_dag_runner_manual_run_is_the_run_the_cli_creates(local_aws: Any, dag_runner: Any) -> None:
    """``dag_runner.run_dag(dag, logical_date=None)`` (``dag.test``) makes the same kind of run as
    ``airflow dags trigger`` (its ``trigger_dag``): no logical date, no data interval, manual."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import delete

    prepare(local_aws)
    dag = load_dag("historical_retraining")
    dag_runner.sync_dag(dag)
    cli_run = trigger_dag(dag.dag_id, triggered_by=DagRunTriggeredByType.CLI, logical_date=None)
    assert cli_run is not None
    try:
        test_run = dag_runner.run_dag(dag, logical_date=None)
        for run in (cli_run, test_run):
            assert run.logical_date is None
            assert (run.data_interval_start, run.data_interval_end) == (None, None)
            assert str(run.run_type) == "manual"
            assert run.run_after is not None
        assert str(test_run.state) == "success", dag_runner.task_states(test_run)
    finally:  # the CLI's run stays queued: no later test of this DAG may pick it up
        with create_session() as session:
            session.execute(delete(DagRun).where(DagRun.run_id == cli_run.run_id))
