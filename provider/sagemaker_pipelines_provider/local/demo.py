"""``make demo``: the example DAGs, end to end, against the local endpoint, with a summary table.

Starts the endpoint on a free loopback port and seeds it, points Airflow at a throwaway AIRFLOW_HOME with
the repository's dags/, runs retraining_chain once and historical_retraining for three dates, and prints
one row per pipeline execution (non-zero exit if any run failed). ``--standalone`` runs ``airflow
standalone`` against the endpoint instead. More: docs/local-endpoint.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sagemaker_pipelines_provider.utils.arn import ExecutionArn

DEMO_RUNS: tuple[tuple[str, int], ...] = (("retraining_chain", 1), ("historical_retraining", 3))
FIRST_DATE = datetime(2026, 1, 1, tzinfo=UTC)
#: Simulated step duration (seconds): long enough to see steps overlap, short enough for a quick demo.
STEP_SECONDS = 0.3
POOL = "sagemaker_pipelines"
POOL_SLOTS = 4
#: Status poll interval of the example DAGs' pipeline tasks in the demo (production default: 30 s).
DEMO_POLL_INTERVAL = "0.5"
#: ``[sagemaker_pipelines] default_poll_interval`` as an environment variable (utils.poll_interval.CONFIG_ENV;
#: not imported from there: that module imports Airflow, which must see the demo's AIRFLOW_HOME first).
POLL_INTERVAL_ENV = "AIRFLOW__SAGEMAKER_PIPELINES__DEFAULT_POLL_INTERVAL"
#: Pipelines whose executions the demo reports (in this order within a date).
REPORTED_PIPELINES = ("features", "training", "evaluation", "retraining")


def _configure_airflow(home: Path, dags_folder: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault(POLL_INTERVAL_ENV, DEMO_POLL_INTERVAL)


def _create_pool() -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        POOL, slots=POOL_SLOTS, description="SageMaker pipeline executions", include_deferred=True
    )


def _start_endpoint(step_seconds: float) -> Any:
    from sagemaker_pipelines_provider.local.seed import seed
    from sagemaker_pipelines_provider.local.server import LocalEndpoint, variables_to_unset

    endpoint = LocalEndpoint().start()
    for name in list(variables_to_unset(os.environ)):  # AWS_PROFILE & co. would send Airflow elsewhere
        del os.environ[name]
    os.environ.update(endpoint.environ())
    endpoint.controls.set_default_step_duration(step_seconds)
    seed(endpoint.url)
    return endpoint


def _run_dags(dags_folder: Path) -> list[tuple[str, str, str]]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()
    _create_pool()
    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    outcomes: list[tuple[str, str, str]] = []
    for dag_id, dates in DEMO_RUNS:
        dag = bag.dags.get(dag_id)
        if dag is None:
            raise SystemExit(f"DAG {dag_id!r} is not in {dags_folder}; found {sorted(bag.dags)}")
        for i in range(dates):
            day = FIRST_DATE + timedelta(days=i)
            # dag.test() infers a manual run's data interval as the one *ending* at its logical date; a
            # scheduled or backfill run for ``day`` has the interval *starting* at ``day``: pass its end.
            logical_date = day + timedelta(days=1) if dag_id == "historical_retraining" else day
            print(f"running {dag_id} for {day.date()} ...", flush=True)
            run = dag.test(logical_date=logical_date)
            outcomes.append((dag_id, str(day.date()), str(run.state)))
    return outcomes


def _execution_rows(sagemaker: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in REPORTED_PIPELINES:
        paginator = sagemaker.get_paginator("list_pipeline_executions")
        for page in paginator.paginate(PipelineName=name, SortOrder="Ascending"):
            for summary in page["PipelineExecutionSummaries"]:
                arn = summary["PipelineExecutionArn"]
                described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
                steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=arn)[
                    "PipelineExecutionSteps"
                ]
                packages = [
                    s["Metadata"]["RegisterModel"]["Arn"]
                    for s in steps
                    if "RegisterModel" in s.get("Metadata", {})
                ]
                params = {
                    p["Name"]: p["Value"]
                    for p in sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)[
                        "PipelineParameters"
                    ]
                }
                duration = described["LastModifiedTime"] - described["CreationTime"]
                rows.append(
                    {
                        "date": _row_date(summary.get("PipelineExecutionDisplayName"), params),
                        "pipeline": name,
                        "execution": ExecutionArn.parse(arn).execution_id,
                        "status": summary["PipelineExecutionStatus"],
                        "steps": f"{sum(s['StepStatus'] == 'Succeeded' for s in steps)}/{len(steps)}",
                        "duration": f"{duration.total_seconds():.1f}s",
                        "model package": packages[0].split(":", 5)[-1] if packages else "-",
                        "_start": summary["StartTime"],
                    }
                )
    rows.sort(key=lambda r: (r["date"], r["_start"]))
    return rows


def _row_date(display_name: str | None, params: dict[str, str]) -> str:
    """The date an execution is for: the ``YYYYMMDD`` ending its display name, else a ``*Date`` parameter."""
    tail = (display_name or "").rsplit("-", 1)[-1]
    if len(tail) == 8 and tail.isdigit():
        return f"{tail[:4]}-{tail[4:6]}-{tail[6:]}"
    return next((v for k, v in params.items() if k.endswith("Date")), "-")


def _print_table(rows: Sequence[dict[str, Any]]) -> None:
    columns = ["date", "pipeline", "execution", "status", "steps", "duration", "model package"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sagemaker_pipelines_provider.local.demo", description=__doc__
    )
    parser.add_argument("--dags-folder", type=Path, default=Path("dags"))
    parser.add_argument("--airflow-home", type=Path, default=Path(".airflow-home"))
    parser.add_argument("--step-seconds", type=float, default=STEP_SECONDS)
    parser.add_argument(
        "--standalone", action="store_true", help="run `airflow standalone` against the endpoint"
    )
    args = parser.parse_args(argv)

    dags_folder = args.dags_folder.resolve()
    _configure_airflow(args.airflow_home.resolve(), dags_folder)
    started = time.monotonic()
    endpoint = _start_endpoint(args.step_seconds)
    print(f"local endpoint at {endpoint.url}", flush=True)
    try:
        if args.standalone:
            from airflow.utils import db

            os.environ[POLL_INTERVAL_ENV] = "2"
            db.initdb()
            _create_pool()
            print("starting `airflow standalone` (Ctrl-C to stop) ...", flush=True)
            # standalone starts its components as `airflow ...` by name: this interpreter's bin first.
            bin_dir = os.path.dirname(sys.executable)
            env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
            return subprocess.call([sys.executable, "-m", "airflow", "standalone"], env=env)
        outcomes = _run_dags(dags_folder)
        from sagemaker_pipelines_provider.local.aws_session import isolated_boto3_session

        rows = _execution_rows(
            isolated_boto3_session(endpoint.region).client("sagemaker", endpoint_url=endpoint.url)
        )
        print()
        _print_table(rows)
        print()
        for dag_id, date, state in outcomes:
            print(f"dag run {dag_id} {date}: {state}")
        print(f"demo finished in {time.monotonic() - started:.1f}s")
        failed = [o for o in outcomes if o[2] != "success"] + [r for r in rows if r["status"] != "Succeeded"]
        return 1 if failed or not rows else 0
    finally:
        endpoint.stop()


if __name__ == "__main__":
    raise SystemExit(main())
