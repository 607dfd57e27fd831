"""The shared per-queue receiver and the reconciler, against the local endpoint.

- many deferred SageMakerCallbackTriggers on one queue in one event loop (as in a triggerer) share one
  receive loop: each gets its own message, none is claimed twice, and the number of ReceiveMessage calls
  does not grow with the number of waiting triggers;
- the reconciler finds callback steps waiting past a deadline through ListPipelineExecutionSteps and
  answers them with failure (and sweeps their messages).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import pytest

from tests.support.callbacks import (
    ROLE_ARN,
    accepted_answers,
    callback_pipeline,
    create_queue,
    dag,
    fast_endpoint,
    queue_counts,
    start,
    unique,
    wait_status,
    waiting_token,
)

pytestmark = pytest.mark.integration


def test_many_waiting_triggers_share_one_receive_loop(local_aws: Any) -> None:
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackTrigger
    from sagemaker_pipelines_provider.triggers.callback_receiver import active_receivers

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arns = [start(local_aws, pipeline, Dataset=f"s3://bucket/{i}") for i in range(30)]
    for arn in arns:
        waiting_token(local_aws, arn)
    before = len(local_aws.controls.calls(action="ReceiveMessage"))
    receivers: list[int] = []

    async def wait_all() -> list[Any]:
        triggers = [
            SageMakerCallbackTrigger(
                queue_url=queue,
                pipeline_execution_arn=arn,
                visibility_timeout=30,
                wait_time_seconds=1,
                inspect_visibility_timeout=5,
            )
            for arn in arns
        ]
        tasks = [asyncio.create_task(anext(t.run())) for t in triggers]  # type: ignore[arg-type, var-annotated]
        await asyncio.sleep(0)
        receivers.append(len(active_receivers()))
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    events = asyncio.run(wait_all())
    receive_calls = len(local_aws.controls.calls(action="ReceiveMessage")) - before
    assert receivers == [1]
    assert [e.payload["status"] for e in events] == ["success"] * len(arns)
    assert [e.payload["message"]["pipeline_execution_arn"] for e in events] == arns
    assert len({e.payload["message"]["message_id"] for e in events}) == len(arns)
    # 30 messages arrive in batches of up to 10: a handful of receives, not one loop per trigger
    assert receive_calls <= 12, receive_calls
    assert queue_counts(local_aws, queue) == (0, len(arns))  # claimed, hidden, never deleted


def test_reconciler_answers_callbacks_waiting_past_the_deadline(local_aws: Any, dag_runner: Any) -> None:
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackReconcileOperator

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)
    time.sleep(1.2)
    with dag() as d:
        report = SageMakerCallbackReconcileOperator(
            task_id="report", pipeline_name=pipeline, older_than=1, report_only=True
        )
        answer = SageMakerCallbackReconcileOperator(task_id="answer", pipeline_name=pipeline, older_than=1)
        report >> answer
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    reported = run.get_task_instance("report").xcom_pull(task_ids="report")
    answered = run.get_task_instance("answer").xcom_pull(task_ids="answer")
    assert [r["step_name"] for r in reported] == ["Validate"]
    assert reported[0]["answered"] is False and token not in str(reported)
    assert answered[0]["answered"] is True and answered[0]["already_answered"] is False
    assert answered[0]["copies_deleted"] == 1
    final = wait_status(local_aws, arn, "Succeeded", "Failed")
    assert final["PipelineExecutionStatus"] == "Failed"
    assert "not answered within" in final["FailureReason"]
    assert [a["action"] for a in accepted_answers(local_aws)] == ["SendPipelineExecutionStepFailure"]
    assert queue_counts(local_aws, queue) == (0, 0)


def test_reconciler_finds_an_old_stuck_callback_behind_a_thousand_newer_executions(local_aws: Any) -> None:
    """The stuck execution is older than the 1000 newest: the reconciler still finds it (every page of the
    executions created in the window where a callback can be both waiting and overdue)."""
    from sagemaker_pipelines_provider.callbacks.reconciler import find_overdue_callbacks
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook

    fast_endpoint(local_aws, step_seconds=0.01)
    queue = create_queue(local_aws)
    name = unique("cbgate")
    definition = {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "Mode", "Type": "String", "DefaultValue": "skip"}],
        "Steps": [
            {
                "Name": "Gate",
                "Type": "Condition",
                "Arguments": {
                    "Conditions": [
                        {"Type": "Equals", "LeftValue": {"Get": "Parameters.Mode"}, "RightValue": "wait"}
                    ],
                    "IfSteps": [
                        {"Name": "Validate", "Type": "Callback", "Arguments": {}, "SqsQueueUrl": queue}
                    ],
                    "ElseSteps": [],
                },
            }
        ],
    }
    sm = local_aws.client("sagemaker")
    sm.create_pipeline(PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN)
    stuck = start(local_aws, name, Mode="wait")
    token = waiting_token(local_aws, stuck)
    began = time.monotonic()
    for i in range(1000):
        sm.start_pipeline_execution(
            PipelineName=name, ClientRequestToken=f"newer-execution-{i:04d}-{'x' * 20}"
        )
    print(f"1000 starts in {time.monotonic() - began:.1f}s")
    time.sleep(1.1)
    hook = SageMakerPipelineHook(aws_conn_id=None)
    found = find_overdue_callbacks(hook, name, older_than=dt.timedelta(seconds=1))
    assert [(f.pipeline_execution_arn, f.token) for f in found] == [(stuck, token)]
    listed = local_aws.controls.calls(action="ListPipelineExecutions")
    assert len(listed) >= 11  # 1001 executions, pages of 100
