"""Mirror step waits without an endpoint: step policy, shared step poller, trigger, the sensor's resume."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.sensors.pipeline_step import SageMakerPipelineStepSensor, retry_token
from sagemaker_pipelines_provider.triggers.pipeline_step import CLASSPATH, SageMakerPipelineStepTrigger
from sagemaker_pipelines_provider.triggers.poller import active_pollers
from sagemaker_pipelines_provider.triggers.step_poller import active_steps_pollers
from sagemaker_pipelines_provider.utils.step_status import BranchRef, step_verdict

ARN = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/my-pipe/execution/e1"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def entry(name: str, status: str, attempts: int = 1, reason: str | None = None, **metadata: Any) -> dict:
    found: dict[str, Any] = {
        "StepName": name,
        "StepStatus": status,
        "AttemptCount": attempts,
        "StartTime": T0,
    }
    if reason:
        found["FailureReason"] = reason
    if metadata:
        found["Metadata"] = metadata
    return found


# ------------------------------------------------------------------------------------------------------
# the policy


def test_listed_steps_end_as_they_did() -> None:
    steps = [entry("A", "Succeeded"), entry("B", "Failed", reason="OOM"), entry("C", "Executing")]
    assert step_verdict("A", execution_status="Executing", steps=steps).state == "success"
    failed = step_verdict("B", execution_status="Executing", steps=steps)
    assert (failed.state, failed.reason) == ("failed", "OOM")
    assert step_verdict("C", execution_status="Executing", steps=steps).state == "running"
    assert step_verdict("D", execution_status="Executing", steps=steps).state == "running"
    assert step_verdict("D", execution_status="Failed", steps=steps).state == "skipped"


def test_the_branch_not_taken_is_skipped_as_soon_as_the_condition_decided() -> None:
    steps = [entry("Check", "Succeeded", Condition={"Outcome": "False"})]
    chain = (BranchRef("Check", True),)
    verdict = step_verdict("Register", execution_status="Executing", steps=steps, branch_chain=chain)
    assert verdict.state == "skipped"
    assert "Check took its ElseSteps" in verdict.reason
    other = step_verdict(
        "Stop", execution_status="Executing", steps=steps, branch_chain=(BranchRef("Check", False),)
    )
    assert other.state == "running"
    nested = (BranchRef("Inner", True), BranchRef("Check", True))
    assert (
        step_verdict("Deploy", execution_status="Executing", steps=steps, branch_chain=nested).state
        == "skipped"
    )


def test_after_a_resume_the_old_failed_attempt_means_running() -> None:
    old = [entry("T", "Failed", attempts=1, reason="spot")]
    assert step_verdict("T", execution_status="Failed", steps=old, resumed_attempt=1).state == "running"
    assert step_verdict("T", execution_status="Executing", steps=old, resumed_attempt=1).state == "running"
    assert step_verdict("T", execution_status="Succeeded", steps=old, resumed_attempt=1).state == "failed"
    again = [entry("T", "Failed", attempts=2, reason="spot again")]
    assert step_verdict("T", execution_status="Failed", steps=again, resumed_attempt=1).reason == "spot again"
    both = [entry("T", "Failed", attempts=1), entry("T", "Succeeded", attempts=2)]
    assert step_verdict("T", execution_status="Succeeded", steps=both).state == "success"


def test_retry_token_is_the_same_for_every_task_resuming_one_failure() -> None:
    steps = [entry("A", "Failed", 1), entry("B", "Succeeded"), entry("C", "Failed", 2)]
    assert retry_token(ARN, steps) == retry_token(ARN, list(reversed(steps)))
    assert retry_token(ARN, steps) != retry_token(ARN, [entry("A", "Failed", 2), entry("C", "Failed", 2)])
    assert len(retry_token(ARN, steps)) == 64


# ------------------------------------------------------------------------------------------------------
# the trigger and the shared step poller


def test_trigger_round_trips_through_airflow_serialisation() -> None:
    from airflow.models.trigger import Trigger
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.serde import deserialize, serialize

    original = SageMakerPipelineStepTrigger(
        ARN,
        "Deploy",
        step_type="Processing",
        branch_chain=(BranchRef("Inner", True), BranchRef("Check", False)),
        resumed_attempt=2,
        wait_for_execution_end=True,
        poll_interval=3,
        aws_conn_id="c",
        region_name="eu-west-1",
        botocore_config={"connect_timeout": 5},
    )
    classpath, kwargs = original.serialize()
    assert classpath == CLASSPATH
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))  # type: ignore[arg-type]
    assert rebuilt.serialize() == original.serialize()
    row = Trigger.from_object(original)
    revived = import_string(row.classpath)(**Trigger._decrypt_kwargs(row.encrypted_kwargs))
    assert revived.serialize() == original.serialize()
    assert revived.branch_chain == [["Inner", True], ["Check", False]]


class FakeEndpoint:
    """Patches the hook's async calls: statuses and steps per execution; counts the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.status = "Executing"
        self.steps: list[dict[str, Any]] = [entry("A", "Executing")]
        self.calls: dict[str, int] = {"ListPipelineExecutions": 0, "ListPipelineExecutionSteps": 0}
        endpoint = self

        @asynccontextmanager
        async def async_client(self: Any) -> AsyncIterator[Any]:
            yield object()

        async def alist_pipeline_executions(self: Any, pipeline: str, **_: Any) -> Any:
            endpoint.calls["ListPipelineExecutions"] += 1
            return [{"PipelineExecutionArn": ARN, "PipelineExecutionStatus": endpoint.status}], None

        async def alist_pipeline_execution_steps(self: Any, arn: str, **_: Any) -> Any:
            endpoint.calls["ListPipelineExecutionSteps"] += 1
            return list(endpoint.steps)

        monkeypatch.setattr(SageMakerPipelineHook, "async_client", async_client)
        monkeypatch.setattr(SageMakerPipelineHook, "alist_pipeline_executions", alist_pipeline_executions)
        monkeypatch.setattr(
            SageMakerPipelineHook, "alist_pipeline_execution_steps", alist_pipeline_execution_steps
        )


