"""SageMakerPipelineOperator under pressure: throttling on every action, and a concurrency cap.

The 300-start test runs the operator's real ``execute`` (start path with its ResourceLimitExceeded
handling, synchronous wait) from 30 threads at once, outside ``dag.test()``: ``dag.test()`` runs task
instances one after another at about a second each, so it could neither create the pressure nor finish
300 tasks in time. Its Airflow runtime context is reduced to what the operator reads (``ti`` identity and
``xcom_push``, ``task_state_store``), and the 300 operators share one hook (a boto3 SageMaker client costs
about 0.4 s to build).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.pipelines import (
    FAST_BACKOFF,
    POLL,
    Failures,
    callback_step,
    calls,
    create_pipeline,
    create_queue,
    dag,
    executions,
    fast_endpoint,
    operator,
    processing_step,
    wait_until,
    xcom,
)

pytestmark = pytest.mark.integration


def test_all_tasks_succeed_with_30_percent_throttling_on_every_action(
    local_aws: Any, dag_runner: Any
) -> None:
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    local_aws.controls.set_faults(action="*", throttle_rate=0.3, seed=20240101)
    with dag() as d:
        sync = operator(task_id="sync", pipeline_name=pipeline, parameters={"RunDate": "a"})
        deferred = operator(
            task_id="deferred", pipeline_name=pipeline, parameters={"RunDate": "b"}, deferrable=True
        )
        started = operator(
            task_id="started", pipeline_name=pipeline, parameters={"RunDate": "c"}, wait_for_completion=False
        )
        watch = SageMakerPipelineExecutionSensor(
            task_id="watch",
            pipeline_execution_arn="{{ ti.xcom_pull(task_ids='started', key='pipeline_execution_arn') }}",
            poke_interval=POLL,
            deferrable=True,
        )
        sync >> deferred >> started >> watch
    run = dag_runner.run_dag(d)
    local_aws.controls.clear_faults()

    assert dag_runner.task_states(run) == {
        name: "success" for name in ("sync", "deferred", "started", "watch")
    }
    sagemaker_calls = [c for c in local_aws.controls.calls() if c["service"] == "sagemaker"]
    throttled = [c["action"] for c in sagemaker_calls if c.get("error_code") == "ThrottlingException"]
    # About 30 % of the calls were throttled (wide bounds: a few dozen calls), spread over several actions.
    assert len(sagemaker_calls) >= 20
    assert 0.08 <= len(throttled) / len(sagemaker_calls) <= 0.6, (len(throttled), len(sagemaker_calls))
    assert len(set(throttled)) >= 2, throttled
    assert len(executions(local_aws, pipeline)) == 3
    assert all(e["PipelineExecutionStatus"] == "Succeeded" for e in executions(local_aws, pipeline))
    assert xcom(run, "watch")["pipeline_execution_arn"] == xcom(run, "started")["pipeline_execution_arn"]


def test_resource_limit_exceeded_defers_the_start_until_there_is_room(
    local_aws: Any, dag_runner: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    fast_endpoint(local_aws, step_seconds=60)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Only")])
    local_aws.controls.set_concurrency_cap(pipeline, 1)
    sagemaker = local_aws.client("sagemaker")
    blocker = sagemaker.start_pipeline_execution(PipelineName=pipeline)["PipelineExecutionArn"]

    def free_capacity_once_refused() -> None:
        """Once a start was refused, make steps short and stop the execution holding the only slot."""

        def refused() -> bool:
            return any(c["error_code"] for c in calls(local_aws, "StartPipelineExecution"))

        wait_until(refused, timeout=120, interval=0.1, what="a refused start")
        local_aws.controls.set_step_behaviour(pipeline, "Only", duration=0.3)
        sagemaker.stop_pipeline_execution(PipelineExecutionArn=blocker, ClientRequestToken="b" * 40)

    with dag() as d:
        SageMakerPipelineOperator.partial(
            task_id="run",
            pipeline_name=pipeline,
            wait_for_completion=False,
            deferrable=True,
            backoff_policy=FAST_BACKOFF,
        ).expand(display_name=["first", "second", "third"])
    helper = threading.Thread(target=free_capacity_once_refused, daemon=True)
    helper.start()
    run = dag_runner.run_dag(d)
    helper.join(timeout=5)
    log = capfd.readouterr().out
    assert dag_runner.task_states(run) == {"run[0]": "success", "run[1]": "success", "run[2]": "success"}
    rejected = [c for c in calls(local_aws, "StartPipelineExecution", pipeline) if c["error_code"]]
    assert rejected and {c["error_code"] for c in rejected} == {"ResourceLimitExceeded"}
    assert "deferring the start" in log
    ours = [e for e in executions(local_aws, pipeline) if e["PipelineExecutionArn"] != blocker]
    assert sorted(e["PipelineExecutionDisplayName"] for e in ours) == ["first", "second", "third"]
    assert local_aws.controls.peak_concurrency(pipeline) == 1


@pytest.mark.parametrize("bound", ["execution_timeout", "capacity_budget_seconds"])
@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_capacity_wait_ends_at_its_bound_and_starts_nothing_after_it(
    local_aws: Any, dag_runner: Any, deferrable: bool, bound: str
) -> None:
    """The pipeline's only slot is held by an execution that never ends (its callback is never answered).
    The task waits for capacity until its execution_timeout (or the backoff policy's capacity budget), then
    fails with "No capacity within ..."; once that moment has passed the slot frees, and nothing starts."""
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[callback_step("Approve", queue)])
    local_aws.controls.set_concurrency_cap(pipeline, 1)
    blocker_token = "blocker-" + "b" * 32
    local_aws.client("sagemaker").start_pipeline_execution(
        PipelineName=pipeline, ClientRequestToken=blocker_token
    )
    limit = 8.0  # slack for a loaded machine: the task must reach its capacity wait well before the bound
    done = threading.Event()

    def free_the_slot_after_the_bound() -> None:
        """The bound ends at most ``limit`` seconds after the first refused start (it is set before it); the
        slot frees 2 s later."""

        def refused() -> list[dict[str, Any]]:
            return [c for c in calls(local_aws, "StartPipelineExecution", pipeline) if c["error_code"]]

        first = wait_until(refused, timeout=120, interval=0.05, what="a refused start")[0]
        done.wait(timeout=max(0.0, first["time"] + limit + 2.0 - time.time()))
        local_aws.controls.set_concurrency_cap(pipeline, None)

    failures = Failures()
    kwargs: dict[str, Any] = {"backoff_policy": FAST_BACKOFF}
    if bound == "execution_timeout":
        kwargs["execution_timeout"] = dt.timedelta(seconds=limit)
    else:
        kwargs["backoff_policy"] = dataclasses.replace(FAST_BACKOFF, capacity_budget_seconds=limit)
    with dag() as d:
        operator(pipeline_name=pipeline, deferrable=deferrable, on_failure_callback=failures, **kwargs)
    helper = threading.Thread(target=free_the_slot_after_the_bound, daemon=True)
    helper.start()
    run = dag_runner.run_dag(d)
    helper.join(timeout=120)  # the slot is free now: a task still waiting for it would start an execution
    done.set()
    assert dag_runner.task_states(run) == {"run": "failed"}
    (message,) = failures.messages
    assert f"No capacity within {bound}" in message
    assert f"StartPipelineExecution of {pipeline} was refused with ResourceLimitExceeded" in message
    starts = calls(local_aws, "StartPipelineExecution", pipeline)
    assert [c["args"]["ClientRequestToken"] for c in starts if c["status"] == 200] == [blocker_token]
    assert {c["error_code"] for c in starts if c["status"] != 200} == {"ResourceLimitExceeded"}
    assert len(executions(local_aws, pipeline)) == 1


class _TaskInstance:
    """The part of Airflow's RuntimeTaskInstance the operator uses."""

    def __init__(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index
        self.try_number = 1
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class _TaskStateStore:
    """``task_state_store`` kept in memory (get/set, as TaskStateStoreAccessor offers)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        with self._lock:
            self.values[key] = value


def test_300_starts_against_a_cap_of_20_all_succeed_never_more_than_20_at_once(
    local_aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.bases.operator import ExecutorSafeguard
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)  # execute() called without the task runner
    fast_endpoint(local_aws, step_seconds=0.3)
    pipeline = create_pipeline(
        local_aws, parameters=[{"Name": "Index", "Type": "Integer"}], steps=[processing_step("Only")]
    )
    local_aws.controls.set_concurrency_cap(pipeline, 20)
    hook = SageMakerPipelineHook(
        aws_conn_id=None,
        region_name="us-east-1",
        backoff_policy=FAST_BACKOFF,
        config={"max_pool_connections": 40},
    )
    run_id = f"backfill__{dt.datetime.now(dt.UTC).isoformat()}"

    def run_one(index: int) -> dict[str, Any]:
        task = SageMakerPipelineOperator(
            task_id="run",
            pipeline_name=pipeline,
            parameters={"Index": index},
            poll_interval=0.25,
            deferrable=False,
            backoff_policy=FAST_BACKOFF,
        )
        task.__dict__["hook"] = hook  # one shared client for the 300 operators
        ti = _TaskInstance("backfill", run_id, "run", index)
        result = task.execute({"ti": ti, "task_state_store": _TaskStateStore()})  # type: ignore[arg-type, typeddict-item]
        assert ti.xcoms["pipeline_execution_arn"] == result["pipeline_execution_arn"]  # type: ignore[index]
        return result  # type: ignore[return-value]

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(run_one, range(300)))

    assert [r["status"] for r in results] == ["Succeeded"] * 300
    assert sorted(int(r["parameters"]["Index"]) for r in results) == list(range(300))
    assert len({r["pipeline_execution_arn"] for r in results}) == 300
    all_executions = executions(local_aws, pipeline)
    assert len(all_executions) == 300
    assert 15 <= local_aws.controls.peak_concurrency(pipeline) <= 20
    starts = calls(local_aws, "StartPipelineExecution", pipeline)
    assert sum(1 for c in starts if c["error_code"] == "ResourceLimitExceeded") > 0, "the cap was never hit"
    assert sum(1 for c in starts if c["status"] == 200) == 300
