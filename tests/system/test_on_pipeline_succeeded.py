"""System test: ``dags/on_pipeline_succeeded.py`` on the stack — executions started outside Airflow
schedule the DAG through its AssetWatcher.

As a user runs it: the DAG is unpaused through the REST API (the dag-processor then registers its
watcher's trigger, which one of the stack's two triggerers runs); ``retraining`` executions are started
with boto3 on the local endpoint, as a SageMaker schedule or the console would; their status-change
events go through the seeded EventBridge rule to the queue ``sagemaker-pipeline-events``. Asserted from
the outside: the DAG's runs and their task's XCom (REST), the asset event (REST), the endpoint's steps.
"""

from __future__ import annotations

from typing import Any

from stack import AirflowApi
from tests.support.waiting import wait_until

DAG_ID = "on_pipeline_succeeded"
ASSET = "sagemaker-pipeline-retraining-succeeded"
PIPELINE = "retraining"


def _run_to_end(aws: Any, *, fail: bool) -> str:
    aws.controls.set_step_behaviour(PIPELINE, "Train", fail="injected: out of memory" if fail else None)
    sm = aws.client("sagemaker")
    arn = str(sm.start_pipeline_execution(PipelineName=PIPELINE)["PipelineExecutionArn"])
    wanted = "Failed" if fail else "Succeeded"
    wait_until(
        lambda: sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == wanted,
        timeout=120,
        interval=0.5,
        what=f"{arn} to be {wanted}",
    )
    return arn


def _asset_triggered_runs(api: AirflowApi) -> list[dict[str, Any]]:
    return [r for r in api.dag_runs(DAG_ID) if r["run_type"] == "asset_triggered"]


def test_a_succeeded_execution_started_outside_airflow_runs_the_dag(
    airflow_api: AirflowApi, stack_aws: Any
) -> None:
    airflow_api.wait_for_dag(DAG_ID)
    airflow_api.set_paused(DAG_ID, False)
    try:
        # The dag-processor registers the watcher's trigger at its next parse of the unpaused DAG.
        wait_until(
            lambda: [
                a for a in airflow_api.assets(name_pattern=ASSET) if a["name"] == ASSET and a["watchers"]
            ],
            timeout=180,
            interval=1.0,
            what=f"the watcher of {ASSET}",
        )
        before = {r["dag_run_id"] for r in _asset_triggered_runs(airflow_api)}
        failed = _run_to_end(stack_aws, fail=True)
        succeeded = _run_to_end(stack_aws, fail=False)

        (run,) = wait_until(
            lambda: [r for r in _asset_triggered_runs(airflow_api) if r["dag_run_id"] not in before],
            timeout=300,
            interval=1.0,
            what=f"an asset-triggered run of {DAG_ID}",
        )
        run = airflow_api.wait_for_run(DAG_ID, run["dag_run_id"])
        assert run["state"] == "success", airflow_api.task_instances(DAG_ID, run["dag_run_id"])

        registered = [
            s["Metadata"]["RegisterModel"]["Arn"]
            for s in stack_aws.steps(succeeded)
            if "RegisterModel" in s.get("Metadata", {})
        ]
        assert len(registered) == 1, registered
        # The task saw the event's extra (triggering_asset_events) and returned what it read.
        models = airflow_api.xcom(DAG_ID, run["dag_run_id"], "new_models")
        assert models == [
            {
                "pipeline_execution_arn": succeeded,
                "display_name": models[0]["display_name"],
                "status": "Succeeded",
                "model_package_arns": registered,
            }
        ], models

        (asset,) = [a for a in airflow_api.assets(name_pattern=ASSET) if a["name"] == ASSET]
        events = airflow_api.asset_events(asset_id=asset["id"])
        payloads = [e["extra"]["payload"] for e in events if e["extra"].get("from_trigger")]
        assert [p["pipeline_execution_arn"] for p in payloads] == [succeeded], payloads
        assert failed not in {p["pipeline_execution_arn"] for p in payloads}
        assert payloads[0]["pipeline_name"] == PIPELINE
        assert payloads[0]["model_package_arns"] == registered
    finally:
        airflow_api.set_paused(DAG_ID, True)
