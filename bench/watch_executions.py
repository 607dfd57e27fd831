"""Watching N concurrent executions: our execution trigger vs the Amazon SageMakerPipelineTrigger.

For each N (default 50, 200, 1000) and each side, on the local endpoint (a child process, so its CPU is
not the watcher's):

1. reset the endpoint, create one 2-step pipeline whose steps last ``--step-seconds`` simulated seconds
   each (default 90: an execution lasts 3 simulated minutes), time scale ``--time-scale`` (default 1/30:
   3 minutes run in 6 s of real time);
2. start N executions of it with a pool of boto3 clients (not measured);
3. in **one** asyncio event loop in this process, run N triggers of the side at once, every one polling
   at the same interval, ``--poll`` real seconds (default 1 s = 30 simulated seconds, the default poll
   interval of both providers), until every trigger has fired;
4. measure, over the watch window only: SageMaker API calls by action (the endpoint's call record),
   calls per execution per simulated minute watched, detection latency (execution end — its
   ``LastModifiedTime`` as the engine set it on the terminal transition — to the moment this process
   received the trigger's event; both clocks are this machine's), the process's peak RSS and its growth
   over the side's baseline (psutil, sampled every 50 ms by a thread), the process CPU time
   (``time.process_time``: every thread of this process, event loop and aiobotocore's helper threads),
   and the endpoint's CPU time (its process, for reference).

Then the ratio ours/anchor per N. Sides run one after the other in the same run; by default ours first,
so ours pays for the heap growth the first side causes (the RSS growth of the second side is understated
when the first one already grew the heap). Both sides use ``aws_conn_id=None`` (credentials and
``AWS_ENDPOINT_URL`` from the environment) and logging at WARNING (a triggerer's log I/O is not counted).
The anchor's ``waiter_delay`` is cast to ``int`` by the anchor itself, so ``--poll`` must be a whole
number of seconds.

    .venv/bin/python bench/watch_executions.py [--sizes 50 200 1000] [--poll 1] [--time-scale 0.0333]
        [--step-seconds 90] [--order ours anchor] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from _common import (
    EndpointProcess,
    endpoint_process,
    isolate_airflow_home,
    machine,
    percentile,
    print_table,
)

PIPELINE = "bench-watch"
ROLE_ARN = "arn:aws:iam::123456789012:role/bench"
SIDES = ("ours", "anchor")


GATE_QUEUE = "bench-gate"
GATE_QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/123456789012/{GATE_QUEUE}"
OWN_ACTIONS = {"SendPipelineExecutionStepSuccess"}  # the bench's own calls (opening the gate)
POLL_ACTIONS = {"DescribePipelineExecution", "ListPipelineExecutionSteps"}


def definition() -> str:
    """Gate (Callback, answered by the bench once every trigger polls) -> Prepare -> Train."""
    steps = [
        {
            "Name": "Gate",
            "Type": "Callback",
            "Arguments": {},
            "SqsQueueUrl": GATE_QUEUE_URL,
            "OutputParameters": [],
        },
        {"Name": "Prepare", "Type": "Processing", "Arguments": {}, "DependsOn": ["Gate"]},
        {"Name": "Train", "Type": "Training", "Arguments": {}, "DependsOn": ["Prepare"]},
    ]
    return json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": steps})


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=32, retries={"mode": "standard", "total_max_attempts": 10})
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


class RssSampler:
    """Peak RSS of this process, sampled by a thread (not by the event loop, which may be busy)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.thread_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)
        self.thread_cpu = time.thread_time()

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)


