"""System test (e): the Airflow UI in a real browser, on a finished ``mirror_pipeline`` run.

Headless Chromium (Debian's ``chromium``, installed by :func:`stack.browser.ensure_chromium` when
missing and running as root) driven by Playwright's Python API through ``executable_path`` (Playwright
never downloads a browser here). As a user would: sign in on the login page, open the run, expand the
task groups of the Grid, open the start task and its Details tab. Asserted: every per-step task id of
the mirror is on the run page (the Grid and the Task Instances table), and the start task's "SageMaker
Pipeline Execution" extra link is shown and points at the console page of the execution the endpoint
ran — the same URL as the REST API's ``.../taskInstances/{task}/links``. Screenshots of each page go to
``artifacts_dir`` (printed).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack import AirflowApi, Stack
from stack.browser import CHROMIUM_ARGS, ensure_chromium

DAG_ID = "mirror_pipeline"
PIPELINE = "evaluation"
GROUP = "evaluation"
#: The mirror of the ``evaluation`` pipeline: its start task, one task per step, its result task.
TASKS = ("start", "Evaluate", "CheckAccuracy", "RegisterEvaluatedModel", "AccuracyTooLow", "result")
START_TASK = f"{GROUP}.start"
LINK_NAME = "SageMaker Pipeline Execution"
REGION = "us-east-1"
#: Playwright's wait for an element (a safety net on a shared, slow machine, not a measurement).
UI_TIMEOUT_MS = 120_000


@pytest.fixture
def browser_page(airflow_stack: Stack) -> Iterator[Any]:
    """A Playwright page in headless Chromium (installed first when missing)."""
    from playwright.sync_api import sync_playwright

    chromium = ensure_chromium(airflow_stack.logs_dir / "install.log")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def _console_url(execution_arn: str) -> str:
    """The console page of an execution, from its ARN (``arn:aws:sagemaker:<region>:<account>:pipeline/
    <pipeline>/execution/<id>``), written out here independently of the provider's link builder."""
    assert execution_arn.startswith(f"arn:aws:sagemaker:{REGION}:"), execution_arn
    pipeline, execution_id = execution_arn.split(":pipeline/", 1)[1].split("/execution/")
    return (
        f"https://{REGION}.console.aws.amazon.com/sagemaker/home?region={REGION}"
        f"#/pipelines/{pipeline}/executions/{execution_id}"
    )


def test_the_ui_shows_the_mirror_and_the_execution_link(
    airflow_stack: Stack, airflow_api: AirflowApi, stack_aws: Any, artifacts_dir: Path, browser_page: Any
) -> None:
    from playwright.sync_api import expect

    print(f"\nscreenshots: {artifacts_dir}")
    run = airflow_api.trigger(DAG_ID)  # no logical date, as the UI's Trigger button
    run_id = run["dag_run_id"]
    run = airflow_api.wait_for_run(DAG_ID, run_id)
    assert run["state"] == "success", airflow_api.task_instances(DAG_ID, run_id)
    # The run's execution: the ARN its start task pushed, Succeeded on the endpoint.
    arn = airflow_api.xcom(DAG_ID, run_id, START_TASK, key="pipeline_execution_arn")
    executions = {e["PipelineExecutionArn"]: e for e in stack_aws.executions(PIPELINE)}
    assert executions[arn]["PipelineExecutionStatus"] == "Succeeded", executions
    console_url = _console_url(arn)
    assert airflow_api.task_instance_links(DAG_ID, run_id, START_TASK) == {LINK_NAME: console_url}
    task_ids = [f"{GROUP}.{task}" for task in TASKS]
    assert sorted(ti["task_id"] for ti in airflow_api.task_instances(DAG_ID, run_id)) == sorted(task_ids)

    page = browser_page
    base = airflow_stack.api_url.rstrip("/")
    run_path = f"/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}"

    # Sign in on the login page the UI redirects to.
    page.goto(f"{base}{run_path}")
    expect(page.get_by_label("Username")).to_be_visible()
    page.get_by_label("Username").fill("airflow")
    page.get_by_label("Password").fill("airflow")
    page.screenshot(path=str(artifacts_dir / "01-login.png"))
    page.get_by_role("button", name="Sign in").click()

    # The run: expand the Grid's task groups; every task of the mirror is a row of the Grid (its name,
    # and a cell of this run) and of the Task Instances table.
    page.wait_for_url(f"{base}{run_path}**")
    expect(page.get_by_text(run_id).first).to_be_visible()
    page.get_by_role("button", name="Expand all task groups").click()
    for task, task_id in zip(TASKS, task_ids, strict=True):
        expect(page.locator(f'a[href="/dags/{DAG_ID}/tasks/{task_id}"]')).to_have_text(task)
        expect(page.locator(f'a[id="grid-{run_id}-{task_id}"]')).to_be_visible()
        expect(page.get_by_role("link", name=task_id, exact=True)).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "02-run-grid.png"))

    # The start task: its Details tab shows the extra link, pointing at the execution's console page.
    page.get_by_role("link", name=START_TASK, exact=True).click()
    page.wait_for_url(f"**/tasks/{START_TASK}")
    expect(page.get_by_role("heading", name=START_TASK)).to_be_visible()
    page.get_by_role("link", name="Details", exact=True).click()
    page.wait_for_url(f"**/tasks/{START_TASK}/details")
    link = page.get_by_role("link", name=LINK_NAME, exact=True)
    expect(link).to_be_visible()
    expect(link).to_have_attribute("href", console_url)
    expect(link).to_have_attribute("target", "_blank")
    expect(page.get_by_text("Extra Links")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "03-start-task-details.png"))
