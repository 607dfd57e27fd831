"""Overhead of the local AWS endpoint under many concurrent pipeline executions.

Starts :class:`~sagemaker_pipelines_provider.local.server.LocalEndpoint` in this process, creates a
3-step pipeline and drives N concurrent executions from a thread pool of boto3 clients, in two polling
styles:

* ``describe`` — each execution is polled with DescribePipelineExecution (what a naive sensor does);
* ``list`` — one ListPipelineExecutions call per tick reports up to 100 executions (what the
  provider's shared poller does);
* ``saturate`` — ``describe`` without any pause between polls: the most requests/second the
  endpoint serves to this many client threads.

Prints, per run: wall time, requests served, requests/second, process CPU time per request
(``resource.getrusage``: clients + server + engine, all in this process), server CPU per request
(thread CPU time spent inside the WSGI app) and client-observed latency percentiles. No assertions.

    .venv/bin/python bench/local_endpoint_overhead.py [--executions 200] [--workers 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import boto3
from botocore.config import Config
from sagemaker_pipelines_provider.local.server import LocalEndpoint

TERMINAL = {"Succeeded", "Failed", "Stopped"}
ROLE_ARN = "arn:aws:iam::123456789012:role/bench"
CLUSTER = {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}


class MeasuredApp:
    """WSGI wrapper that adds up the thread CPU time spent serving requests (server side only)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cpu_seconds = 0.0
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.thread_time()
        try:
            return list(self.app(environ, start_response))
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.cpu_seconds += spent
                self.requests += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _definition() -> str:
    steps = []
    previous: list[str] = []
    for name in ("Extract", "Transform", "Load"):
        step: dict[str, Any] = {
            "Name": name,
            "Type": "Processing",
            "Arguments": {
                "ProcessingResources": {"ClusterConfig": CLUSTER},
                "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/etl:latest"},
                "RoleArn": ROLE_ARN,
            },
        }
        if previous:
            step["DependsOn"] = previous
        steps.append(step)
        previous = [name]
    return json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": steps})


def _list_page(client: Any, kwargs: dict[str, Any]) -> Any:
    return client.list_pipeline_executions(**kwargs)


def _run(
    endpoint: LocalEndpoint, measured: MeasuredApp, mode: str, executions: int, workers: int, poll: float
) -> dict[str, Any]:
    endpoint.app.reset()
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    config = Config(max_pool_connections=workers * 2, retries={"total_max_attempts": 5, "mode": "standard"})
    local = threading.local()
    latencies: list[float] = []
    latencies_lock = threading.Lock()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = session.client("sagemaker", endpoint_url=endpoint.url, config=config)
        return local.client

    def timed(call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        with latencies_lock:
            latencies.append(time.perf_counter() - started)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda _: client(), range(workers)))  # create the clients outside the measurement
        client().create_pipeline(PipelineName="bench", PipelineDefinition=_definition(), RoleArn=ROLE_ARN)
        before_requests, before_cpu, before_server = measured.requests, _cpu(), measured.cpu_seconds
        started = time.perf_counter()
        arns = list(
            pool.map(
                lambda _: timed(lambda: client().start_pipeline_execution(PipelineName="bench"))[
                    "PipelineExecutionArn"
                ],
                range(executions),
            )
        )
        if mode in ("describe", "saturate"):
            pause = poll if mode == "describe" else 0.0

            def wait(arn: str) -> str:
                while True:
                    status = timed(lambda: client().describe_pipeline_execution(PipelineExecutionArn=arn))[
                        "PipelineExecutionStatus"
                    ]
                    if status in TERMINAL:
                        return str(status)
                    time.sleep(pause)

            statuses = list(pool.map(wait, arns))
        else:
            pending = set(arns)
            final: dict[str, str] = {}
            while pending:
                token = None
                while True:
                    kwargs: dict[str, Any] = {"PipelineName": "bench", "MaxResults": 100}
                    if token:
                        kwargs["NextToken"] = token
                    page = timed(partial(_list_page, client(), kwargs))
                    for summary in page["PipelineExecutionSummaries"]:
                        if summary["PipelineExecutionStatus"] in TERMINAL:
                            final[summary["PipelineExecutionArn"]] = summary["PipelineExecutionStatus"]
                    token = page.get("NextToken")
                    if not token:
                        break
                pending -= set(final)
                if pending:
                    time.sleep(poll)
            statuses = [final[arn] for arn in arns]
        wall = time.perf_counter() - started
    requests = measured.requests - before_requests
    cpu = _cpu() - before_cpu
    server_cpu = measured.cpu_seconds - before_server
    ordered = sorted(latencies)
    return {
        "mode": mode,
        "executions": executions,
        "succeeded": statuses.count("Succeeded"),
        "wall_s": wall,
        "requests": requests,
        "req_per_s": requests / wall if wall else 0.0,
        "cpu_ms_per_req": 1000 * cpu / requests if requests else 0.0,
        "server_cpu_ms_per_req": 1000 * server_cpu / requests if requests else 0.0,
        "p50_ms": 1000 * statistics.median(ordered) if ordered else 0.0,
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0.0,
        "peak_concurrency": endpoint.engine.stats().get("peak_concurrency", {}).get("bench", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--step-seconds", type=float, default=1.0, help="real seconds per step")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between polls of one poller")
    parser.add_argument("--modes", nargs="+", default=["describe", "list", "saturate"])
    args = parser.parse_args()

    endpoint = LocalEndpoint(time_scale=1.0, default_step_duration=args.step_seconds)
    measured = MeasuredApp(endpoint.app)
    endpoint.app = measured  # type: ignore[assignment]  # served through the wrapper from start()
    endpoint.start()
    try:
        rows = [
            _run(endpoint, measured, mode, n, args.workers, args.poll)
            for n in args.executions
            for mode in args.modes
        ]
    finally:
        endpoint.stop()

    header = (
        f"{'mode':<9} {'execs':>5} {'ok':>5} {'wall s':>7} {'requests':>8} {'req/s':>7} "
        f"{'cpu ms/req':>10} {'srv ms/req':>10} {'p50 ms':>7} {'p95 ms':>7} {'peak':>5}"
    )
    print(
        f"local endpoint overhead: 3-step pipeline, {args.step_seconds:g} s/step, "
        f"{args.workers} client threads, poll every {args.poll:g} s"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['mode']:<9} {row['executions']:>5} {row['succeeded']:>5} {row['wall_s']:>7.2f} "
            f"{row['requests']:>8} {row['req_per_s']:>7.0f} {row['cpu_ms_per_req']:>10.2f} "
            f"{row['server_cpu_ms_per_req']:>10.2f} {row['p50_ms']:>7.1f} {row['p95_ms']:>7.1f} "
            f"{row['peak_concurrency']:>5}"
        )
    print("cpu ms/req: whole process (clients + server + engine); srv ms/req: inside the WSGI app only.")


if __name__ == "__main__":
    main()