class Gate:
    """A thread that waits until every execution has been polled by its trigger, then answers every
    execution's Gate callback: the executions run their 2 timed steps only once all triggers are live,
    so the figures after ``opened_at`` are the side's steady state, whatever its set-up cost."""

    def __init__(
        self, endpoint: EndpointProcess, arns: list[str], tokens: list[str], cursor: int, setup_cap: float
    ) -> None:
        self.endpoint = endpoint
        self.arns = set(arns)
        self.tokens = tokens
        self.cursor = cursor
        self.setup_cap = setup_cap
        self.all_polled_at: float | None = None
        self.polled = 0  # executions polled at least once when the gate opened
        self.setup_capped = False  # the gate opened at the set-up cap, not every execution polled
        self.opened_at: float | None = None
        self.cpu_at_open: float | None = None
        self.thread_cpu_at_open = 0.0
        self.thread_cpu = 0.0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            self._wait_all_polled()
            tokens = self.tokens
            self.opened_at = time.time()
            self.cpu_at_open = time.process_time()
            self.thread_cpu_at_open = time.thread_time()
            sagemaker = _client("sagemaker")
            for token in tokens:
                sagemaker.send_pipeline_execution_step_success(CallbackToken=token)
        except BaseException as err:
            self.error = err
        finally:
            self.thread_cpu = time.thread_time()

    def _wait_all_polled(self) -> None:
        """Until every execution has been polled once, or ``setup_cap`` seconds: then the gate opens
        anyway (``setup_capped``), so a side too slow to set up still yields figures, not a hang."""
        seen: set[str] = set()
        deadline = time.monotonic() + self.setup_cap
        while True:
            for call in self.endpoint.controls.calls(service="sagemaker", since=self.cursor):
                self.cursor = call["seq"]
                if call["action"] in POLL_ACTIONS:
                    seen.add(call["args"].get("PipelineExecutionArn", ""))
            self.polled = len(self.arns & seen)
            if self.arns <= seen:
                self.all_polled_at = time.time()
                return
            if time.monotonic() > deadline:
                self.setup_capped = True
                return
            time.sleep(0.5)


def gate_tokens(arns: list[str], timeout: float = 600.0) -> list[str]:
    """Every execution's Gate callback token, drained from the queue before the watch (not measured):
    each message is deleted once read, so the rest stay receivable (no coupon collecting at N = 1000)."""
    sqs = _client("sqs")
    url = sqs.get_queue_url(QueueName=GATE_QUEUE)["QueueUrl"]
    wanted = set(arns)
    tokens: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while not wanted <= tokens.keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted - tokens.keys())} Gate callback messages never arrived")
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=600
        ).get("Messages", [])
        for message in messages:
            body = json.loads(message["Body"])
            tokens[body["pipelineExecutionArn"]] = body["token"]
        if messages:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
    return [tokens[arn] for arn in arns]


def start_executions(n: int) -> list[str]:
    _client("sqs").create_queue(QueueName=GATE_QUEUE)
    client = _client("sagemaker")
    client.create_pipeline(PipelineName=PIPELINE, PipelineDefinition=definition(), RoleArn=ROLE_ARN)
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(
            pool.map(
                lambda i: client.start_pipeline_execution(
                    PipelineName=PIPELINE, PipelineExecutionDisplayName=f"e{i}"
                )["PipelineExecutionArn"],
                range(n),
            )
        )


def end_times(arns: list[str]) -> tuple[dict[str, float], collections.Counter[str]]:
    """Each execution's terminal status and end (LastModifiedTime, epoch seconds), read after the watch."""
    client = _client("sagemaker")

    def describe(arn: str) -> dict[str, Any]:
        return client.describe_pipeline_execution(PipelineExecutionArn=arn)  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=16) as pool:
        described = list(pool.map(describe, arns))
    ends = {arn: d["LastModifiedTime"].timestamp() for arn, d in zip(arns, described, strict=True)}
    return ends, collections.Counter(d["PipelineExecutionStatus"] for d in described)


def make_trigger(side: str, arn: str, poll: int) -> Any:
    if side == "ours":
        from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger

        return SageMakerPipelineExecutionTrigger(arn, aws_conn_id=None, poll_interval=float(poll))
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerPipelineTrigger

    return SageMakerPipelineTrigger(
        waiter_type=SageMakerPipelineTrigger.Type.COMPLETE,
        pipeline_execution_arn=arn,
        waiter_delay=poll,
        waiter_max_attempts=100_000,
        aws_conn_id=None,
    )