def test_all_step_triggers_of_one_execution_share_one_steps_listing_per_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeEndpoint(monkeypatch)
    names = [f"S{i}" for i in range(20)]

    async def scenario() -> list[Any]:
        triggers = [SageMakerPipelineStepTrigger(ARN, n, poll_interval=0.05, aws_conn_id=None) for n in names]
        tasks = [asyncio.ensure_future(anext(t.run())) for t in triggers]
        await asyncio.sleep(0.3)
        assert len(active_steps_pollers()) == 1
        assert len(active_pollers()) == 1
        rounds = fake.calls["ListPipelineExecutionSteps"]
        assert 1 <= rounds <= 10, rounds  # ~one per interval, not one per trigger
        fake.steps = [entry(n, "Succeeded") for n in names[:10]]
        fake.status = "Failed"
        events = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        await asyncio.sleep(0.1)
        assert active_steps_pollers() == {}  # the last subscriber left: the poller ended
        assert active_pollers() == {}
        return events

    events = asyncio.run(scenario())
    states = {e.payload["step_name"]: e.payload["status"] for e in events}
    assert states == {n: ("success" if i < 10 else "skipped") for i, n in enumerate(names)}
    succeeded = events[0].payload
    assert succeeded["step"]["status"] == "Succeeded"
    assert succeeded["step"]["name"] == "S0"
    assert succeeded["execution_status"] == "Failed"


def test_a_failed_verdict_waits_for_the_execution_end_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeEndpoint(monkeypatch)
    fake.steps = [entry("A", "Failed", reason="boom")]

    async def scenario() -> Any:
        trigger = SageMakerPipelineStepTrigger(
            ARN, "A", wait_for_execution_end=True, poll_interval=0.05, aws_conn_id=None
        )
        task = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.3)
        assert not task.done()  # the execution still runs other steps
        fake.status = "Failed"
        return await asyncio.wait_for(task, timeout=5)

    event = asyncio.run(scenario())
    assert (event.payload["status"], event.payload["reason"]) == ("failed", "boom")


# ------------------------------------------------------------------------------------------------------
# the sensor's resume rule


class Store:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


class FakeTI:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


class SyncEndpoint:
    def __init__(self, status: str, steps: list[dict[str, Any]]) -> None:
        self.status = status
        self.steps = steps
        self.retries: list[str] = []

    def describe_pipeline_execution(self, arn: str) -> dict[str, Any]:
        return {"PipelineExecutionStatus": self.status}

    def list_pipeline_execution_steps(self, arn: str) -> list[dict[str, Any]]:
        return list(self.steps)

    def retry_pipeline_execution(self, arn: str, *, client_request_token: str, **_: Any) -> str:
        self.retries.append(client_request_token)
        self.status = "Executing"
        return arn


def sensor(endpoint: SyncEndpoint, monkeypatch: pytest.MonkeyPatch) -> SageMakerPipelineStepSensor:
    task = SageMakerPipelineStepSensor(
        task_id="T", pipeline_execution_arn=ARN, step_name="T", step_type="Training", deferrable=False
    )
    monkeypatch.setattr(SageMakerPipelineStepSensor, "hook", endpoint)
    return task


def test_first_try_fails_with_the_reason_a_new_try_resumes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowException

    endpoint = SyncEndpoint("Failed", [entry("T", "Failed", 1, reason="spot reclaimed")])
    task = sensor(endpoint, monkeypatch)
    store = Store()
    with pytest.raises(AirflowException, match="spot reclaimed"):
        task.poke({"ti": FakeTI(1), "task_state_store": store})  # type: ignore[typeddict-item]
    assert endpoint.retries == []

    context = {"ti": FakeTI(2), "task_state_store": store}
    assert task.poke(context) is False  # type: ignore[arg-type]  # resumed; the old attempt is not the verdict
    assert len(endpoint.retries) == 1
    assert task.poke(context) is False  # type: ignore[arg-type]  # still waiting for the re-run: no second retry
    assert len(endpoint.retries) == 1
    endpoint.steps = [entry("T", "Succeeded", 2)]
    done = task.poke(context)  # type: ignore[arg-type]
    assert done.is_done and done.xcom_value["attempts"] == 2  # type: ignore[index, union-attr]


def test_a_new_try_waits_for_the_execution_to_end_before_resuming(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = SyncEndpoint("Executing", [entry("T", "Failed", 1, reason="x"), entry("U", "Executing")])
    task = sensor(endpoint, monkeypatch)
    context = {"ti": FakeTI(2), "task_state_store": Store()}
    assert task.poke(context) is False  # type: ignore[arg-type]
    assert endpoint.retries == []  # SageMaker only resumes a Failed execution
    endpoint.status = "Failed"
    assert task.poke(context) is False  # type: ignore[arg-type]
    assert len(endpoint.retries) == 1
