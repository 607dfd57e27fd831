"""SageMakerPipelineExecutionTrigger in an event loop against the local endpoint (as the triggerer runs it).

Kill and cancellation use Airflow's own ``TriggerRunner`` (the triggerer's in-process runner): a user
action (mark failed / success, clear) or a DAG run timeout reaches a deferred task only as the
triggerer cancelling its trigger with the user-action message, which then awaits ``on_kill``.
``dag.test()`` cannot produce that (it runs a trigger with ``asyncio.run`` and no triggerer), so the
deferred kill is tested here, one level down, through that exact cancellation path (and with real
triggerer processes in ``test_pipeline_kill.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger
from sagemaker_pipelines_provider.triggers.poller import active_pollers

from tests.support.pipelines import (
    calls,
    create_pipeline,
    executions,
    fast_endpoint,
    processing_step,
    wait_until,
)

pytestmark = pytest.mark.integration


def start(local_aws: Any, pipeline: str, count: int = 1) -> list[str]:
    sagemaker = local_aws.client("sagemaker")
    return [
        sagemaker.start_pipeline_execution(PipelineName=pipeline, PipelineExecutionDisplayName=f"e{i}")[
            "PipelineExecutionArn"
        ]
        for i in range(count)
    ]


def status(local_aws: Any, arn: str) -> str:
    return local_aws.client("sagemaker").describe_pipeline_execution(PipelineExecutionArn=arn)[
        "PipelineExecutionStatus"
    ]


async def first_event(trigger: SageMakerPipelineExecutionTrigger) -> dict[str, Any]:
    event = await anext(trigger.run())
    return dict(event.payload)


def test_one_poller_per_pipeline_coalesces_every_waiting_execution(local_aws: Any) -> None:
    fast_endpoint(local_aws, step_seconds=2.5)  # long enough for several poll rounds after start-up
    steps = [processing_step("Prep"), processing_step("Score", ["Prep"])]
    first = create_pipeline(local_aws, parameters=[], steps=steps)
    second = create_pipeline(local_aws, parameters=[], steps=steps)
    arns = start(local_aws, first, 12) + start(local_aws, second, 3)
    since = local_aws.controls.calls()[-1]["seq"]
    interval = 0.2

    async def wait_all() -> tuple[list[dict[str, Any]], int]:
        triggers = [SageMakerPipelineExecutionTrigger(arn, poll_interval=interval) for arn in arns]
        events = await asyncio.gather(*(first_event(t) for t in triggers))
        await asyncio.sleep(interval * 2)  # the pollers notice they have nobody left and end
        return events, len(active_pollers())

    began = time.monotonic()
    events, pollers_left = asyncio.run(wait_all())
    elapsed = time.monotonic() - began

    assert [e["status"] for e in events] == ["success"] * 15
    assert [e["result"]["pipeline_execution_arn"] for e in events] == arns
    assert all(e["result"]["steps"]["Score"]["status"] == "Succeeded" for e in events)
    assert pollers_left == 0

    recorded = [c for c in local_aws.controls.calls(service="sagemaker") if c["seq"] > since]

    def count(action: str, pipeline: str) -> int:
        return sum(1 for c in recorded if c["action"] == action and _about(c, pipeline))

    rounds = elapsed / interval + 2
    for pipeline, executions_watched in ((first, 12), (second, 3)):
        # One page per round for all executions of the pipeline; never one call per execution per round.
        assert 3 <= count("ListPipelineExecutions", pipeline) <= rounds
        assert count("DescribePipelineExecution", pipeline) == 0  # all found in the list pages
        # Steps are listed once per execution, at its end (for the result and the step log lines).
        assert count("ListPipelineExecutionSteps", pipeline) == executions_watched
        assert count("ListPipelineParametersForExecution", pipeline) == executions_watched


def _about(call: dict[str, Any], pipeline: str) -> bool:
    args = call.get("args") or {}
    return args.get("PipelineName") == pipeline or f":pipeline/{pipeline}/" in str(
        args.get("PipelineExecutionArn")
    )


def per_execution_calls(local_aws: Any, arns: list[str], since: int) -> dict[str, Counter[str]]:
    """SageMaker calls naming each execution ARN since the ``since`` cursor, counted by action."""
    counted: dict[str, Counter[str]] = {arn: Counter() for arn in arns}
    for call in local_aws.controls.calls(service="sagemaker", since=since):
        arn = (call.get("args") or {}).get("PipelineExecutionArn")
        if arn in counted:
            counted[arn][call["action"]] += 1
    return counted


def test_polling_costs_one_step_listing_per_execution_and_no_parameters_when_given(local_aws: Any) -> None:
    """The call diet: before the end only the shared list pages; at the end one ListPipelineExecutionSteps,
    no Describe (the list page carried the status), ListPipelineParametersForExecution only when the
    trigger was not given the parameters."""
    fast_endpoint(local_aws, step_seconds=0.5)  # several poll rounds while the steps run
    steps = [processing_step("Prep"), processing_step("Fit", ["Prep"]), processing_step("Score", ["Fit"])]
    rows = [{"Name": "Rows", "Type": "Integer", "DefaultValue": 7}]
    pipeline = create_pipeline(local_aws, parameters=rows, steps=steps)
    known, unknown = start(local_aws, pipeline, 2)
    since = local_aws.controls.calls()[-1]["seq"]

    async def wait_both() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                first_event(
                    SageMakerPipelineExecutionTrigger(known, poll_interval=0.1, parameters={"Rows": "7"})
                ),
                first_event(SageMakerPipelineExecutionTrigger(unknown, poll_interval=0.1)),
            )
        )

    events = asyncio.run(wait_both())
    assert [e["status"] for e in events] == ["success", "success"]
    assert [e["result"]["parameters"] for e in events] == [{"Rows": "7"}, {"Rows": "7"}]
    assert all(set(e["result"]["steps"]) == {"Prep", "Fit", "Score"} for e in events)
    counted = per_execution_calls(local_aws, [known, unknown], since)
    assert counted[known] == Counter({"ListPipelineExecutionSteps": 1}), counted[known]
    assert counted[unknown] == Counter(
        {"ListPipelineExecutionSteps": 1, "ListPipelineParametersForExecution": 1}
    ), counted[unknown]
    rounds = len(calls(local_aws, "ListPipelineExecutions", pipeline))
    assert rounds >= 3, "the executions must have been seen running for a few rounds before their end"


def test_failure_event_names_the_step_and_its_reason(local_aws: Any) -> None:
    fast_endpoint(local_aws)
    pipeline = create_pipeline(
        local_aws, parameters=[], steps=[processing_step("Prep"), processing_step("Fit", ["Prep"])]
    )
    local_aws.controls.set_step_behaviour(pipeline, "Fit", fail="out of memory")
    (arn,) = start(local_aws, pipeline)
    event = asyncio.run(
        first_event(
            SageMakerPipelineExecutionTrigger(arn, poll_interval=0.1, step_types={"Fit": "Processing"})
        )
    )
    assert event["status"] == "failure"
    assert event["result"]["status"] == "Failed"
    assert "Fit (Processing): out of memory" in event["message"]
    assert ":processing-job/" in event["message"]
    assert "console.aws.amazon.com/sagemaker/home?region=us-east-1#/pipelines/" in event["message"]


@pytest.mark.parametrize("allow_stopped", [False, True])
def test_stopped_follows_the_policy(local_aws: Any, allow_stopped: bool) -> None:
    fast_endpoint(local_aws, step_seconds=30)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Slow")])
    (arn,) = start(local_aws, pipeline)
    local_aws.client("sagemaker").stop_pipeline_execution(
        PipelineExecutionArn=arn, ClientRequestToken="x" * 40
    )
    event = asyncio.run(
        first_event(SageMakerPipelineExecutionTrigger(arn, poll_interval=0.1, allow_stopped=allow_stopped))
    )
    assert event["status"] == ("success" if allow_stopped else "failure")
    assert event["result"]["status"] == "Stopped"


def test_the_deadline_stops_the_execution_and_fires_a_timeout(local_aws: Any) -> None:
    import datetime as dt

    fast_endpoint(local_aws, step_seconds=30)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Slow")])
    (arn,) = start(local_aws, pipeline)
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)).isoformat()
    trigger = SageMakerPipelineExecutionTrigger(
        arn, poll_interval=0.1, stop_on_kill=True, stop_token="k" * 64, deadline=deadline
    )
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "timeout"
    assert "was stopped" in event["message"]
    (stop,) = calls(local_aws, "StopPipelineExecution", pipeline)
    assert stop["args"]["ClientRequestToken"] == "k" * 64
    wait_until(lambda: status(local_aws, arn) == "Stopped", what="Stopped")


async def run_in_airflow_trigger_runner(
    trigger: SageMakerPipelineExecutionTrigger, wait_for: Any, user_action: bool
) -> Any:
    """Run ``trigger`` in Airflow's TriggerRunner, then cancel it as the triggerer does."""
    from airflow.jobs.triggerer_job_runner import TriggerRunner

    runner = TriggerRunner()
    task = asyncio.create_task(runner.run_trigger(1, trigger))
    runner.triggers[1] = {"task": task, "name": "pipeline-trigger", "events": 0, "is_watcher": False}
    await wait_for()
    if user_action:  # the trigger left this triggerer's share: user action, or handed to another triggerer
        runner.to_cancel.append(1)
        await runner.cancel_triggers()
    else:  # triggerer shutting down / restarting
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.3)
    return len(active_pollers())


