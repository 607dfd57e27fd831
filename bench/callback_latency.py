"""Time from callback message sent to token answered: our deferrable sensor vs the Amazon SqsSensor.

Against the local endpoint (in a child process), a pipeline whose only step is a Callback step; each
execution's callback message is sent when the step starts (``StartTime`` of ListPipelineExecutionSteps)
and the latency is the time until the answer task returned (SendPipelineExecutionStepSuccess, then the
message's delete).

Two handlers, each routed to its own execution (as a ``callback_handler`` fed by the start task's ARN):

* ``ours`` — :class:`SageMakerCallbackSensor` in deferrable mode, as it runs in a triggerer: one event
  loop holds every waiting :class:`SageMakerCallbackTrigger` (so one shared receiver per queue, long polling
  ``WaitTimeSeconds`` 20), and each fired event is answered by :class:`SageMakerCallbackSuccessOperator` in
  a worker (answer, then delete the message and sweep its copies);
* ``amazon SqsSensor`` — the Amazon provider's ``SqsSensor`` with its defaults (poke mode,
  ``poke_interval`` 60 s, ``wait_time_seconds`` 1, ``max_messages`` 5, ``delete_message_on_reception``)
  plus the JSONPath filter on ``pipelineExecutionArn`` that routing to one execution needs, one thread per
  sensor; once it returns, the token is answered in a worker with the same hook call.

As in Airflow, the triggerer and the workers are separate processes: the waiting side runs in this process,
and the worker tasks — the start tasks (StartPipelineExecution) and the answer tasks — run in one warm worker
process (``_worker_process.py``, ``spawn``; 16 start slots and 16 answer slots), started, with its hooks and
clients built, before the measured window. The answered time is taken in the worker when the answer task
returns. Both sides skip Airflow's own scheduling (resuming a deferred task, starting a task process), which
adds the same few seconds to each. ``1`` concurrent callback is repeated ``--repeats`` times; ``100`` run at
once. A handler that has not answered within ``--cap`` seconds is counted as unanswered. Prints a table; no
assertions.

    .venv/bin/python bench/callback_latency.py [--concurrency 1 100] [--repeats 5] [--cap 300]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
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
from _worker_process import WorkerProcess

ROLE_ARN = "arn:aws:iam::123456789012:role/bench"

#: Worker slots of the worker process: start tasks and answer tasks (as in a worker with concurrency 16).
WORKER_POOLS = {"start": 16, "answer": 16}


def context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="bench", task_id="answer", run_id="bench", try_number=1, xcom_push=lambda *a, **k: None
    )
    return {"ti": ti}


class Lab:
    """The endpoint's pipeline and queue for one measurement (created in this process, before the window)."""

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


# -------------------------------------------------------------------------------------------------------
# the worker process: what Airflow's workers run (start tasks, answer tasks); never the measured process


class Starts:
    """The start tasks of one measurement: each starts one execution of ``pipeline`` and returns its ARN."""

    def __init__(self, pipeline: str) -> None:
        import boto3

        self.pipeline = pipeline
        self.sagemaker = boto3.client("sagemaker")
        self._starts = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self._starts += 1
            number = self._starts
        response = self.sagemaker.start_pipeline_execution(
            PipelineName=self.pipeline,
            PipelineParameters=[{"Name": "Id", "Value": str(number)}],
            ClientRequestToken=f"bench-{self.pipeline}-{number:06d}".ljust(32, "0"),
        )
        return str(response["PipelineExecutionArn"])


_worker = SimpleNamespace(starts=None, hooks=None)  # set by prepare_worker, in the worker process only


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


def init_worker() -> None:
    """The worker process's start: logging, direct ``execute()`` calls allowed, the answer code imported."""
    logging.basicConfig(level=logging.WARNING)
    from airflow.sdk.bases.operator import ExecutorSafeguard
    from sagemaker_pipelines_provider.operators import callback

    ExecutorSafeguard.test_mode = True  # operators' execute() is called directly here, as in unit tests
    _ = callback.SageMakerCallbackSuccessOperator


def prepare_worker(pipeline: str) -> None:
    """Before a measurement's window: fresh warm hooks and a start client for its pipeline."""
    _worker.starts = Starts(pipeline)
    _worker.hooks = warm_hooks()


def start_execution() -> str:
    """A start task: start one execution, return its ARN (the sensor's input)."""
    return str(_worker.starts())


def answer_message(message: dict[str, Any]) -> float:
    """Our answer task: ``SageMakerCallbackSuccessOperator`` on the sensor's message; when it returned."""
    from sagemaker_pipelines_provider.operators.callback import SageMakerCallbackSuccessOperator

    operator = SageMakerCallbackSuccessOperator(task_id="answer", message=message)
    operator.hook, operator.queue_hook = _worker.hooks  # type: ignore[misc]  # a warm worker: clients already built
    operator.execute(context())  # type: ignore[arg-type]
    return time.time()


