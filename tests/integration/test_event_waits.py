"""``event_queue_url`` on the operator, the sensors and the task groups, and the call diet of a wait.

Against the local endpoint (``local_aws``) in DAG tests (``dag.test()``: deferred waits run their trigger
in line). The queue is checked before anything starts; the operator knows its execution's parameters
(the definition's defaults merged with its overrides, as SageMaker lists them) and never asks for them;
a wait lists the steps once, at its end. Calls are counted per execution in the endpoint's call record.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.support.pipelines import (
    POLL,
    Failures,
    calls,
    create_pipeline,
    create_queue,
    dag,
    executions,
    fast_endpoint,
    operator,
    processing_step,
    xcom,
)

pytestmark = pytest.mark.integration

#: Parameters of every type, with and without defaults (one of each is overridden below).
ALL_TYPES: list[dict[str, Any]] = [
    {"Name": "Label", "Type": "String", "DefaultValue": "plain"},
    {"Name": "Region", "Type": "String"},
    {"Name": "Rows", "Type": "Integer", "DefaultValue": 10},
    {"Name": "Depth", "Type": "Integer", "DefaultValue": 3},
    {"Name": "Ratio", "Type": "Float", "DefaultValue": 0.5},
    {"Name": "Whole", "Type": "Float", "DefaultValue": 2},
    {"Name": "Rate", "Type": "Float", "DefaultValue": 0.1},
    {"Name": "Full", "Type": "Boolean", "DefaultValue": False},
    {"Name": "Fast", "Type": "Boolean", "DefaultValue": True},
]
OVERRIDES = {"Region": "eu-west-1", "Rows": 25, "Ratio": 0.75, "Rate": "1.50", "Full": True}


def missing_queue_url(local_aws: Any) -> str:
    """The URL a queue of this endpoint would have, for a queue that does not exist."""
    url = create_queue(local_aws)
    local_aws.client("sqs").delete_queue(QueueUrl=url)
    return url


def per_execution(local_aws: Any, pipeline: str) -> Counter[str]:
    """SageMaker calls about ``pipeline`` (by name or execution ARN), by action."""
    return Counter({action: len(calls(local_aws, action, pipeline)) for action in ACTIONS})


ACTIONS = (
    "DescribePipeline",
    "StartPipelineExecution",
    "DescribePipelineExecution",
    "ListPipelineExecutions",
    "ListPipelineExecutionSteps",
    "ListPipelineParametersForExecution",
)


# ------------------------------------------------------------------------------------------------------
# the queue check


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_missing_events_queue_fails_the_operator_before_it_starts_anything(
    local_aws: Any, dag_runner: Any, deferrable: bool
) -> None:
    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    queue = missing_queue_url(local_aws)
    failures = Failures()
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            deferrable=deferrable,
            event_queue_url=queue,
            on_failure_callback=failures,
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "failed"}
    assert executions(local_aws, pipeline) == []
    assert calls(local_aws, "StartPipelineExecution", pipeline) == []
    (message,) = failures.messages
    assert f"Task run: The pipeline events queue {queue} does not exist" in message
    assert "Nothing was started" in message and "docs/events.md" in message


def test_a_missing_events_queue_fails_the_sensor_before_it_waits(local_aws: Any, dag_runner: Any) -> None:
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    arn = local_aws.client("sagemaker").start_pipeline_execution(
        PipelineName=pipeline, PipelineParameters=[{"Name": "RunDate", "Value": "x"}]
    )["PipelineExecutionArn"]
    queue = missing_queue_url(local_aws)
    failures = Failures()
    with dag() as d:
        SageMakerPipelineExecutionSensor(
            task_id="wait",
            pipeline_execution_arn=arn,
            deferrable=True,
            poke_interval=POLL,
            event_queue_url=queue,
            on_failure_callback=failures,
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"wait": "failed"}
    assert calls(local_aws, "DescribePipelineExecution", pipeline) == []  # failed before its first look
    (message,) = failures.messages
    assert f"Task wait: The pipeline events queue {queue} does not exist" in message


# ------------------------------------------------------------------------------------------------------
# the call diet


def run_all_types(local_aws: Any, dag_runner: Any, **kwargs: Any) -> tuple[str, dict[str, Any], Any]:
    """One execution of a two-step pipeline with :data:`ALL_TYPES` and :data:`OVERRIDES`; returns
    (pipeline, result, the finished run)."""
    fast_endpoint(local_aws)
    pipeline = create_pipeline(
        local_aws,
        steps=[processing_step("Prep"), processing_step("Train", ["Prep"])],
        parameters=ALL_TYPES,
    )
    with dag() as d:
        operator(pipeline_name=pipeline, parameters=OVERRIDES, **kwargs)
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}
    return pipeline, xcom(run, "run"), run


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_the_operator_knows_its_parameters_and_lists_the_steps_once(
    local_aws: Any, dag_runner: Any, deferrable: bool
) -> None:
    pipeline, result, _ = run_all_types(local_aws, dag_runner, deferrable=deferrable)
    counts = per_execution(local_aws, pipeline)
    print(f"calls per execution ({'deferrable' if deferrable else 'sync'}, polling):", dict(counts))
    assert counts["ListPipelineParametersForExecution"] == 0
    assert counts["ListPipelineExecutionSteps"] == 1  # at the end, for the result and the step lines
    assert counts["StartPipelineExecution"] == 1 and counts["DescribePipeline"] == 1
    if deferrable:  # the start's one look; then the shared poller's list pages only
        assert counts["DescribePipelineExecution"] == 1, counts
        assert counts["ListPipelineExecutions"] >= 1
    else:  # the start's look, then one per poll
        assert counts["DescribePipelineExecution"] >= 2

    listed = local_aws.client("sagemaker").list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["pipeline_execution_arn"]
    )["PipelineParameters"]
    assert result["parameters"] == {p["Name"]: p["Value"] for p in listed}
    assert result["parameters"]["Rate"] == "1.50" and result["parameters"]["Whole"] == "2.0"
    assert set(result["steps"]) == {"Prep", "Train"}


def test_the_sync_wait_logs_the_steps_at_the_end_and_that_it_polls(
    local_aws: Any, dag_runner: Any, capfd: Any
) -> None:
    queue = create_queue(local_aws)
    capfd.readouterr()
    pipeline, _, _ = run_all_types(local_aws, dag_runner, deferrable=False, event_queue_url=queue)
    out = "".join(capfd.readouterr())
    assert out.count(f"the events of {queue} serve deferrable waits only") == 1
    assert "Step Prep (Processing): Succeeded" in out and "Step Train (Processing): Succeeded" in out
    counts = per_execution(local_aws, pipeline)
    assert counts["ListPipelineExecutionSteps"] == 1
    assert len(local_aws.controls.calls(action="GetQueueAttributes")) >= 1  # the check


def test_the_sensor_reads_the_parameters_once_at_the_end(local_aws: Any, dag_runner: Any) -> None:
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor

    fast_endpoint(local_aws, step_seconds=0.3)
    pipeline = create_pipeline(local_aws, steps=[processing_step("Prep")], parameters=ALL_TYPES)
    arn = local_aws.client("sagemaker").start_pipeline_execution(
        PipelineName=pipeline, PipelineParameters=[{"Name": "Region", "Value": "r"}]
    )["PipelineExecutionArn"]
    with dag() as d:
        SageMakerPipelineExecutionSensor(
            task_id="wait", pipeline_execution_arn=arn, deferrable=False, poke_interval=POLL
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"wait": "success"}
    counts = per_execution(local_aws, pipeline)
    assert counts["ListPipelineParametersForExecution"] == 1
    assert counts["ListPipelineExecutionSteps"] == 1
    assert xcom(run, "wait")["parameters"]["Region"] == "r"


# ------------------------------------------------------------------------------------------------------
# waits on the seeded events queue


@pytest.fixture
def events_queue(local_aws: Any) -> str:
    """The seeded queue ``sagemaker-pipeline-events``, fed by the endpoint's EventBridge rule."""
    return str(local_aws.seed()["events_queue_url"])


