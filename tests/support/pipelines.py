"""Helpers of the pipeline operator / sensor / trigger integration tests.

Everything runs against the local endpoint (``local_aws`` fixture) in Airflow DAG tests (``dag_runner``):
``dag.test()`` in-process, deferrable tasks with their triggers in line, retries in line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any, Self

from sagemaker_pipelines_provider.utils.backoff import BackoffPolicy

from tests.support.endpoint import ROLE_ARN, START_DATE, create_queue, executions, fast_endpoint, unique
from tests.support.waiting import wait_until

__all__ = ["ROLE_ARN", "START_DATE", "create_queue", "executions", "fast_endpoint", "unique", "wait_until"]

#: Small delays so that throttling and capacity waits cost milliseconds, not seconds.
FAST_BACKOFF = BackoffPolicy(
    base_delay=0.02,
    max_delay=0.2,
    max_attempts=25,
    budget_seconds=30,
    capacity_base_delay=0.05,
    capacity_max_delay=0.3,
)
POLL = 0.1


def processing_step(name: str, depends_on: Iterable[str] = (), **arguments: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"Name": name, "Type": "Processing", "Arguments": dict(arguments)}
    if depends_on:
        step["DependsOn"] = list(depends_on)
    return step


def training_step(name: str, depends_on: Iterable[str] = ()) -> dict[str, Any]:
    step: dict[str, Any] = {
        "Name": name,
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/models"},
            "RoleArn": ROLE_ARN,
        },
    }
    if depends_on:
        step["DependsOn"] = list(depends_on)
    return step


#: Parameters of the pipeline most tests use: every type, one without default.
PARAMETERS = [
    {"Name": "RunDate", "Type": "String"},
    {"Name": "Rows", "Type": "Integer", "DefaultValue": 10},
    {"Name": "Ratio", "Type": "Float", "DefaultValue": 0.5},
    {"Name": "Full", "Type": "Boolean", "DefaultValue": False},
]


def create_pipeline(
    local_aws: Any,
    name: str | None = None,
    steps: list[dict[str, Any]] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> str:
    """Create a pipeline on the endpoint (default: Prep -> Train, :data:`PARAMETERS`); return its name."""
    name = name or unique("pipe")
    definition = {
        "Version": "2020-12-01",
        "Parameters": PARAMETERS if parameters is None else parameters,
        "Steps": steps
        if steps is not None
        else [processing_step("Prep", Date={"Get": "Parameters.RunDate"}), training_step("Train", ["Prep"])],
    }
    local_aws.client("sagemaker").create_pipeline(
        PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN
    )
    return name


def calls(local_aws: Any, action: str, pipeline: str | None = None) -> list[dict[str, Any]]:
    """Recorded calls of ``action`` (to ``pipeline`` when given, by name or execution ARN)."""
    found = local_aws.controls.calls(action=action)
    if pipeline is None:
        return found
    return [c for c in found if _mentions(c.get("args") or {}, pipeline)]


def _mentions(args: dict[str, Any], pipeline: str) -> bool:
    name = str(args.get("PipelineName") or "")
    arn = str(args.get("PipelineExecutionArn") or "")
    return name == pipeline or name.endswith(f"/{pipeline}") or f":pipeline/{pipeline}/" in arn


def xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """An XCom value of a finished run (read from the metadata DB)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,
                key=key,
                dag_ids=dag_run.dag_id,
                task_ids=task_id,
                map_indexes=map_index,
            )
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


class _Background:
    """A daemon thread running ``_loop`` while the ``with`` block runs (stopped and joined at its end)."""

    def __init__(self, local_aws: Any, pipeline: str) -> None:
        self.local_aws = local_aws
        self.pipeline = pipeline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        raise NotImplementedError


class CallbackAnswerer(_Background):
    """Answers the waiting callback steps of ``pipeline`` from a background thread (through our hook).

    Finds tokens in ListPipelineExecutionSteps (``Metadata.Callback.CallbackToken``), as a reconciler would.
    """

    def __init__(self, local_aws: Any, pipeline: str, outputs: dict[str, Any]) -> None:
        super().__init__(local_aws, pipeline)
        self.outputs = outputs
        self.answered: list[str] = []

    def _loop(self) -> None:
        from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
        from sagemaker_pipelines_provider.utils.tokens import idempotency_token

        hook = SageMakerPipelineHook(aws_conn_id=None, region_name="us-east-1", backoff_policy=FAST_BACKOFF)
        sagemaker = self.local_aws.client("sagemaker")
        while not self._stop.is_set():
            for summary in executions(self.local_aws, self.pipeline):
                if summary["PipelineExecutionStatus"] != "Executing":
                    continue
                steps = sagemaker.list_pipeline_execution_steps(
                    PipelineExecutionArn=summary["PipelineExecutionArn"]
                )
                for step in steps["PipelineExecutionSteps"]:
                    token = (step.get("Metadata", {}).get("Callback") or {}).get("CallbackToken")
                    if step["StepStatus"] == "Executing" and token and token not in self.answered:
                        hook.send_step_success(token, self.outputs, idempotency_token("test-answer", token))
                        self.answered.append(token)
            time.sleep(0.05)


