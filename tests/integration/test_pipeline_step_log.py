"""What the task log says about steps, against what the README promises (issue 12 item 12).

Waiting deferred (polling), the shared poller reads execution statuses only and the trigger lists the
steps once, at the end: each step gets exactly one line, its final status, after the execution's last
status line. The README's "task log" bullet must say exactly that.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.pipelines import POLL, create_pipeline, fast_endpoint, processing_step

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
STEP_LINE = re.compile(r"Step (?P<step>\w+) \((?P<type>[^)]*)\): (?P<status>\w+)")
EXECUTION_LINE = re.compile(r"Pipeline execution (?P<arn>\S+) is (?P<status>\w+)")


def test_deferred_step_log_is_what_the_readme_says(local_aws: Any, dag_runner: Any, capfd: Any) -> None:
    from airflow.sdk import DAG
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    from tests.support.pipelines import START_DATE, unique

    fast_endpoint(local_aws, step_seconds=0.2)
    steps = ["A", "B", "C", "D"]
    pipeline = create_pipeline(
        local_aws,
        steps=[processing_step(name, [steps[i - 1]] if i else []) for i, name in enumerate(steps)],
        parameters=[],
    )
    with DAG(unique("steplog"), schedule=None, start_date=START_DATE, catchup=False) as d:
        SageMakerPipelineOperator(task_id="run", pipeline_name=pipeline, deferrable=True, poll_interval=POLL)
    capfd.readouterr()
    run = dag_runner.run_dag(d)
    assert run.state == "success", dag_runner.task_states(run)

    captured = capfd.readouterr()  # dag.test() prints the task's and the trigger's log lines
    messages = (captured.out + captured.err).splitlines()
    execution_changes = [m.group("status") for m in map(EXECUTION_LINE.search, messages) if m]
    step_lines = [m for m in map(STEP_LINE.search, messages) if m]
    assert execution_changes[0] == "Executing" and execution_changes[-1] == "Succeeded", execution_changes
    per_step = Counter(m.group("step") for m in step_lines)
    finals = {m.group("step"): m.group("status") for m in step_lines}
    assert finals == dict.fromkeys(steps, "Succeeded")  # every step's final status is logged
    assert per_step == Counter(steps)  # one line per step: listed once
    last_status_line = max(i for i, m in enumerate(messages) if EXECUTION_LINE.search(m))
    first_step_line = min(i for i, m in enumerate(messages) if STEP_LINE.search(m))
    assert first_step_line > last_status_line  # at the end

    bullet = README.read_text().split("- **The task log**", 1)[1].split("\n- **", 1)[0]
    text = " ".join(bullet.split())
    assert "Deferred and polling" in text and "listed once, at the end" in text, text
    assert "every `poll_interval`" in text, text
