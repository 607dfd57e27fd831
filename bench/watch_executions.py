"""Watching N executions for 10 simulated minutes: the Amazon trigger, ours polling, ours on events.

For each N (default 200 and 1000) this runs, one after the other on the local endpoint (a child process,
so its CPU is not the watcher's):

- ``amazon``: the Amazon provider's ``SageMakerPipelineTrigger`` (``waiter_delay`` = the interval);
- ``polling``: our ``SageMakerPipelineExecutionTrigger`` without ``event_queue_url``, given
  ``parameters=`` and ``step_types=`` as our operator gives them;
- ``events``: the same with ``event_queue_url`` = the seeded queue ``sagemaker-pipeline-events`` and
  ``safety_poll_interval`` = ``--safety-poll`` simulated seconds (default 600, the provider's default);
- ``events-drop20``: ``events`` with 20 % of the endpoint's EventBridge events dropped (seeded) and the
  safety poll every ``--drop-safety-poll`` simulated seconds (default 120), so that it runs within the
  window: every execution must still be detected;
- ``events-2loops``: ``events`` with the triggers split between two triggerer loops (two threads, each
  its own asyncio loop, so each its own event receiver and poller) sharing the one queue.

Every run: reset the endpoint, seed it (the events queue and rule), create the pipeline ``Gate``
(Callback) -> ``Prepare`` -> ``Train`` with one String parameter, start N executions and collect their
Gate callback tokens (not measured). Then the run's N triggers start in its loop(s); once every one has
made its first status read (the set-up, capped at 30 + 0.3 s x N), the window opens: the bench answers
the Gate callbacks evenly over its first 60 %, and each execution then runs its two timed steps (20 % of
the window each), so the executions end evenly between 40 % and 100 % of the window (minute 4 to 10).
Every trigger polls at the same interval, 30 simulated seconds = ``--round-seconds`` real seconds (the
time scale follows: default 1 s per 50 executions, at least 1 s, so that the Amazon side can keep up).

Measured, over the window (gate open -> last trigger fired): SageMaker calls by action (the endpoint's
call record; the bench's own callback answers excluded) and per execution, the SQS calls on the events
queue, detection latency (the execution's ``LastModifiedTime``, set by the engine on its terminal
transition, to the trigger's event in this process) in real and simulated seconds, the CPU time of this
process minus the bench's own threads, peak RSS and its growth (sampled every 50 ms by a thread), and
the endpoint's CPU. Goals of issue 13 are printed beside the figures, never asserted.

    .venv/bin/python bench/watch_executions.py [--sizes 200 1000] [--runs amazon polling events ...]
        [--round-seconds S] [--window-minutes 10] [--safety-poll 600] [--drop-safety-poll 120]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
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
STEP_TYPES = {"Gate": "Callback", "Prepare": "Processing", "Train": "Training"}
#: The pipeline's one parameter, as the operator passes it (the definition's default, formatted as AWS
#: reports it).
PARAMETERS = {"InputUri": "s3://bench/input"}
INTERVAL_SIM = 30.0  # simulated seconds between two polls, every side
GATE_SHARE = 0.6  # Gate callbacks are answered evenly over this share of the window ...
STEP_SHARE = 0.2  # ... then Prepare and Train last this share each: ends from 40 % to 100 % of it

GATE_QUEUE = "bench-gate"
GATE_QUEUE_URL = f"https://sqs.us-east-1.amazonaws.com/123456789012/{GATE_QUEUE}"
OWN_ACTIONS = {"SendPipelineExecutionStepSuccess"}  # the bench's own calls (answering the gates)
DROP_SEED = 13


@dataclass(frozen=True)
class Run:
    """One side of the comparison: who watches, with events or not, fault and loop settings."""

    name: str
    side: str  # "amazon" or "ours"
    events: bool = False
    drop: float = 0.0
    loops: int = 1


RUNS = {
    r.name: r
    for r in (
        Run("amazon", "amazon"),
        Run("polling", "ours"),
        Run("events", "ours", events=True),
        Run("events-drop20", "ours", events=True, drop=0.2),
        Run("events-2loops", "ours", events=True, loops=2),
    )
}


@dataclass(frozen=True)
class Timing:
    """The simulated design of one N in real seconds."""

    round_s: float  # real seconds per 30 simulated seconds
    window_min: float  # simulated minutes watched

    @property
    def scale(self) -> float:
        return self.round_s / INTERVAL_SIM

    @property
    def window_s(self) -> float:
        return self.window_min * 60 * self.scale

    def real(self, simulated_s: float) -> float:
        return simulated_s * self.scale


def definition() -> str:
    """Gate (Callback, answered by the bench) -> Prepare -> Train, one String parameter."""
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
    parameters = [{"Name": k, "Type": "String", "DefaultValue": v} for k, v in PARAMETERS.items()]
    return json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": parameters, "Steps": steps})


def _client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=32, retries={"mode": "standard", "total_max_attempts": 10})
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


class RssSampler:
    """Peak RSS of this process, sampled by a thread (not by the event loops, which may be busy)."""

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


# -- set-up (not measured) ---------------------------------------------------------------------------


def prepare(endpoint: EndpointProcess, run: Run, n: int, timing: Timing) -> tuple[str, list[str], list[str]]:
    """Reset and seed the endpoint, start N executions; (events queue URL, ARNs, Gate tokens).

    The seeded events rule is off while the executions start and, for runs without events, throughout:
    moto's SQS spends time proportional to a queue's depth on every message sent to it, so an events
    queue that nobody drains (or N x 3 start events at once) would slow the endpoint, not the watcher."""
    from sagemaker_pipelines_provider.local.seed import EVENTS_RULE, seed

    controls = endpoint.controls
    controls.reset()
    queue_url = str(seed(endpoint.url)["events_queue_url"])
    rules = _client("events")
    rules.disable_rule(Name=EVENTS_RULE)
    controls.set_time_scale(timing.scale)
    controls.set_default_step_duration(STEP_SHARE * timing.window_min * 60)
    controls.clear_event_faults()
    arns = start_executions(n)
    tokens = gate_tokens(arns)
    if run.drop:  # from here on: the drop counts are the watched events'
        controls.set_event_faults(drop_rate=run.drop, seed=DROP_SEED)
    if run.events:
        rules.enable_rule(Name=EVENTS_RULE)
    return queue_url, arns, tokens


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


def end_times(arns: list[str]) -> tuple[dict[str, float], collections.Counter[str]]:
    """Each execution's terminal status and end (LastModifiedTime, epoch seconds), read after the watch."""
    client = _client("sagemaker")

    def describe(arn: str) -> dict[str, Any]:
        return client.describe_pipeline_execution(PipelineExecutionArn=arn)  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=16) as pool:
        described = list(pool.map(describe, arns))
    ends = {arn: d["LastModifiedTime"].timestamp() for arn, d in zip(arns, described, strict=True)}
    return ends, collections.Counter(d["PipelineExecutionStatus"] for d in described)