@pytest.mark.parametrize(
    ("action", "stop_on_kill", "stopped"),
    [
        ("handed-over", True, False),
        ("mark-failed", True, True),
        ("mark-success", True, True),
        ("clear", True, True),
        ("mark-failed", False, False),
        ("triggerer-restart", True, False),
    ],
    ids=[
        "handed-to-another-triggerer-keeps-running",
        "mark-failed-stops",
        "mark-success-stops",
        "clear-stops",
        "mark-failed-stop_on_kill-off",
        "triggerer-restart-keeps-running",
    ],
)
def test_cancelling_the_trigger(
    local_aws: Any, dag_runner: Any, action: str, stop_on_kill: bool, stopped: bool
) -> None:
    """The task deferred (its task instance is DEFERRED in the metadata DB); the trigger runs in Airflow's
    TriggerRunner with the task instance attached, as in a triggerer. Airflow 3.3's triggerer cancels a
    trigger with the same user-action message whether the task instance was killed or the trigger was
    only handed to another triggerer (``TriggerRunnerSupervisor.update_triggers``); only the former may
    stop the execution."""
    from airflow.sdk import DAG
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    from tests.support.airflow_processes import defer_in_this_process, task_sdk_comms
    from tests.support.pipelines import START_DATE, unique

    fast_endpoint(local_aws, step_seconds=30)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Slow")])
    with DAG(unique("cancel"), schedule=None, start_date=START_DATE, catchup=False) as dag:
        SageMakerPipelineOperator(
            task_id="run",
            pipeline_name=pipeline,
            deferrable=True,
            poll_interval=0.1,
            stop_on_kill=stop_on_kill,
        )
    deferred = defer_in_this_process(dag_runner, dag, "run")
    (arn,) = [e["PipelineExecutionArn"] for e in executions(local_aws, pipeline)]
    trigger = deferred.trigger()
    trigger.task_instance = deferred.sdk_ti  # what a triggerer attaches before running the trigger

    async def subscribed_then_acted() -> None:
        while not any(arn in p.watched for p in active_pollers().values()):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # a poll round or two
        if action == "mark-failed":
            deferred.set_state("failed")
        elif action == "mark-success":
            deferred.set_state("success")
        elif action == "clear":
            deferred.clear()

    with task_sdk_comms(deferred.sdk_ti.id):
        pollers_left = asyncio.run(
            run_in_airflow_trigger_runner(trigger, subscribed_then_acted, action != "triggerer-restart")
        )

    assert pollers_left == 0, "the cancelled trigger must leave its poller"
    stops = calls(local_aws, "StopPipelineExecution", pipeline)
    if stopped:
        assert [c["args"]["ClientRequestToken"] for c in stops] == [trigger.stop_token]
        wait_until(lambda: status(local_aws, arn) == "Stopped", what="Stopped")
    else:
        assert stops == []
        assert status(local_aws, arn) == "Executing"


def test_a_cancelled_trigger_leaves_the_others_polling(local_aws: Any) -> None:
    fast_endpoint(local_aws, step_seconds=1.0)
    pipeline = create_pipeline(local_aws, parameters=[], steps=[processing_step("Only")])
    kept, dropped = start(local_aws, pipeline, 2)

    async def scenario() -> tuple[frozenset[str], dict[str, Any]]:
        keep = asyncio.create_task(first_event(SageMakerPipelineExecutionTrigger(kept, poll_interval=0.1)))
        drop = asyncio.create_task(first_event(SageMakerPipelineExecutionTrigger(dropped, poll_interval=0.1)))
        while sum(len(p.watched) for p in active_pollers().values()) < 2:
            await asyncio.sleep(0.02)
        drop.cancel()
        await asyncio.gather(drop, return_exceptions=True)
        (poller,) = active_pollers().values()
        watched = poller.watched
        return watched, await keep

    watched, event = asyncio.run(scenario())
    assert watched == frozenset({kept})
    assert event["status"] == "success"
    assert {e["PipelineExecutionStatus"] for e in executions(local_aws, pipeline)} == {"Succeeded"}
