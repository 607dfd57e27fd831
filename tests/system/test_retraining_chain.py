"""System test (a): ``retraining_chain`` on the stack, triggered through the REST API.

features (pipeline) -> validate_features (Glue) -> training (pipeline; its Callback step is answered by
the DAG after an ECS validation task) -> evaluation (pipeline, registers a model) -> publish_model (asset
event). Asserted from the outside only: the run's state and task instances (REST), the asset event (REST
``/api/v2/assets/events``), and the local endpoint's execution list and call record.

Unpausing the DAG (as a user must for a triggered run to start) also makes the scheduler create the
DAG's latest scheduled run (``catchup=False``); the tests wait for it too and count executions against
every run that started during the test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stack import AirflowApi

DAG_ID = "retraining_chain"
#: pipeline -> the task that starts its execution
PIPELINE_TASKS = {
    "features": "retrain.features",
    "training": "retrain.training",
    "evaluation": "retrain.evaluation",
}
ANSWER_TASK = "retrain.training_callback.answer"
#: The worker's hostname: the stack gives each process its service's name (stack.hostname).
WORKER = "worker"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def assert_retraining_run(api: AirflowApi, aws: Any, run: dict[str, Any], since: str) -> None:
    """Everything a successful retraining_chain run leaves behind, read from the REST API and the
    endpoint; ``since``: when the test began (runs started after it are the test's)."""
    run_id = run["dag_run_id"]
    assert run["state"] == "success", api.task_instances(DAG_ID, run_id)
    instances = {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run_id)}

    # Every task that ran, ran on the Celery worker (the only executor of the stack).
    ran = {task: ti["hostname"] for task, ti in instances.items() if ti["state"] == "success"}
    assert set(ran.values()) == {WORKER}, ran
    assert instances[ANSWER_TASK]["state"] == "success"
    assert instances["retrain.training_callback.answer_failure"]["state"] == "skipped"

    # This run started one execution per pipeline, each Succeeded; no run started two (every execution
    # on the endpoint belongs to one of the runs of the test, one per pipeline and run).
    runs = [r for r in api.wait_until_idle(DAG_ID) if r["start_date"] and r["start_date"] >= since]
    assert run_id in {r["dag_run_id"] for r in runs}
    arns = {
        p: api.xcom(DAG_ID, run_id, task, key="pipeline_execution_arn") for p, task in PIPELINE_TASKS.items()
    }
    for pipeline in PIPELINE_TASKS:
        executions = aws.executions(pipeline)
        assert len(executions) == len(runs), (pipeline, executions, runs)
        mine = [e for e in executions if e["PipelineExecutionArn"] == arns[pipeline]]
        assert [e["PipelineExecutionStatus"] for e in mine] == ["Succeeded"], (pipeline, executions)

    # The training's Callback step was answered once, with the DAG's outputs, by the answer task.
    callbacks = [s for s in aws.steps(arns["training"]) if "Callback" in s.get("Metadata", {})]
    assert len(callbacks) == 1 and callbacks[0]["StepStatus"] == "Succeeded", callbacks
    callback = callbacks[0]["Metadata"]["Callback"]
    outputs = {p["Name"]: p["Value"] for p in callback.get("OutputParameters", [])}
    assert outputs.get("validation_passed") in ("true", "True"), outputs
    answers = [
        call
        for call in aws.controls.calls(action="SendPipelineExecutionStepSuccess")
        if call["args"].get("CallbackToken") == callback["CallbackToken"]
    ]
    assert [a["status"] for a in answers] == [200], answers
    assert aws.controls.calls(action="SendPipelineExecutionStepFailure") == []

    # The model asset event: the evaluation's execution and the model package it registered.
    registered = [
        s["Metadata"]["RegisterModel"]["Arn"]
        for s in aws.steps(arns["evaluation"])
        if "RegisterModel" in s["Metadata"]
    ]
    assert len(registered) == 1, registered
    events = api.asset_events(source_dag_id=DAG_ID, source_run_id=run_id)
    assert len(events) == 1, events
    event = events[0]
    assert event["uri"] == "sagemaker://model-package-group/demo-models"
    assert event["source_task_id"] == "retrain.publish_model"
    assert event["extra"]["pipeline_execution_arn"] == arns["evaluation"]
    assert event["extra"]["model_package_arn"] == registered[0]
    package = aws.client("sagemaker").describe_model_package(ModelPackageName=registered[0])
    assert package["ModelPackageGroupName"] == "demo-models"


def test_retraining_chain_run_with_a_logical_date(airflow_api: AirflowApi, stack_aws: Any) -> None:
    """A run created through the REST API with a logical date (as a scheduled run has): it succeeds on
    the Celery worker, its callback is answered once, and the model asset event is recorded."""
    since = _now()
    run = airflow_api.trigger(DAG_ID, logical_date="2026-01-01T00:00:00Z")
    run = airflow_api.wait_for_run(DAG_ID, run["dag_run_id"])
    assert run["logical_date"].startswith("2026-01-01")
    assert_retraining_run(airflow_api, stack_aws, run, since)


def test_retraining_chain_manual_run_without_logical_date(airflow_api: AirflowApi, stack_aws: Any) -> None:
    """(a) As the UI's Trigger button does: ``{"logical_date": null}`` -> success, the callback answered
    by the Celery worker, the model asset event recorded."""
    since = _now()
    run = airflow_api.trigger(DAG_ID)
    assert run["logical_date"] is None
    run = airflow_api.wait_for_run(DAG_ID, run["dag_run_id"])
    assert_retraining_run(airflow_api, stack_aws, run, since)