async def first_event(trigger: Any) -> tuple[float, dict[str, Any]]:
    """(receive time, payload) of the trigger's first event; the generator is closed right after."""
    agen = trigger.run()
    try:
        event = await agen.__anext__()
        return time.time(), dict(event.payload)
    finally:
        await agen.aclose()


async def watch(
    side: str,
    arns: list[str],
    tokens: list[str],
    poll: int,
    setup_cap: float,
    detect_s: float,
    endpoint: EndpointProcess,
) -> dict[str, Any]:
    """Run the side's triggers until every one fired, or ``detect_s`` seconds after the gate opened
    (the gate opens when every execution was polled, or at ``setup_cap``): the rest count as
    "timeout", i.e. not detected within the limit."""
    gc.collect()
    cursor = max((c["seq"] for c in endpoint.controls.calls(limit=None)), default=0)
    sampler = RssSampler()
    baseline = sampler.peak
    cpu_before = time.process_time()
    started = time.time()
    gate = Gate(endpoint, arns, tokens, cursor, setup_cap)
    with sampler.running():
        tasks = [asyncio.create_task(first_event(make_trigger(side, arn, poll))) for arn in arns]
        gate.start()
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
            opened = gate.opened_at
            limit = opened + detect_s if opened is not None else started + setup_cap + detect_s + 60
            if time.time() > limit:
                break
        done = {t for t in tasks if t.done()}
        pending = set(tasks) - done
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        gate.join()
    finished = time.time()
    helpers_cpu = gate.thread_cpu + sampler.thread_cpu
    cpu_total = time.process_time() - cpu_before - helpers_cpu
    cpu_steady = float("nan")
    if gate.cpu_at_open is not None:
        cpu_steady = time.process_time() - gate.cpu_at_open - (gate.thread_cpu - gate.thread_cpu_at_open)
    received: dict[str, float] = {}
    errors: collections.Counter[str] = collections.Counter()
    for arn, task in zip(arns, tasks, strict=True):
        if task in done and task.exception() is None:
            at, payload = task.result()
            received[arn] = at
            if payload.get("status") != "success":
                errors[str(payload.get("status"))] += 1
        else:
            errors["timeout" if task in pending else type(task.exception()).__name__] += 1
    if gate.error is not None:
        errors[f"gate: {gate.error}"] += 1
    return {
        "started": started,
        "all_polled": gate.all_polled_at,
        "polled": gate.polled,
        "setup_capped": gate.setup_capped,
        "opened": gate.opened_at,
        "finished": finished,
        "received": received,
        "errors": errors,
        "cpu_s": cpu_total,
        "cpu_steady_s": cpu_steady,
        "rss_peak_mib": sampler.peak / 2**20,
        "rss_growth_mib": (sampler.peak - baseline) / 2**20,
    }


