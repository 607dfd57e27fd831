"""Delivery under stress: shared queues, duplicates, malformed messages, stops.

Acceptance items covered here (all against the local endpoint, handler DAGs in ``dag.test()``):

- two executions of one pipeline at once on one shared queue: each handler answers its own token only;
- every message delivered twice: each token answered once, queue empty at the end;
- 100 malformed messages mixed in: no crash, every valid callback answered, the malformed ones left on
  the queue and each logged once;
- the execution stopped while its callback waits: the Stopping message is answered and the execution
  ends Stopped (stopped before the handler runs, and stopped while the work runs).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from tests.support.callbacks import (
    FAST_SENSOR,
    VISIBILITY,
    accepted_answers,
    answer_calls,
    callback_pipeline,
    create_queue,
    dag,
    fast_endpoint,
    queue_counts,
    start,
    wait_status,
    wait_until,
    waiting_token,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _stop_leases() -> Any:
    yield
    from sagemaker_pipelines_provider.callbacks import lease

    lease.release_all()


def handler(group_id: str, queue: str, work: Any, **kwargs: Any) -> Any:
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    kwargs.setdefault("visibility_timeout", VISIBILITY)
    kwargs.setdefault("sensor_kwargs", {**FAST_SENSOR, "deferrable": True})
    return callback_handler(group_id, queue, work=work, **kwargs)


def echo_work(task_id: str, record: dict[str, Any] | None = None) -> Any:
    from airflow.sdk import task

    @task(task_id=task_id)
    def work(arguments: dict[str, Any]) -> dict[str, Any]:
        if record is not None:
            record[task_id] = arguments
        return {"passed": True, "rows": 1}

    return work


def test_two_executions_on_one_shared_queue_each_handler_answers_its_own(
    local_aws: Any, dag_runner: Any
) -> None:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    seen: dict[str, Any] = {}
    with dag() as d:
        for name in ("a", "b"):
            begin = SageMakerPipelineOperator(
                task_id=f"start_{name}",
                pipeline_name=pipeline,
                parameters={"Dataset": f"s3://bucket/{name}"},
                wait_for_completion=False,
            )
            group = handler(
                f"h_{name}",
                queue,
                echo_work(f"work_{name}", seen),
                pipeline_execution_arn=(
                    f"{{{{ ti.xcom_pull(task_ids='start_{name}', key='pipeline_execution_arn') }}}}"
                ),
            )
            begin >> group
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    arns = {
        name: run.get_task_instance(f"start_{name}").xcom_pull(
            task_ids=f"start_{name}", key="pipeline_execution_arn"
        )
        for name in ("a", "b")
    }
    for name in ("a", "b"):
        assert seen[f"work_{name}"]["dataset"] == f"s3://bucket/{name}"
        assert seen[f"work_{name}"]["execution"] == arns[name].rsplit("/", 1)[-1]
        answered = run.get_task_instance(f"h_{name}.answer").xcom_pull(task_ids=f"h_{name}.answer")
        assert answered["pipeline_execution_arn"] == arns[name]
        final = wait_status(local_aws, arns[name], "Succeeded", "Failed")
        assert final["PipelineExecutionStatus"] == "Succeeded", final
    answers = accepted_answers(local_aws)
    assert len(answers) == 2
    assert len({a["args"]["CallbackToken"] for a in answers}) == 2
    assert queue_counts(local_aws, queue) == (0, 0)


class Relay:
    """Deliver every message of ``inbox`` ``copies`` times to ``outbox`` (at-least-once, exaggerated)."""

    def __init__(self, local_aws: Any, inbox: str, outbox: str, copies: int = 2) -> None:
        self.sqs = local_aws.client("sqs")
        self.inbox, self.outbox, self.copies = inbox, outbox, copies
        self.relayed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.inbox, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            for message in messages:
                for _ in range(self.copies):
                    self.sqs.send_message(QueueUrl=self.outbox, MessageBody=message["Body"])
                self.sqs.delete_message(QueueUrl=self.inbox, ReceiptHandle=message["ReceiptHandle"])
                self.relayed += 1
            self._stop.wait(0.05)


def test_every_message_delivered_twice_each_token_answered_once_queue_empty(
    local_aws: Any, dag_runner: Any
) -> None:
    fast_endpoint(local_aws)
    inbox = create_queue(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, inbox)
    with Relay(local_aws, inbox, queue, copies=2) as relay:
        arns = [start(local_aws, pipeline, Dataset=f"s3://bucket/{i}") for i in range(2)]
        tokens = [waiting_token(local_aws, arn) for arn in arns]
        wait_until(lambda: relay.relayed >= 2, what="the relay to copy the 2 callback messages")
        assert sum(queue_counts(local_aws, queue)) == 4
        with dag() as d:
            for i, arn in enumerate(arns):
                handler(f"h{i}", queue, echo_work(f"work{i}"), pipeline_execution_arn=arn)
        run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    for arn in arns:
        assert wait_status(local_aws, arn, "Succeeded", "Failed")["PipelineExecutionStatus"] == "Succeeded"
    for token in tokens:
        calls = answer_calls(local_aws, token)
        assert [c["status"] for c in calls] == [200], calls
    assert queue_counts(local_aws, queue) == (0, 0)
    assert queue_counts(local_aws, inbox) == (0, 0)


def test_messages_received_twice_after_a_consumer_let_them_go(local_aws: Any, dag_runner: Any) -> None:
    """The same message delivered again (a consumer received it and died): answered once, deleted."""
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)
    sqs = local_aws.client("sqs")
    first = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1, WaitTimeSeconds=1)["Messages"]
    assert len(first) == 1
    with dag() as d:
        handler("h", queue, echo_work("work"), pipeline_execution_arn=arn)
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    message = run.get_task_instance("h.wait").xcom_pull(task_ids="h.wait")
    assert message["receive_count"] >= 2
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
    assert queue_counts(local_aws, queue) == (0, 0)


MALFORMED = [
    "not json at all",
    "",
    "[1, 2, 3]",
    json.dumps({"pipelineExecutionArn": "arn:aws:sagemaker:us-east-1:1:pipeline/p/execution/x"}),
    json.dumps({"token": "short"}),
    json.dumps({"token": "has-dashes!"}),
    json.dumps({"token": "AAAAAAAAAA", "arguments": "not an object"}),
    json.dumps({"token": 1234567890}),
    "{" * 5000,
    json.dumps({"token": None, "arguments": {}}),
]


def test_hundred_malformed_messages_mixed_in(local_aws: Any, dag_runner: Any, caplog: Any) -> None:
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    sqs = local_aws.client("sqs")
    junk = [MALFORMED[i % len(MALFORMED)] or " " for i in range(100)]
    for start_at in range(0, 60, 10):
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(junk[start_at : start_at + 10])],
        )
    pipeline = callback_pipeline(local_aws, queue)
    arns = [start(local_aws, pipeline, Dataset=f"s3://bucket/{i}") for i in range(3)]
    for start_at in range(60, 100, 10):
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(junk[start_at : start_at + 10])],
        )
    tokens = [waiting_token(local_aws, arn) for arn in arns]
    caplog.set_level("WARNING")
    with dag() as d:
        for i, arn in enumerate(arns):
            handler(f"h{i}", queue, echo_work(f"work{i}"), pipeline_execution_arn=arn)
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    for arn in arns:
        assert wait_status(local_aws, arn, "Succeeded", "Failed")["PipelineExecutionStatus"] == "Succeeded"
    for token in tokens:
        assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
    # never deleted by us: the 3 answered callbacks were deleted (a claim that lapsed under load adds a
    # sweep's delete of the same message), the 100 are all still on the queue
    deletes = local_aws.controls.calls(action="DeleteMessage")
    assert len(deletes) >= 3
    wait_until(
        lambda: sum(queue_counts(local_aws, queue)) == 100, timeout=10, what="100 messages on the queue"
    )
    logged = Counter(
        r.getMessage().split()[3] for r in caplog.records if r.getMessage().startswith("Ignoring malformed")
    )
    assert logged and max(logged.values()) == 1, logged


def test_stopped_before_the_handler_runs_stopping_message_answered_execution_stopped(
    local_aws: Any, dag_runner: Any
) -> None:
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)
    local_aws.client("sagemaker").stop_pipeline_execution(
        PipelineExecutionArn=arn, ClientRequestToken="stop-request-token-0123456789abcdef"
    )
    wait_until(lambda: sum(queue_counts(local_aws, queue)) == 2, what="the Stopping message")
    ran: dict[str, Any] = {}
    with dag() as d:
        handler("h", queue, echo_work("work", ran), pipeline_execution_arn=arn)
    run = dag_runner.run_dag(d)
    states = dag_runner.task_states(run)
    assert states["h.work"] == "skipped", states
    assert states["h.answer"] == "success", states
    assert ran == {}
    message = run.get_task_instance("h.wait").xcom_pull(task_ids="h.wait")
    assert message["status"] == "Stopping"
    final = wait_status(local_aws, arn, "Stopped", "Failed", "Succeeded")
    assert final["PipelineExecutionStatus"] == "Stopped", final
    calls = answer_calls(local_aws, token)
    assert [(c["action"], c["status"]) for c in calls] == [("SendPipelineExecutionStepFailure", 200)]
    assert calls[0]["args"]["FailureReason"].startswith("Stopped:")
    assert queue_counts(local_aws, queue) == (0, 0)


def test_stopped_while_the_work_runs_answered_and_stopped(local_aws: Any, dag_runner: Any) -> None:
    from airflow.sdk import task

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)

    @task
    def work(arguments: dict[str, Any]) -> dict[str, Any]:
        local_aws.client("sagemaker").stop_pipeline_execution(
            PipelineExecutionArn=arn, ClientRequestToken="stop-request-token-0123456789abcdef"
        )
        wait_until(lambda: queue_counts(local_aws, queue)[0] == 1, what="the Stopping message")
        return {"passed": True, "rows": 1}

    with dag() as d:
        handler("h", queue, work, pipeline_execution_arn=arn)
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    final = wait_status(local_aws, arn, "Stopped", "Failed", "Succeeded")
    assert final["PipelineExecutionStatus"] == "Stopped", final
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
    assert queue_counts(local_aws, queue) == (0, 0)


def test_a_stale_copy_of_an_answered_token_does_not_steal_the_waiter(local_aws: Any, dag_runner: Any) -> None:
    """A's token is answered; a copy of A's message comes back (an SQS duplicate, a late copy) ahead of B's.
    A handler routed by pipeline name must delete A's copy and answer B, not "answer" A again and leave B
    waiting."""
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    sqs, sm = local_aws.client("sqs"), local_aws.client("sagemaker")
    arn_a = start(local_aws, pipeline, Dataset="s3://bucket/a")
    token_a = waiting_token(local_aws, arn_a)
    (message_a,) = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=30, WaitTimeSeconds=1)["Messages"]
    sm.send_pipeline_execution_step_success(
        CallbackToken=token_a,
        OutputParameters=[{"Name": "passed", "Value": "true"}, {"Name": "rows", "Value": "1"}],
    )
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message_a["ReceiptHandle"])
    sqs.send_message(QueueUrl=queue, MessageBody=message_a["Body"])  # the stale copy, first in the queue
    arn_b = start(local_aws, pipeline, Dataset="s3://bucket/b")
    token_b = waiting_token(local_aws, arn_b)
    wait_until(lambda: queue_counts(local_aws, queue) == (2, 0), what="A's copy and B's message")
    ran: dict[str, Any] = {}
    with dag() as d:
        handler("h", queue, echo_work("work", ran), pipeline_name=pipeline)
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)
    assert ran["work"]["dataset"] == "s3://bucket/b"  # the work ran for B, never again for A
    assert [c["status"] for c in answer_calls(local_aws, token_b)] == [200]
    assert [c["status"] for c in answer_calls(local_aws, token_a)] == [200]  # only the first answer
    assert wait_status(local_aws, arn_b, "Succeeded", "Failed")["PipelineExecutionStatus"] == "Succeeded"
    assert queue_counts(local_aws, queue) == (0, 0)  # A's copy was deleted, not left to come back


def test_claim_lapsed_and_the_message_received_elsewhere_before_the_answer(local_aws: Any) -> None:
    """The sensor's claim lapses (nothing extended it) and another consumer receives the message before the
    answer: SQS then ignores the answer's delete (an outdated receipt handle). The message must not come
    back as new work: once its token is answered, the copy is deleted by whoever receives it next."""
    import asyncio
    import datetime as dt

    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackTrigger

    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = callback_pipeline(local_aws, queue)
    arn = start(local_aws, pipeline)
    token = waiting_token(local_aws, arn)

    def trigger(**kwargs: Any) -> SageMakerCallbackTrigger:
        return SageMakerCallbackTrigger(
            queue_url=queue, wait_time_seconds=1, inspect_visibility_timeout=5, **kwargs
        )

    claimed = asyncio.run(anext(trigger(pipeline_execution_arn=arn, visibility_timeout=1).run())).payload  # type: ignore[arg-type, var-annotated]
    assert claimed["status"] == "success"
    wait_until(lambda: queue_counts(local_aws, queue) == (1, 0), what="the lapsed claim")
    sqs = local_aws.client("sqs")
    (elsewhere,) = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=2, WaitTimeSeconds=1)["Messages"]
    assert elsewhere["ReceiptHandle"] != claimed["message"]["receipt_handle"]  # a consumer that then dies

    answer = SageMakerCallbackSuccessOperator(
        task_id="answer", message=claimed["message"], outputs={"passed": True, "rows": 3}, aws_conn_id=None
    )
    result = answer.execute({})  # type: ignore[arg-type]
    assert result["answer"] == "success" and result["already_answered"] is False
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
    wait_status(local_aws, arn, "Succeeded", "Failed")

    # The dead consumer's copy comes back. A waiter of this provider (any route that matches it) deletes it
    # instead of taking it as new work, and keeps waiting.
    wait_until(lambda: queue_counts(local_aws, queue)[1] == 0, what="the other consumer's claim to lapse")
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)).isoformat()
    event = asyncio.run(anext(trigger(pipeline_name=pipeline, timeout_at=deadline).run())).payload  # type: ignore[arg-type, var-annotated]
    assert event["status"] == "timeout", event
    assert queue_counts(local_aws, queue) == (0, 0)
    assert [c["status"] for c in answer_calls(local_aws, token)] == [200]