def answer_token(token: str) -> float:
    """The Amazon side's answer task: the same hook call on the SqsSensor's token; when it returned."""
    _worker.hooks[0].send_step_success(token, {})
    return time.time()


# -------------------------------------------------------------------------------------------------------
# ours: one triggerer event loop (this process), answers in the worker process


def warm_triggerer() -> None:
    """What a running triggerer has done once in its life: open an SQS and a SageMaker async client.

    The first aiobotocore client of a process costs ~0.5 s (imports, service models); a triggerer pays it
    once when it starts, not per burst of callbacks, so it stays out of the measured window.
    """
    from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook

    async def open_clients() -> None:
        for hook in (SageMakerCallbackQueueHook(), SageMakerPipelineHook()):
            async with hook.async_client():
                pass

    asyncio.run(open_clients())


def run_ours(lab: Lab, worker: WorkerProcess, count: int, cap: float) -> dict[str, float]:
    from sagemaker_pipelines_provider.triggers.callback import SageMakerCallbackTrigger

    answered: dict[str, float] = {}
    answers: list[concurrent.futures.Future[Any]] = []

    async def triggerer() -> list[str]:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[concurrent.futures.Future[Any]] = asyncio.Queue()

        async def one(arn: str) -> None:
            trigger = SageMakerCallbackTrigger(
                queue_url=lab.queue, pipeline_execution_arn=arn, visibility_timeout=300, wait_time_seconds=20
            )
            event = await anext(trigger.run())
            if event.payload["status"] == "success":
                answers.append(worker.submit("answer", answer_message, event.payload["message"]))
                answered[arn] = await asyncio.wrap_future(answers[-1])

        # the start tasks: each sensor defers as soon as its own start task has returned its ARN
        for _ in range(count):
            started = worker.submit("start", start_execution)
            started.add_done_callback(lambda done: loop.call_soon_threadsafe(arrived.put_nowait, done))
        arns: list[str] = []
        waits = []
        while len(arns) < count:
            arn = (await arrived.get()).result()
            arns.append(arn)
            waits.append(asyncio.create_task(one(arn)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout=cap)
        return arns

    arns = asyncio.run(triggerer())
    concurrent.futures.wait(answers)  # answers still running past the cap finish before the next measurement
    return {arn: answered.get(arn, float("nan")) for arn in arns}


# -------------------------------------------------------------------------------------------------------
# the Amazon provider's SqsSensor with its defaults (this process), answers in the worker process


def run_amazon(lab: Lab, worker: WorkerProcess, count: int, cap: float) -> dict[str, float]:
    from airflow.providers.amazon.aws.sensors.sqs import SqsSensor

    answered: dict[str, float] = {}
    deadline = time.monotonic() + cap
    stop = threading.Event()

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
                answered[arn] = worker.submit("answer", answer_token, body["token"]).result()
                return
            stop.wait(min(sensor.poke_interval, max(0.0, deadline - time.monotonic())))

    with ThreadPoolExecutor(max_workers=count) as pool:
        arns: list[str] = []
        for _ in range(count):
            arn = worker.call("start", start_execution)
            arns.append(arn)
            pool.submit(handle, arn)
    stop.set()
    return {arn: answered.get(arn, float("nan")) for arn in arns}


# -------------------------------------------------------------------------------------------------------

Run = Callable[[Lab, WorkerProcess, int, float], dict[str, float]]


def measure(name: str, run: Run, worker: WorkerProcess, count: int, repeats: int, cap: float) -> list[Any]:
    latencies: list[float] = []
    unanswered = 0
    started = time.monotonic()
    for attempt in range(repeats):
        lab = Lab(f"bench-{name.split()[0]}-{count}-{attempt}-{int(time.time()) % 100000}")
        worker.call("answer", prepare_worker, lab.pipeline)  # outside the window, like a warm worker
        for arn, answered_at in run(lab, worker, count, cap).items():
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
    print("machine:", json.dumps(machine()), flush=True)
    rows: list[list[Any]] = []
    with endpoint_process() as endpoint, WorkerProcess(WORKER_POOLS, initializer=init_worker) as worker:
        endpoint.controls.set_time_scale(1.0)
        endpoint.controls.set_default_step_duration(0.05)
        warm_triggerer()
        sides: list[tuple[str, Run]] = [
            ("ours (deferrable, shared receiver)", run_ours),
            ("amazon SqsSensor (defaults)", run_amazon),
        ]
        for name, run in sides:
            if args.only and not name.startswith(args.only):
                continue
            for count in args.concurrency:
                repeats = args.repeats if count == 1 else 1
                row = measure(name, run, worker, count, repeats, args.cap)
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