# -- the watching side ------------------------------------------------------------------------------


def trigger_factory(run: Run, timing: Timing, queue_url: str, safety_sim: float) -> Callable[[str], Any]:
    """arn -> a trigger of the run's side, every side polling at ``timing.round_s`` real seconds."""
    if run.side == "amazon":
        from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerPipelineTrigger

        delay = int(timing.round_s)  # the Amazon trigger casts waiter_delay to int
        return lambda arn: SageMakerPipelineTrigger(
            waiter_type=SageMakerPipelineTrigger.Type.COMPLETE,
            pipeline_execution_arn=arn,
            waiter_delay=delay,
            waiter_max_attempts=100_000,
            aws_conn_id=None,
        )
    from sagemaker_pipelines_provider.triggers.pipeline import SageMakerPipelineExecutionTrigger

    events: dict[str, Any] = {}
    if run.events:
        events = {"event_queue_url": queue_url, "safety_poll_interval": timing.real(safety_sim)}
    return lambda arn: SageMakerPipelineExecutionTrigger(
        arn,
        aws_conn_id=None,
        poll_interval=timing.round_s,
        parameters=PARAMETERS,
        step_types=STEP_TYPES,
        **events,
    )


async def first_event(trigger: Any) -> tuple[float, dict[str, Any]]:
    """(receive time, payload) of the trigger's first event; the generator is closed right after."""
    agen = trigger.run()
    try:
        event = await agen.__anext__()
        return time.time(), dict(event.payload)
    finally:
        await agen.aclose()