def test_the_operator_waits_on_events(local_aws: Any, dag_runner: Any, events_queue: str) -> None:
    pipeline, result, _ = run_all_types(
        local_aws, dag_runner, deferrable=True, event_queue_url=events_queue, safety_poll_interval=600
    )
    counts = per_execution(local_aws, pipeline)
    print("calls per execution (deferrable, events):", dict(counts))
    assert counts["ListPipelineParametersForExecution"] == 0
    assert counts["ListPipelineExecutionSteps"] <= 1  # none when the step events told the whole story
    assert counts["DescribePipelineExecution"] == 1  # the start's look
    assert result["status"] == "Succeeded" and set(result["steps"]) == {"Prep", "Train"}
    checks = local_aws.controls.calls(action="GetQueueAttributes")
    assert any((c.get("args") or {}).get("QueueUrl") == events_queue for c in checks)  # checked first


def test_the_mirror_waits_on_events(local_aws: Any, dag_runner: Any, events_queue: str) -> None:
    from airflow.sdk import DAG
    from sagemaker_pipelines_provider.task_groups.mirror import SageMakerPipelineTaskGroup

    from tests.support.pipelines import FAST_BACKOFF, START_DATE, unique
    from tests.support.waiting import wait_until

    # Steps long enough that the step tasks find them running even on a loaded machine: they defer.
    fast_endpoint(local_aws, step_seconds=6.0)
    steps = [processing_step("Prep"), processing_step("Train", ["Prep"])]
    pipeline = create_pipeline(local_aws, steps=steps, parameters=[])
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": steps}
    with DAG(unique("mirror_events"), schedule=None, start_date=START_DATE) as d:
        SageMakerPipelineTaskGroup(
            pipeline,
            definition=definition,
            group_id="mirror",
            poll_interval=POLL,
            event_queue_url=events_queue,
            start_kwargs={"backoff_policy": FAST_BACKOFF},
        )
    run = dag_runner.run_dag(d)
    assert set(dag_runner.task_states(run).values()) == {"success"}, dag_runner.task_states(run)

    def receives() -> list[Any]:
        calls = local_aws.controls.calls(action="ReceiveMessage")
        return [c for c in calls if c["args"].get("QueueUrl") == events_queue]

    # A long poll is recorded when it returns (up to its 20 s wait after the waits that made it ended).
    wait_until(receives, timeout=40, what="the step and result waits reading the events queue")
