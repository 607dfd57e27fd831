"""Time from callback message sent to token answered: our deferrable sensor vs the Amazon SqsSensor.

Against the local endpoint (in a child process), a pipeline whose only step is a Callback step; each
execution's callback message is sent when the step starts (``StartTime`` of ListPipelineExecutionSteps)
and the latency is the time until SendPipelineExecutionStepSuccess returned to the handler.

Two handlers, each routed to its own execution (as a ``callback_handler`` fed by the start task's ARN):

* ``ours`` — :class:`SageMakerCallbackSensor` in deferrable mode, as it runs in a triggerer: one event
  loop holds every waiting :class:`SageMakerCallbackTrigger` (so one shared receiver per queue, long polling
  ``WaitTimeSeconds`` 20), and each fired event is answered by :class:`SageMakerCallbackSuccessOperator` on a
  pool of 16 worker threads (answer, then delete the message and sweep its copies);
* ``amazon SqsSensor`` — the Amazon provider's ``SqsSensor`` with its defaults (poke mode,
  ``poke_interval`` 60 s, ``wait_time_seconds`` 1, ``max_messages`` 5, ``delete_message_on_reception``)
  plus the JSONPath filter on ``pipelineExecutionArn`` that routing to one execution needs, one thread per
  sensor; once it returns, the token is answered with the same hook call.

Both sides skip Airflow's own scheduling (resuming a deferred task, starting a worker), which adds the same
few seconds to each. ``1`` concurrent callback is repeated ``--repeats`` times; ``100`` run at once. A
handler that has not answered within ``--cap`` seconds is counted as unanswered. Prints a table; no
assertions.

    .venv/bin/python bench/callback_latency.py [--concurrency 1 100] [--repeats 5] [--cap 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

from _common import endpoint_process, isolate_airflow_home, machine, percentile, print_table

ROLE_ARN = "arn:aws:iam::123456789012:role/bench"


def context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="bench", task_id="answer", run_id="bench", try_number=1, xcom_push=lambda *a, **k: None
    )
    return {"ti": ti}


class Lab:
    """The endpoint's pipeline, queue and clients for one measurement."""

    def __init__(self, name: str) -> None:
        import boto3

        self.sagemaker = boto3.client("sagemaker")
        self.sqs = boto3.client("sqs")
        self.queue = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        definition = {
            "Version": "2020-12-01",
            "Parameters": [{"Name": "Id", "Type": "String", "DefaultValue": "0"}],
            "Steps": [
                {
                    "Name": "Validate",
                    "Type": "Callback",
                    "Arguments": {"id": {"Get": "Parameters.Id"}},
                    "SqsQueueUrl": self.queue,
                    "OutputParameters": [],
                }
            ],
        }
        self.pipeline = name
        self.sagemaker.create_pipeline(  # type: ignore[call-arg]
            PipelineName=name, PipelineDefinition=json.dumps(definition), RoleArn=ROLE_ARN
        )
        self._starts = 0
        self._lock = threading.Lock()

    def start(self) -> str:
        with self._lock:
            self._starts += 1
            number = self._starts
        response = self.sagemaker.start_pipeline_execution(
            PipelineName=self.pipeline,
            PipelineParameters=[{"Name": "Id", "Value": str(number)}],
            ClientRequestToken=f"bench-{self.pipeline}-{number:06d}".ljust(32, "0"),
        )
        return str(response["PipelineExecutionArn"])

    def sent_at(self, arn: str) -> float | None:
        """When the callback step started (its message was sent), epoch seconds."""
        for _ in range(100):
            steps = self.sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn)[
                "PipelineExecutionSteps"
            ]
            for step in steps:
                if "Callback" in (step.get("Metadata") or {}) and step.get("StartTime"):
                    return float(step["StartTime"].timestamp())
            time.sleep(0.05)
        return None


def warm_hooks() -> tuple[Any, Any]:
    """A SageMaker hook and an SQS hook with their clients built (what a warm worker process holds).

    Both sides answer through these, so the figures compare receiving and routing, not client start-up.
    """
    from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook

    config = {"max_pool_connections": 64}
    sagemaker, sqs = SageMakerPipelineHook(config=config), SageMakerCallbackQueueHook(config=config)
    _ = sagemaker.conn, sqs.conn
    return sagemaker, sqs


# -------------------------------------------------------------------------------------------------------
# ours: one triggerer event loop, a pool of workers