class Watcher:
    """The run's triggers in ``loops`` threads, each running its own asyncio loop (a triggerer each), the
    ARNs dealt alternately; every loop waits until its triggers fired or ``stop_at`` (epoch) passed."""

    def __init__(self, arns: list[str], loops: int, make: Callable[[str], Any]) -> None:
        self.parts = [arns[i::loops] for i in range(loops)]
        self.make = make
        self.stop_at: float | None = None
        self.started: list[threading.Event] = [threading.Event() for _ in self.parts]
        self.received: dict[str, tuple[float, dict[str, Any]]] = {}
        self.errors: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=asyncio.run, args=(self._loop(i),), name=f"triggerer-{i}", daemon=True)
            for i in range(loops)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def all_started(self) -> bool:
        return all(e.is_set() for e in self.started)

    async def _loop(self, index: int) -> None:
        part = self.parts[index]
        tasks = {asyncio.create_task(first_event(self.make(arn))): arn for arn in part}
        await asyncio.sleep(0)  # every task ran up to its first wait
        self.started[index].set()
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if self.stop_at is not None and time.time() > self.stop_at:
                break
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        with self._lock:
            for task, arn in tasks.items():
                if task in pending:
                    self.errors["not detected"] += 1
                elif task.exception() is not None:
                    self.errors[type(task.exception()).__name__] += 1
                else:
                    self.received[arn] = task.result()


def wait_ready(
    endpoint: EndpointProcess, run: Run, watcher: Watcher, arns: list[str], cursor: int, cap_at: float
) -> tuple[int, bool]:
    """Wait until every trigger made its first status read (from the call record); (read, capped).

    Amazon: every execution described. Ours: every loop started its triggers (they subscribe without an
    await in between, so the first round of a loop's shared poller covers them all), and that round
    (a ``ListPipelineExecutions`` without ``NextToken``) and, with events, each loop's receiver's first
    act (``GetQueueAttributes`` on the queue; its long polls are recorded when they return) were served."""
    controls = endpoint.controls
    described: set[str] = set()
    while True:
        if run.side == "amazon":
            for call in controls.calls(service="sagemaker", since=cursor):
                cursor = call["seq"]
                if call["action"] == "DescribePipelineExecution":
                    described.add(call["args"].get("PipelineExecutionArn", ""))
            read = len(described & set(arns))
            if read == len(arns):
                return read, False
        else:
            read = 0
            calls = controls.calls(since=cursor)
            rounds = sum(
                1 for c in calls if c["action"] == "ListPipelineExecutions" and "NextToken" not in c["args"]
            )
            checks = sum(1 for c in calls if c["action"] == "GetQueueAttributes" and _on_events_queue(c))
            if watcher.all_started() and rounds >= run.loops and (not run.events or checks >= run.loops):
                return len(arns), False
        if time.time() > cap_at:
            return read, True
        time.sleep(0.25)


def _on_events_queue(call: dict[str, Any]) -> bool:
    from sagemaker_pipelines_provider.local.seed import EVENTS_QUEUE

    return str(call["args"].get("QueueUrl", "")).endswith("/" + EVENTS_QUEUE)


def answer_gates(tokens: list[str], opened: float, spread_s: float) -> None:
    """Answer the Gate callbacks evenly over ``spread_s`` seconds from ``opened`` (late ones at once)."""
    sagemaker = _client("sagemaker")
    for i, token in enumerate(tokens):
        due = opened + spread_s * i / max(1, len(tokens) - 1)
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        sagemaker.send_pipeline_execution_step_success(CallbackToken=token)


