"""300 starts under a concurrency cap: the backfill path of our hook.

A backfill asks for many executions of one pipeline at once; SageMaker answers ``ResourceLimitExceeded``
beyond the account's / pipeline's limit of concurrent executions. The local endpoint's concurrency cap
(``set_concurrency_cap``) models that limit. ``--workers`` threads (the backfill's concurrently running
tasks, one hook each, as each task would have) call ``SageMakerPipelineHook.start_pipeline_execution``
with ``wait_for_capacity=True`` and a ``ClientRequestToken`` derived from the run (as the operator does),
so a rejected start is retried with the hook's capacity backoff until a slot frees.

Time is scaled: each execution lasts ``--execution-seconds`` simulated seconds (default 60) at time
scale ``--time-scale`` (default 1/30: 2 s real); the capacity backoff (default policy: 2 s first wait,
doubling to 60 s) is scaled by the same factor, so the ratio of backoff to execution length is the one a
real backfill sees. The lower bound of the wall time is ``starts / cap * execution length``.

Prints: wall time (real and simulated), StartPipelineExecution calls (accepted, rejected with
ResourceLimitExceeded, other errors), calls per start, every SageMaker call by action, the peak number of
concurrent executions the endpoint saw (must not exceed the cap) and executions created (must equal the
starts: a retried start never duplicates), and time-to-start percentiles.

    .venv/bin/python bench/starts_under_cap.py [--starts 300] [--cap 20] [--workers 50]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from _common import endpoint_process, isolate_airflow_home, machine, percentile, print_table

PIPELINE = "bench-backfill"
ROLE_ARN = "arn:aws:iam::123456789012:role/bench"


def definition() -> str:
    steps = [{"Name": "Train", "Type": "Training", "Arguments": {}}]
    return json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": steps})


def run(args: argparse.Namespace) -> dict[str, Any]:
    import boto3
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
    from sagemaker_pipelines_provider.utils.backoff import DEFAULT_POLICY
    from sagemaker_pipelines_provider.utils.tokens import idempotency_token

    policy = replace(
        DEFAULT_POLICY,
        capacity_base_delay=DEFAULT_POLICY.capacity_base_delay * args.time_scale,
        capacity_max_delay=DEFAULT_POLICY.capacity_max_delay * args.time_scale,
    )
    with endpoint_process() as endpoint:
        controls = endpoint.controls
        controls.reset()
        controls.set_time_scale(args.time_scale)
        controls.set_default_step_duration(args.execution_seconds)
        sagemaker = boto3.session.Session().client("sagemaker")
        sagemaker.create_pipeline(PipelineName=PIPELINE, PipelineDefinition=definition(), RoleArn=ROLE_ARN)  # type: ignore[call-arg]
        controls.set_concurrency_cap(PIPELINE, args.cap)
        hooks = [SageMakerPipelineHook(aws_conn_id=None, backoff_policy=policy) for _ in range(args.workers)]
        for hook in hooks:
            _ = hook.conn  # create the clients before the clock starts
        cursor = max((c["seq"] for c in controls.calls()), default=0)
        started = time.monotonic()

        def start(i: int) -> float:
            hook = hooks[i % args.workers]
            hook.start_pipeline_execution(
                PIPELINE,
                client_request_token=idempotency_token("bench-backfill", f"run-{i:04d}", "start", 0),
                display_name=f"backfill-{i:04d}",
                wait_for_capacity=True,
            )
            return time.monotonic() - started

        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            times_to_start = list(pool.map(start, range(args.starts)))
        wall = time.monotonic() - started
        calls = controls.calls(service="sagemaker", since=cursor)
        executions = int(controls.stats()["engine"].get("executions", {}).get(PIPELINE, 0))
        peak = controls.peak_concurrency(PIPELINE)
    starts = [c for c in calls if c["action"] == "StartPipelineExecution"]
    codes = collections.Counter(c.get("error_code") or "accepted" for c in starts)
    return {
        "starts": args.starts,
        "cap": args.cap,
        "workers": args.workers,
        "wall_s": wall,
        "wall_sim_min": wall / args.time_scale / 60,
        "lower_bound_s": args.starts / args.cap * args.execution_seconds * args.time_scale,
        "start_calls": len(starts),
        "accepted": codes.pop("accepted", 0),
        "rejected": codes.pop("ResourceLimitExceeded", 0),
        "other_errors": sum(codes.values()),
        "calls": len(calls),
        "by_action": dict(collections.Counter(c["action"] for c in calls)),
        "peak": peak,
        "executions": executions,
        "p50_s": percentile(times_to_start, 0.5),
        "p95_s": percentile(times_to_start, 0.95),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=300)
    parser.add_argument("--cap", type=int, default=20)
    parser.add_argument("--workers", type=int, default=50, help="concurrently running start tasks")
    parser.add_argument("--execution-seconds", type=float, default=60.0, help="simulated")
    parser.add_argument("--time-scale", type=float, default=1 / 30)
    args = parser.parse_args(argv)
    isolate_airflow_home()
    print("machine:", json.dumps(machine()), flush=True)
    r = run(args)
    print(
        f"\n{r['starts']} starts of a {args.execution_seconds:g} s (simulated) pipeline, cap {r['cap']}, "
        f"{r['workers']} concurrent start tasks, time scale {args.time_scale:g} (capacity backoff scaled "
        f"alike); lower bound {r['lower_bound_s']:.1f} s real."
    )
    print_table(
        "Starts under a concurrency cap (our hook, wait_for_capacity)",
        [
            "starts",
            "cap",
            "workers",
            "wall s",
            "wall sim min",
            "lower bound s",
            "Start calls",
            "accepted",
            "rejected (cap)",
            "other errors",
            "calls/start",
            "peak concurrent",
            "executions",
            "time-to-start p50 s",
            "p95 s",
        ],
        [
            [
                r["starts"],
                r["cap"],
                r["workers"],
                r["wall_s"],
                r["wall_sim_min"],
                r["lower_bound_s"],
                r["start_calls"],
                r["accepted"],
                r["rejected"],
                r["other_errors"],
                r["calls"] / r["starts"],
                r["peak"],
                r["executions"],
                r["p50_s"],
                r["p95_s"],
            ]
        ],
    )
    print_table(
        "Starts under a cap: SageMaker calls by action",
        list(r["by_action"]),
        [list(r["by_action"].values())],
    )


if __name__ == "__main__":
    main()