def run_ours(lab: Lab, count: int, cap: float) -> dict[str, float]:
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackTrigger

    answered: dict[str, float] = {}
    workers = ThreadPoolExecutor(max_workers=16)
    hooks = warm_hooks()

    def answer(message: dict[str, Any]) -> None:
        operator = SageMakerCallbackSuccessOperator(task_id="answer", message=message)
        operator.hook, operator.queue_hook = hooks  # type: ignore[misc]  # a warm worker: clients already built
        operator.execute(context())  # type: ignore[arg-type]
        answered[message["pipeline_execution_arn"]] = time.time()

    async def triggerer() -> list[str]:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[str] = asyncio.Queue()

        async def one(arn: str) -> None:
            trigger = SageMakerCallbackTrigger(
                queue_url=lab.queue, pipeline_execution_arn=arn, visibility_timeout=300, wait_time_seconds=20
            )
            event = await anext(trigger.run())
            if event.payload["status"] == "success":
                await loop.run_in_executor(workers, answer, event.payload["message"])

        def start_all() -> None:  # the start tasks: each sensor defers as soon as its ARN is known
            with ThreadPoolExecutor(max_workers=16) as starter:
                for arn in starter.map(lambda _: lab.start(), range(count)):
                    loop.call_soon_threadsafe(arrived.put_nowait, arn)

        starting = loop.run_in_executor(None, start_all)
        arns: list[str] = []
        waits = []
        while len(arns) < count:
            arn = await arrived.get()
            arns.append(arn)
            waits.append(asyncio.create_task(one(arn)))
        await starting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout=cap)
        return arns

    arns = asyncio.run(triggerer())
    workers.shutdown(wait=True)
    return {arn: answered[arn] for arn in arns if arn in answered} | {
        arn: float("nan") for arn in arns if arn not in answered
    }


# -------------------------------------------------------------------------------------------------------
# the Amazon provider's SqsSensor with its defaults


def run_amazon(lab: Lab, count: int, cap: float) -> dict[str, float]:
    from airflow.providers.amazon.aws.sensors.sqs import SqsSensor

    answered: dict[str, float] = {}
    deadline = time.monotonic() + cap
    stop = threading.Event()
    answer_hook = warm_hooks()[0]

    def handle(arn: str) -> None:
        sensor = SqsSensor(
            task_id="wait",
            sqs_queue=lab.queue,
            message_filtering="jsonpath",
            message_filtering_config="pipelineExecutionArn",
            message_filtering_match_values=[arn],
        )
        pushed: list[Any] = []
        ti = SimpleNamespace(xcom_push=lambda key, value: pushed.append(value))
        while time.monotonic() < deadline and not stop.is_set():
            if sensor.poke({"ti": ti}):  # type: ignore[arg-type, typeddict-item]
                body = json.loads(pushed[-1][0]["Body"])
                token = body["token"]
                answer_hook.send_step_success(token, {})
                answered[arn] = time.time()
                return
            stop.wait(min(sensor.poke_interval, max(0.0, deadline - time.monotonic())))

    with ThreadPoolExecutor(max_workers=count) as pool:
        arns: list[str] = []
        for _ in range(count):
            arn = lab.start()
            arns.append(arn)
            pool.submit(handle, arn)
    stop.set()
    return {arn: answered.get(arn, float("nan")) for arn in arns}


# -------------------------------------------------------------------------------------------------------


def measure(
    name: str, run: Callable[[Lab, int, float], dict[str, float]], count: int, repeats: int, cap: float
) -> list[Any]:
    latencies: list[float] = []
    unanswered = 0
    started = time.monotonic()
    for attempt in range(repeats):
        lab = Lab(f"bench-{name.split()[0]}-{count}-{attempt}-{int(time.time()) % 100000}")
        for arn, answered_at in run(lab, count, cap).items():
            sent = lab.sent_at(arn)
            if answered_at != answered_at or sent is None:  # NaN: not answered within the cap
                unanswered += 1
                continue
            latencies.append(answered_at - sent)
    return [
        name,
        count,
        len(latencies) + unanswered,
        unanswered,
        percentile(latencies, 0.5),
        percentile(latencies, 0.95),
        max(latencies) if latencies else float("nan"),
        time.monotonic() - started,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the 1-callback case")
    parser.add_argument("--cap", type=float, default=300.0, help="seconds before a handler counts unanswered")
    parser.add_argument("--only", choices=["ours", "amazon"], help="run one side only")
    args = parser.parse_args(argv)

    isolate_airflow_home()
    logging.basicConfig(level=logging.WARNING)
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ExecutorSafeguard.test_mode = True  # operators' execute() is called directly here, as in unit tests
    print("machine:", json.dumps(machine()), flush=True)
    rows: list[list[Any]] = []
    with endpoint_process() as endpoint:
        endpoint.controls.set_time_scale(1.0)
        endpoint.controls.set_default_step_duration(0.05)
        sides: list[tuple[str, Callable[[Lab, int, float], dict[str, float]]]] = [
            ("ours (deferrable, shared receiver)", run_ours),
            ("amazon SqsSensor (defaults)", run_amazon),
        ]
        for name, run in sides:
            if args.only and not name.startswith(args.only):
                continue
            for count in args.concurrency:
                repeats = args.repeats if count == 1 else 1
                row = measure(name, run, count, repeats, args.cap)
                print(
                    f"{name} x{count}: p50 {row[4]:.2f}s p95 {row[5]:.2f}s ({row[3]} unanswered)", flush=True
                )
                rows.append(row)
    print_table(
        f"Callback message sent -> token answered (seconds; {dt.date.today()})",
        ["handler", "concurrent", "callbacks", "unanswered", "p50 s", "p95 s", "max s", "wall s"],
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