def watch(
    endpoint: EndpointProcess, run: Run, n: int, timing: Timing, args: argparse.Namespace
) -> dict[str, Any]:
    """One run at one N: set up, watch the window, read back what happened; one row of the report."""
    safety_sim = args.drop_safety_poll if run.drop else args.safety_poll
    queue_url, arns, tokens = prepare(endpoint, run, n, timing)
    make = trigger_factory(run, timing, queue_url, safety_sim)
    controls = endpoint.controls
    cursor = max((c["seq"] for c in controls.calls(limit=None)), default=0)
    setup_cap = 30 + 0.3 * n
    grace = max(60.0, timing.window_s, 2 * timing.real(safety_sim) if run.events else 0.0)
    gc.collect()
    sampler = RssSampler()
    baseline = sampler.peak
    endpoint_cpu = endpoint.cpu_seconds()
    cpu, main_cpu = time.process_time(), time.thread_time()
    watcher = Watcher(arns, run.loops, make)
    started = time.time()
    opened = None
    with sampler.running():
        watcher.start()
        try:
            read, capped = wait_ready(endpoint, run, watcher, arns, cursor, started + setup_cap)
            opened = time.time()
            watcher.stop_at = opened + timing.window_s + grace
            answer_gates(tokens, opened, GATE_SHARE * timing.window_s)
        finally:
            if opened is None:
                watcher.stop_at = 0.0
            watcher.join()
    finished = time.time()
    cpu = time.process_time() - cpu - (time.thread_time() - main_cpu) - sampler.thread_cpu
    endpoint_cpu = endpoint.cpu_seconds() - endpoint_cpu
    ends, statuses = end_times(arns)
    records = controls.calls(since=cursor)
    window = [c for c in records if opened <= c["time"] <= finished and c["action"] not in OWN_ACTIONS]
    sagemaker = [c for c in window if c["service"] == "sagemaker"]
    sqs = [c for c in window if c["service"] == "sqs" and _on_events_queue(c)]
    setup_calls = sum(1 for c in records if c["service"] == "sagemaker" and started <= c["time"] < opened)
    received = watcher.received
    errors = collections.Counter(watcher.errors)
    for _, payload in received.values():
        if payload.get("status") != "success":
            errors[str(payload.get("status"))] += 1
    latencies = [received[a][0] - ends[a] for a in arns if a in received]
    # simulated seconds from the gate to each end (to the end of the watch for an execution still running)
    durations = [(min(ends[a], finished) - opened) / timing.scale for a in arns]
    return {
        "n": n,
        "run": run.name,
        "round_s": timing.round_s,
        "safety_sim_s": safety_sim if run.events else None,
        "read_at_open": read,
        "setup_capped": capped,
        "setup_s": opened - started,
        "watch_s": finished - started,
        "window_s": finished - opened,
        "detected": len(received),
        "errors": dict(errors),
        "statuses": dict(statuses),
        "calls": len(sagemaker),
        "calls_per_exec": len(sagemaker) / n,
        "by_action": dict(collections.Counter(c["action"] for c in sagemaker)),
        "setup_calls": setup_calls,
        "sqs_calls": len(sqs),
        "sqs_by_action": dict(collections.Counter(c["action"] for c in sqs)),
        "amazon_design_calls": sum(2 * math.ceil(max(d, 0) / INTERVAL_SIM) + 1 for d in durations),
        "p50_s": percentile(latencies, 0.50),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies) if latencies else float("nan"),
        "p50_sim_s": percentile(latencies, 0.50) / timing.scale,
        "p95_sim_s": percentile(latencies, 0.95) / timing.scale,
        "cpu_s": cpu,
        "rss_peak_mib": sampler.peak / 2**20,
        "rss_growth_mib": (sampler.peak - baseline) / 2**20,
        "endpoint_cpu_s": endpoint_cpu,
        "event_faults": controls.event_faults().get("counts", {}) if run.events else {},
    }