async def run_side(endpoint: EndpointProcess, side: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    controls = endpoint.controls
    controls.reset()
    controls.set_time_scale(args.time_scale)
    controls.set_default_step_duration(args.step_seconds)
    t0 = time.monotonic()
    arns = start_executions(n)
    tokens = gate_tokens(arns)
    start_s = time.monotonic() - t0
    execution_real_s = 2 * args.step_seconds * args.time_scale
    endpoint_cpu_before = endpoint.cpu_seconds()
    # The anchor opens one client per trigger, one at a time (~0.1-0.5 s each here): its set-up is
    # capped (--setup-cap, default proportional to N); detection then has 10 executions' time + 60 s.
    setup_cap = args.setup_cap if args.setup_cap is not None else 30 + 0.3 * n
    detect_s = execution_real_s * 10 + 60
    watched = await watch(side, arns, tokens, args.poll, setup_cap, detect_s, endpoint)
    endpoint_cpu = endpoint.cpu_seconds() - endpoint_cpu_before
    ends, statuses = end_times(arns)
    started, finished = watched["started"], watched["finished"]
    opened = watched["opened"] or finished
    calls = [
        c
        for c in controls.calls(service="sagemaker")
        if started <= c["time"] <= finished and c["action"] not in OWN_ACTIONS
    ]
    steady = [c for c in calls if c["time"] >= opened]
    received = watched["received"]
    latencies = [received[a] - ends[a] for a in arns if a in received]
    steady_minutes = sum((received.get(a, finished) - opened) / args.time_scale / 60 for a in arns)
    return {
        "side": side,
        "n": n,
        "start_s": start_s,
        "setup_s": (watched["all_polled"] or watched["opened"] or finished) - started,
        "polled": watched["polled"],
        "setup_capped": watched["setup_capped"],
        "setup_cap_s": setup_cap,
        "detect_limit_s": detect_s,
        "watch_s": finished - started,
        "events": len(received),
        "errors": dict(watched["errors"]),
        "statuses": dict(statuses),
        "calls": len(calls),
        "by_action": dict(collections.Counter(c["action"] for c in calls)),
        "steady_calls": len(steady),
        "calls_per_exec_min": len(steady) / steady_minutes if steady_minutes > 0 else float("nan"),
        "p50_s": percentile(latencies, 0.50),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies) if latencies else float("nan"),
        "cpu_s": watched["cpu_s"],
        "cpu_steady_s": watched["cpu_steady_s"],
        "rss_peak_mib": watched["rss_peak_mib"],
        "rss_growth_mib": watched["rss_growth_mib"],
        "endpoint_cpu_s": endpoint_cpu,
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(rows: list[dict[str, Any]], args: argparse.Namespace, load: str) -> None:
    print(
        f"\nWatching N concurrent executions of one 2-step pipeline "
        f"({2 * args.step_seconds / 60:g} simulated minutes each, time scale {args.time_scale:g}: "
        f"{2 * args.step_seconds * args.time_scale:g} s real), "
        f"both sides polling every {args.poll} s real = {args.poll / args.time_scale:g} s simulated, "
        f"one asyncio loop, one process. Load average at start: {load}."
    )
    print_table(
        "Watching: per side",
        [
            "N",
            "side",
            "events",
            "errors",
            "polled",
            "setup s",
            "setup ms/trigger",
            "SageMaker calls",
            "steady calls",
            "calls/exec/min",
            "p50 s",
            "p95 s",
            "max s",
            "CPU s",
            "CPU steady s",
            "peak RSS MiB",
            "RSS growth MiB",
            "endpoint CPU s",
            "watch s",
        ],
        [
            [
                r["n"],
                r["side"],
                r["events"],
                sum(r["errors"].values()),
                f"{r['polled']}/{r['n']}",
                r["setup_s"],
                1000 * r["setup_s"] / r["polled"] if r["polled"] else float("nan"),
                r["calls"],
                r["steady_calls"],
                r["calls_per_exec_min"],
                r["p50_s"],
                r["p95_s"],
                r["max_s"],
                r["cpu_s"],
                r["cpu_steady_s"],
                r["rss_peak_mib"],
                r["rss_growth_mib"],
                r["endpoint_cpu_s"],
                r["watch_s"],
            ]
            for r in rows
        ],
    )
    actions = sorted({a for r in rows for a in r["by_action"]})
    print_table(
        "Watching: SageMaker API calls by action",
        ["N", "side", *actions],
        [[r["n"], r["side"], *(r["by_action"].get(a, 0) for a in actions)] for r in rows],
    )
    ratio_rows = []
    for n in args.sizes:
        side = {r["side"]: r for r in rows if r["n"] == n}
        if set(side) != set(SIDES):
            continue
        ours, anchor = side["ours"], side["anchor"]
        ratio_rows.append(
            [
                n,
                _ratio(ours["calls"], anchor["calls"]),
                _ratio(ours["calls_per_exec_min"], anchor["calls_per_exec_min"]),
                _ratio(ours["p50_s"], anchor["p50_s"]),
                _ratio(ours["p95_s"], anchor["p95_s"]),
                _ratio(ours["setup_s"], anchor["setup_s"]),
                _ratio(ours["cpu_s"], anchor["cpu_s"]),
                _ratio(ours["cpu_steady_s"], anchor["cpu_steady_s"]),
                _ratio(ours["rss_peak_mib"], anchor["rss_peak_mib"]),
                _ratio(ours["rss_growth_mib"], anchor["rss_growth_mib"]),
                _ratio(ours["endpoint_cpu_s"], anchor["endpoint_cpu_s"]),
            ]
        )
    print_table(
        "Watching: ratio ours / anchor (below 1: ours uses less)",
        [
            "N",
            "calls",
            "calls/exec/min",
            "p50 latency",
            "p95 latency",
            "setup",
            "CPU",
            "CPU steady",
            "peak RSS",
            "RSS growth",
            "endpoint CPU",
        ],
        ratio_rows,
    )
    for r in rows:
        if r["setup_capped"]:
            rate = r["polled"] / r["setup_s"] if r["setup_s"] else float("nan")
            projected = r["n"] / rate if rate else float("nan")
            print(
                f"note: N={r['n']} {r['side']}: set-up not finished within the {r['setup_cap_s']:.0f} s cap: "
                f"{r['polled']} of {r['n']} executions polled ({rate:.2f} triggers/s, "
                f"{1000 / rate if rate else float('nan'):.0f} ms each; whole set-up projected "
                f"{projected:.0f} s); {r['events']} of {r['n']} detected, the other "
                f"{r['n'] - r['events']} did not detect within {r['detect_limit_s']:.0f} s "
                "of the gate opening"
            )
        elif r["events"] < r["n"]:
            print(
                f"note: N={r['n']} {r['side']}: {r['n'] - r['events']} executions not detected within "
                f"{r['detect_limit_s']:.0f} s of the gate opening"
            )
        if r["errors"] or set(r["statuses"]) != {"Succeeded"}:
            print(f"note: N={r['n']} {r['side']}: events not success {r['errors']}, statuses {r['statuses']}")


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with endpoint_process() as endpoint:
        # Import both sides before any baseline, so module import is in neither side's figures.
        make_trigger("ours", "arn:aws:sagemaker:us-east-1:123456789012:pipeline/x/execution/y", args.poll)
        make_trigger("anchor", "arn:aws:sagemaker:us-east-1:123456789012:pipeline/x/execution/y", args.poll)
        for n in args.sizes:
            for side in args.order:
                row = await run_side(endpoint, side, n, args)
                rows.append(row)
                print(
                    f"  N={n:<5} {side:<6} {row['calls']:>6} calls, p50 {row['p50_s']:.2f} s, "
                    f"p95 {row['p95_s']:.2f} s, cpu {row['cpu_s']:.1f} s, watch {row['watch_s']:.1f} s "
                    f"(starts took {row['start_s']:.1f} s)",
                    flush=True,
                )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--poll", type=int, default=1, help="real seconds between polls (whole seconds)")
    parser.add_argument("--time-scale", type=float, default=1 / 30)
    parser.add_argument("--step-seconds", type=float, default=90.0, help="simulated seconds per step")
    parser.add_argument("--order", nargs=2, choices=SIDES, default=list(SIDES))
    parser.add_argument(
        "--setup-cap",
        type=float,
        default=None,
        help="seconds a side may take to poll every execution once before the gate opens anyway "
        "(default 30 + 0.3 s x N)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    isolate_airflow_home()
    logging.basicConfig(level=logging.WARNING)
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print("machine:", json.dumps(machine()), flush=True)
    rows = asyncio.run(main_async(args))
    report(rows, args, load)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