class Stopper(_Background):
    """Stops every execution of ``pipeline`` (with plain boto3) shortly after it starts executing."""

    def __init__(self, local_aws: Any, pipeline: str, after: float = 0.2) -> None:
        super().__init__(local_aws, pipeline)
        self.after = after
        self.stopped: list[str] = []

    def _loop(self) -> None:
        sagemaker = self.local_aws.client("sagemaker")
        while not self._stop.is_set():
            for summary in executions(self.local_aws, self.pipeline):
                arn = summary["PipelineExecutionArn"]
                if summary["PipelineExecutionStatus"] == "Executing" and arn not in self.stopped:
                    time.sleep(self.after)
                    sagemaker.stop_pipeline_execution(
                        PipelineExecutionArn=arn, ClientRequestToken="s" * 40 + arn[-12:]
                    )
                    self.stopped.append(arn)
            time.sleep(0.03)


class Failures:
    """An ``on_failure_callback`` / ``on_retry_callback`` that records each exception message per task."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, context: Any) -> None:
        self.messages.append(str(context.get("exception")))


def callback_step(name: str, queue_url: str, depends_on: Iterable[str] = ()) -> dict[str, Any]:
    """A Callback step: it waits until its token is answered (nobody answers it unless a test does)."""
    step: dict[str, Any] = {
        "Name": name,
        "Type": "Callback",
        "Arguments": {"input": "x"},
        "SqsQueueUrl": queue_url,
        "OutputParameters": [{"OutputName": "ok", "OutputType": "Boolean"}],
    }
    if depends_on:
        step["DependsOn"] = list(depends_on)
    return step


def task_state_rows(dag_run: Any, task_id: str) -> list[Any]:
    """The ``task_state_store`` rows of one task instance (read from the metadata DB)."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskStateStoreModel).where(
                TaskStateStoreModel.dag_id == dag_run.dag_id,
                TaskStateStoreModel.run_id == dag_run.run_id,
                TaskStateStoreModel.task_id == task_id,
            )
        ).all()
        session.expunge_all()
        return list(rows)


def clear_and_run_again(dag: Any, dag_run: Any, task_id: str) -> str | None:
    """Clear a finished task instance as the UI does, then run its next try in this process (its deferrals
    with their triggers in line, as ``dag.test()`` does); return the task instance's final state.

    Uses ``dag.test()``'s own runner for one task instance (``airflow.sdk.definitions.dag._run_task``):
    ``dag.test()`` itself would delete the DAG run, and the task's ``task_state_store`` with it.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    def find(session: Any) -> Any:
        return session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        ).one()

    with create_session() as session:
        clear_task_instances([find(session)], session, dag_run_state=DagRunState.RUNNING)
    with create_session() as session:  # what the scheduler does next: schedule the new try
        ti = find(session)
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        session.refresh(ti)
        session.expunge(ti)
    _run_task(ti=ti, task=dag.task_dict[task_id], run_triggerer=True)
    with create_session() as session:  # and what it does after: end the DAG run (as dag.test() leaves it)
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_run.dag_id, DagRun.run_id == dag_run.run_id)
        ).one()
        run.dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        run.update_state(session=session)
        session.commit()
        state = find(session).state
        return None if state is None else str(state)


def operator(**kwargs: Any) -> Any:
    """A ``SageMakerPipelineOperator`` (task ``run``) with the tests' short poll interval and backoff."""
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    kwargs.setdefault("task_id", "run")
    kwargs.setdefault("poll_interval", POLL)
    kwargs.setdefault("backoff_policy", FAST_BACKOFF)
    return SageMakerPipelineOperator(**kwargs)


def dag(dag_id: str | None = None, **kwargs: Any) -> Any:
    """A daily DAG starting :data:`START_DATE`, no catch-up, with a unique id unless given."""
    from airflow.sdk import DAG

    kwargs.setdefault("schedule", "@daily")
    kwargs.setdefault("start_date", START_DATE)
    kwargs.setdefault("catchup", False)
    return DAG(dag_id or unique("op"), **kwargs)