# -- report ------------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    """a / b; infinite for a > 0 over 0 (e.g. Amazon's calls over ours' none)."""
    if b:
        return a / b
    return float("inf") if a > 0 else float("nan")


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def goals(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Issue 13's goals beside the measured figures (printed, never asserted)."""
    by = {(r["n"], r["run"]): r for r in rows}
    lines: list[list[Any]] = []
    for n in sorted({r["n"] for r in rows}):
        amazon = by.get((n, "amazon"))
        for run, goal in (("polling", 20.0), ("events", 50.0)):
            ours = by.get((n, run))
            if ours is None or amazon is None:
                continue
            fewer = _ratio(amazon["calls"], ours["calls"])
            design = _ratio(amazon["amazon_design_calls"], ours["calls"])
            is_goal = run == "events" or n == 200
            lines.append(
                [
                    n,
                    run,
                    f">= {goal:g}x fewer SageMaker calls than Amazon"
                    + (" (goal at N = 200)" if run == "polling" else ""),
                    f"{fewer:.1f}x measured; {design:.1f}x vs Amazon at its design rate"
                    if ours["calls"]
                    else f"no call (Amazon: {amazon['calls']})",
                    f"{_verdict(fewer >= goal)}; {_verdict(design >= goal)}"
                    if is_goal
                    else "(no goal at this N)",
                ]
            )
        events = by.get((n, "events"))
        if events is not None and n == 1000:
            lines.append(
                [
                    n,
                    "events",
                    "detection p50 <= 1 s real",
                    f"{events['p50_s']:.2f} s",
                    _verdict(events["p50_s"] <= 1),
                ]
            )
        for run in ("events-drop20", "events-2loops"):
            r = by.get((n, run))
            if r is not None:
                what = (
                    "20 % of events dropped: every execution detected"
                    if run == "events-drop20"
                    else ("two loops on one queue: every execution detected (not a goal)")
                )
                lines.append([n, run, what, f"{r['detected']}/{n}", _verdict(r["detected"] == n)])
    return lines


def report(rows: list[dict[str, Any]], args: argparse.Namespace, load: str) -> None:
    rounds = ", ".join(f"N={n}: {timing_for(n, args).round_s:g}" for n in args.sizes)
    print(
        f"\nWatching N executions of Gate -> Prepare -> Train for {args.window_minutes:g} simulated minutes: "
        f"every side polls every {INTERVAL_SIM:g} simulated s; executions end evenly between "
        f"{(1 - GATE_SHARE) * args.window_minutes:g} and {args.window_minutes:g} simulated minutes. "
        f"Real seconds per 30 simulated s: {rounds}. "
        f"Safety poll (simulated s): events {args.safety_poll:g}, events-drop20 {args.drop_safety_poll:g}. "
        f"Load average at start: {load}."
    )
    print_table(
        "Watching: per run (calls over the window: gate open -> last trigger fired)",
        [
            "N",
            "run",
            "detected",
            "errors",
            "setup s",
            "SageMaker calls",
            "calls/exec",
            "setup calls",
            "SQS calls",
            "p50 s",
            "p95 s",
            "max s",
            "p50 sim s",
            "p95 sim s",
            "CPU s",
            "peak RSS MiB",
            "RSS growth MiB",
            "endpoint CPU s",
            "window s",
        ],
        [
            [
                r["n"],
                r["run"],
                f"{r['detected']}/{r['n']}",
                sum(r["errors"].values()),
                r["setup_s"],
                r["calls"],
                r["calls_per_exec"],
                r["setup_calls"],
                r["sqs_calls"],
                r["p50_s"],
                r["p95_s"],
                r["max_s"],
                r["p50_sim_s"],
                r["p95_sim_s"],
                r["cpu_s"],
                r["rss_peak_mib"],
                r["rss_growth_mib"],
                r["endpoint_cpu_s"],
                r["window_s"],
            ]
            for r in rows
        ],
    )
    for title, key in (
        ("SageMaker API calls by action", "by_action"),
        ("SQS calls on the events queue", "sqs_by_action"),
    ):
        actions = sorted({a for r in rows for a in r[key]})
        if actions:
            print_table(
                f"Watching: {title} (window)",
                ["N", "run", *actions],
                [[r["n"], r["run"], *(r[key].get(a, 0) for a in actions)] for r in rows],
            )
    ratio_rows = []
    for r in rows:
        amazon = next((a for a in rows if a["n"] == r["n"] and a["run"] == "amazon"), None)
        if amazon is None or r is amazon:
            continue
        ratio_rows.append(
            [
                r["n"],
                r["run"],
                _ratio(amazon["calls"], r["calls"]),
                _ratio(amazon["amazon_design_calls"], r["calls"]),
                _ratio(r["p50_s"], amazon["p50_s"]),
                _ratio(r["p95_s"], amazon["p95_s"]),
                _ratio(r["cpu_s"], amazon["cpu_s"]),
                _ratio(r["rss_peak_mib"], amazon["rss_peak_mib"]),
                _ratio(r["endpoint_cpu_s"], amazon["endpoint_cpu_s"]),
            ]
        )
    if ratio_rows:
        print_table(
            "Watching: vs Amazon (calls: x fewer; the others: ours / Amazon, below 1 = ours less)",
            [
                "N",
                "run",
                "x fewer calls",
                "x fewer vs design rate",
                "p50",
                "p95",
                "CPU",
                "peak RSS",
                "endpoint CPU",
            ],
            ratio_rows,
        )
    print_table(
        "Goals of issue 13 (printed, not asserted)", ["N", "run", "goal", "measured", "verdict"], goals(rows)
    )
    for r in rows:
        if r["run"] == "amazon":
            print(
                f"note: N={r['n']} amazon: {r['calls']} calls measured; at its design rate (2 calls per "
                f"{INTERVAL_SIM:g} s round while running, +1 at the end) these end times give "
                f"{r['amazon_design_calls']}"
            )
        if r["setup_capped"]:
            print(
                f"note: N={r['n']} {r['run']}: set-up capped at {r['setup_s']:.0f} s with "
                f"{r['read_at_open']} of {r['n']} executions read once; the window opened anyway"
            )
        if r["errors"] or set(r["statuses"]) != {"Succeeded"}:
            print(f"note: N={r['n']} {r['run']}: events not success {r['errors']}, statuses {r['statuses']}")
        if r["event_faults"]:
            print(f"note: N={r['n']} {r['run']}: event faults {r['event_faults']}")


# -- main --------------------------------------------------------------------------------------------


def timing_for(n: int, args: argparse.Namespace) -> Timing:
    """Real seconds per 30 simulated s: ``--round-seconds``, else 1 s per 50 executions (at least 1 s) so
    that the Amazon side's 2 calls per execution per round stay within what this machine serves."""
    round_s = args.round_seconds if args.round_seconds is not None else max(1, math.ceil(n / 50))
    return Timing(float(round_s), args.window_minutes)


def main_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with endpoint_process() as endpoint:
        arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/x/execution/y"
        for name in args.runs:  # import every side before any baseline: imports are in no side's figures
            trigger_factory(RUNS[name], timing_for(1, args), "https://queue", 600.0)(arn)
        for n in args.sizes:
            for name in args.runs:
                row = watch(endpoint, RUNS[name], n, timing_for(n, args), args)
                rows.append(row)
                print(
                    f"  N={n:<5} {name:<14} {row['detected']:>5}/{n} detected, {row['calls']:>6} calls "
                    f"({row['calls_per_exec']:.2f}/exec), p50 {row['p50_s']:.2f} s real "
                    f"({row['p50_sim_s']:.0f} s sim), p95 {row['p95_s']:.2f} s, cpu {row['cpu_s']:.1f} s, "
                    f"window {row['window_s']:.0f} s",
                    flush=True,
                )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument(
        "--round-seconds",
        type=int,
        default=None,
        help="real seconds per 30 simulated s (whole seconds; default 1 per 50 executions, at least 1)",
    )
    parser.add_argument("--window-minutes", type=float, default=10.0, help="simulated minutes watched")
    parser.add_argument("--safety-poll", type=float, default=600.0, help="simulated s (events runs)")
    parser.add_argument(
        "--drop-safety-poll", type=float, default=120.0, help="simulated s (the events-drop20 run)"
    )
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.sizes):
        parser.error("--sizes: at least 2 executions")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    isolate_airflow_home()
    logging.basicConfig(level=logging.WARNING)
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    print("machine:", json.dumps(machine()), flush=True)
    rows = main_runs(args)
    report(rows, args, load)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
