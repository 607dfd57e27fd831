"""SageMakerPipelineOperator in Airflow DAG tests against the local endpoint.

Each test builds its DAG next to its assertions and runs it with ``dag.test()`` (deferrable tasks run
their trigger in line; retries run in line; ``task_state_store`` persists across tries).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from tests.support.pipelines import (
    FAST_BACKOFF,
    POLL,
    CallbackAnswerer,
    Failures,
    Stopper,
    callback_step,
    calls,
    clear_and_run_again,
    create_pipeline,
    create_queue,
    dag,
    executions,
    fast_endpoint,
    operator,
    processing_step,
    task_state_rows,
    wait_until,
    xcom,
)

pytestmark = pytest.mark.integration


def run_restarted_once(local_aws: Any, dag_runner: Any) -> tuple[str, Any, Any]:
    """A DAG whose task restarts once (``on_failed_retry="restart"``): its first execution fails, the
    retry's fresh execution succeeds. Returns the pipeline, the DAG and the finished run."""
    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    local_aws.controls.set_step_behaviour(pipeline, "Train", fail="flaky")

    def repair(context: Any) -> None:  # the first execution failed: the next one will work
        local_aws.controls.set_step_behaviour(pipeline, "Train", fail="flaky", fail_attempts=0)

    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            on_failed_retry="restart",
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=repair,
        )
    return pipeline, d, dag_runner.run_dag(d)


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_parameters_rendered_from_the_data_interval_reach_the_execution(
    local_aws: Any, dag_runner: Any, deferrable: bool
) -> None:
    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "{{ data_interval_start | ds }}", "Rows": "{{ 20 + 3 }}", "Full": True},
            display_name="run-{{ ds_nodash }}",
            deferrable=deferrable,
        )
    run = dag_runner.run_dag(d, logical_date=dt.datetime(2024, 3, 5, tzinfo=dt.UTC))
    assert dag_runner.task_states(run) == {"run": "success"}

    (execution,) = executions(local_aws, pipeline)
    arn = execution["PipelineExecutionArn"]
    params = local_aws.client("sagemaker").list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
    given = {p["Name"]: p["Value"] for p in params["PipelineParameters"]}
    assert given["RunDate"] == "2024-03-04"
    assert given["Rows"] == "23"
    assert given["Full"] == "true"
    assert execution["PipelineExecutionDisplayName"] == "run-20240305"

    result = xcom(run, "run")
    assert result["pipeline_execution_arn"] == arn
    assert result["status"] == "Succeeded"
    assert result["parameters"]["RunDate"] == "2024-03-04"
    assert set(result["steps"]) == {"Prep", "Train"}
    assert result["steps"]["Train"]["type"] == "Training"
    assert result["outputs"]["Train"]["TrainingJobArn"].startswith("arn:aws:sagemaker:")
    assert xcom(run, "run", key="pipeline_execution_arn") == arn
    execution_id = arn.rsplit("/", 1)[1]
    assert xcom(run, "run", key="_link_SageMakerPipelineExecutionLink") == (
        "https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1"
        f"#/pipelines/{pipeline}/executions/{execution_id}"
    )


def test_bad_parameters_fail_listing_the_valid_ones_and_start_nothing(
    local_aws: Any, dag_runner: Any
) -> None:
    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    failures = Failures()
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"Rows": "many", "Colour": "red"},  # wrong type, unknown name, RunDate missing
            retries=2,  # a bad parameter is not retried: retrying cannot fix it
            retry_delay=dt.timedelta(seconds=0),
            on_failure_callback=failures,
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "failed"}
    assert calls(local_aws, "StartPipelineExecution") == []
    assert executions(local_aws, pipeline) == []
    (message,) = failures.messages
    assert "unknown parameter 'Colour'" in message
    assert "parameter 'Rows' is Integer" in message
    assert "'RunDate' (String) has no default and no value" in message
    assert (
        "RunDate (String, required), Rows (Integer, default 10), Ratio (Float, default 0.5), Full (Boolean"
        in message
    )
    assert len(calls(local_aws, "DescribePipeline")) == 1


def test_fire_and_forget_returns_once_started(local_aws: Any, dag_runner: Any) -> None:
    fast_endpoint(local_aws, step_seconds=2.0)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        operator(pipeline_name=pipeline, parameters={"RunDate": "x"}, wait_for_completion=False)
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}
    result = xcom(run, "run")
    assert result["status"] == "Executing"  # returned without waiting for the 4 s of steps
    (execution,) = executions(local_aws, pipeline)
    assert execution["PipelineExecutionArn"] == result["pipeline_execution_arn"]
    assert xcom(run, "run", key="pipeline_execution_arn") == result["pipeline_execution_arn"]


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
@pytest.mark.parametrize("allow_stopped", [False, True], ids=["stopped-fails", "stopped-allowed"])
def test_a_stopped_execution_fails_the_task_unless_allowed(
    local_aws: Any, dag_runner: Any, deferrable: bool, allow_stopped: bool
) -> None:
    fast_endpoint(local_aws, step_seconds=30.0)
    pipeline = create_pipeline(local_aws)
    failures = Failures()
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            deferrable=deferrable,
            allow_stopped=allow_stopped,
            on_failure_callback=failures,
        )
    with Stopper(local_aws, pipeline) as stopper:
        run = dag_runner.run_dag(d)
    (execution,) = executions(local_aws, pipeline)
    assert stopper.stopped == [execution["PipelineExecutionArn"]]
    assert execution["PipelineExecutionStatus"] == "Stopped"
    if allow_stopped:
        assert dag_runner.task_states(run) == {"run": "success"}
        assert xcom(run, "run")["status"] == "Stopped"
    else:
        assert dag_runner.task_states(run) == {"run": "failed"}
        (message,) = failures.messages
        assert "ended Stopped" in message
        assert "allow_stopped=True" in message


class DiesAfterStart:
    """Mixin: the first try dies right after StartPipelineExecution returned, before the ARN is recorded."""

    def execution_started(self, context: Any, pipeline_execution_arn: str) -> None:
        if context["ti"].try_number == 1:
            raise RuntimeError("worker lost right after the start call")


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_try_killed_after_starting_then_retried_yields_exactly_one_execution(
    local_aws: Any, dag_runner: Any, deferrable: bool
) -> None:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

    class FlakyWorkerOperator(DiesAfterStart, SageMakerPipelineOperator):
        pass

    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        FlakyWorkerOperator(
            task_id="run",
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            deferrable=deferrable,
            poll_interval=POLL,
            backoff_policy=FAST_BACKOFF,
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}

    starts = calls(local_aws, "StartPipelineExecution", pipeline)
    assert len(starts) == 2, "the retry must call start again (it never learnt the ARN)"
    assert starts[0]["args"]["ClientRequestToken"] == starts[1]["args"]["ClientRequestToken"]
    (execution,) = executions(local_aws, pipeline)
    assert execution["PipelineExecutionStatus"] == "Succeeded"
    assert xcom(run, "run")["pipeline_execution_arn"] == execution["PipelineExecutionArn"]


def test_a_try_timed_out_while_waiting_reattaches_and_starts_nothing(local_aws: Any, dag_runner: Any) -> None:
    """The ARN was recorded before waiting: the retry finds the execution, succeeded meanwhile, and
    returns its result without any new start."""
    fast_endpoint(local_aws, step_seconds=2.5)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            stop_on_kill=False,
            execution_timeout=dt.timedelta(seconds=3),
            retries=3,  # tolerance for a loaded machine: every further try re-attaches too
            retry_delay=dt.timedelta(seconds=3),
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}
    assert len(calls(local_aws, "StartPipelineExecution", pipeline)) == 1
    (execution,) = executions(local_aws, pipeline)
    assert execution["PipelineExecutionStatus"] == "Succeeded"
    assert xcom(run, "run")["status"] == "Succeeded"


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_failed_execution_is_resumed_on_task_retry(
    local_aws: Any, dag_runner: Any, deferrable: bool
) -> None:
    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    local_aws.controls.set_step_behaviour(pipeline, "Train", fail="GPU on fire", fail_attempts=1)
    retries_seen = Failures()
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            deferrable=deferrable,
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=retries_seen,
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}

    (execution,) = executions(local_aws, pipeline)
    arn = execution["PipelineExecutionArn"]
    assert execution["PipelineExecutionStatus"] == "Succeeded"
    assert len(calls(local_aws, "StartPipelineExecution", pipeline)) == 1
    (retry,) = calls(local_aws, "RetryPipelineExecution", pipeline)
    assert retry["args"]["PipelineExecutionArn"] == arn
    result = xcom(run, "run")
    assert result["steps"]["Prep"]["attempts"] == 1, "a succeeded step must not run again"
    assert result["steps"]["Train"]["attempts"] == 2
    assert result["steps"]["Train"]["status"] == "Succeeded"

    # The first try's failure named the step, its reason, its job and the console page.
    (message,) = retries_seen.messages
    assert "ended Failed" in message
    assert "Train (Training): GPU on fire" in message
    assert ":training-job/" in message
    assert f"#/pipelines/{pipeline}/executions/{arn.rsplit('/', 1)[1]}" in message


def test_restart_mode_starts_a_fresh_execution(local_aws: Any, dag_runner: Any) -> None:
    pipeline, _, run = run_restarted_once(local_aws, dag_runner)
    assert dag_runner.task_states(run) == {"run": "success"}
    starts = calls(local_aws, "StartPipelineExecution", pipeline)
    assert len(starts) == 2
    assert starts[0]["args"]["ClientRequestToken"] != starts[1]["args"]["ClientRequestToken"]
    assert calls(local_aws, "RetryPipelineExecution", pipeline) == []
    assert sorted(e["PipelineExecutionStatus"] for e in executions(local_aws, pipeline)) == [
        "Failed",
        "Succeeded",
    ]


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_killing_the_task_stops_the_execution(local_aws: Any, dag_runner: Any, deferrable: bool) -> None:
    """execution_timeout kills the task: on_kill (sync) or the trigger's deadline (deferred) stops it."""
    fast_endpoint(local_aws, step_seconds=60.0)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            deferrable=deferrable,
            execution_timeout=dt.timedelta(seconds=3),
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "failed"}
    (execution,) = executions(local_aws, pipeline)
    stops = calls(local_aws, "StopPipelineExecution", pipeline)
    assert [c["args"]["PipelineExecutionArn"] for c in stops] == [execution["PipelineExecutionArn"]]
    wait_until(
        lambda: executions(local_aws, pipeline)[0]["PipelineExecutionStatus"] == "Stopped", what="Stopped"
    )


def test_callback_outputs_and_model_package_reach_a_templated_downstream_task(
    local_aws: Any, dag_runner: Any
) -> None:
    from airflow.sdk import task

    local_aws.seed()  # the demo 'training' pipeline: Train -> ValidateModel (callback) -> RegisterModel
    fast_endpoint(local_aws)
    received: dict[str, Any] = {}
    with dag() as d:
        run = operator(task_id="train", pipeline_name="training", parameters={"Epochs": 3}, deferrable=True)

        @task
        def deploy(package_arn: str, passed: str, approved_by: str, job: str) -> None:
            received.update(package_arn=package_arn, passed=passed, approved_by=approved_by, job=job)

        outputs = "ti.xcom_pull(task_ids='train')['outputs']"
        run >> deploy(
            package_arn="{{ " + outputs + "['RegisterModel']['ModelPackageArn'] }}",
            passed="{{ " + outputs + "['ValidateModel']['validation_passed'] }}",
            approved_by="{{ " + outputs + "['ValidateModel']['approved_by'] }}",
            job="{{ " + outputs + "['Train']['TrainingJobArn'] }}",
        )
    with CallbackAnswerer(
        local_aws, "training", {"validation_passed": True, "approved_by": "alice"}
    ) as answerer:
        dag_run = dag_runner.run_dag(d)
    assert dag_runner.task_states(dag_run) == {"train": "success", "deploy": "success"}
    assert len(answerer.answered) == 1

    sagemaker = local_aws.client("sagemaker")
    (package,) = sagemaker.list_model_packages(ModelPackageGroupName="demo-models")["ModelPackageSummaryList"]
    (execution,) = executions(local_aws, "training")
    steps = sagemaker.list_pipeline_execution_steps(PipelineExecutionArn=execution["PipelineExecutionArn"])
    train_job = next(s for s in steps["PipelineExecutionSteps"] if s["StepName"] == "Train")["Metadata"]
    assert received == {
        "package_arn": package["ModelPackageArn"],
        "passed": "true",
        "approved_by": "alice",
        "job": train_job["TrainingJob"]["Arn"],
    }
    result = xcom(dag_run, "train")
    assert result["steps"]["ValidateModel"]["type"] == "Callback"
    assert result["steps"]["RegisterModel"]["type"] == "RegisterModel"


def test_a_deferral_timed_out_by_airflow_stops_the_execution(local_aws: Any) -> None:
    """Backstop for a missed trigger deadline: Airflow's scheduler times the deferral out and resumes the
    task with ``__fail__`` / "Trigger timeout" (something ``dag.test()`` never does, so the resume is
    called directly, with the runtime context reduced to what the operator reads)."""
    from airflow.sdk.bases.operator import ExecutorSafeguard
    from airflow.sdk.exceptions import TaskDeferralTimeout
    from sagemaker_pipelines_provider.operators.pipeline import STATE_KEY

    fast_endpoint(local_aws, step_seconds=60)
    pipeline = create_pipeline(local_aws)
    arn = local_aws.client("sagemaker").start_pipeline_execution(
        PipelineName=pipeline, PipelineParameters=[{"Name": "RunDate", "Value": "x"}]
    )["PipelineExecutionArn"]

    class Store(dict):
        def set(self, key: str, value: Any, **_: Any) -> None:
            self[key] = value

    class TI:
        dag_id, run_id, task_id, map_index, try_number = "d", "r", "run", -1, 1

    task = operator(pipeline_name=pipeline, deferrable=True)
    context = {"ti": TI(), "task_state_store": Store({STATE_KEY: {"counter": 0, "arn": arn}})}
    ExecutorSafeguard.test_mode, saved = True, ExecutorSafeguard.test_mode
    try:
        with pytest.raises(TaskDeferralTimeout):
            task.resume_execution("__fail__", {"error": "Trigger timeout"}, context)  # type: ignore[arg-type]
    finally:
        ExecutorSafeguard.test_mode = saved
    (stop,) = calls(local_aws, "StopPipelineExecution", pipeline)
    assert stop["args"]["PipelineExecutionArn"] == arn
    wait_until(
        lambda: executions(local_aws, pipeline)[0]["PipelineExecutionStatus"] == "Stopped", what="Stopped"
    )


def test_a_retry_after_the_execution_was_stopped_starts_a_fresh_one(local_aws: Any, dag_runner: Any) -> None:
    fast_endpoint(local_aws, step_seconds=60)
    pipeline = create_pipeline(local_aws)

    def shorten_steps(context: Any) -> None:  # the killed try stopped its execution; the next one is quick
        local_aws.controls.set_default_step_duration(0.05)

    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            execution_timeout=dt.timedelta(seconds=6),
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=shorten_steps,
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}
    newest, oldest = executions(local_aws, pipeline)
    assert (oldest["PipelineExecutionStatus"], newest["PipelineExecutionStatus"]) == ("Stopped", "Succeeded")
    assert xcom(run, "run")["pipeline_execution_arn"] == newest["PipelineExecutionArn"]
    starts = calls(local_aws, "StartPipelineExecution", pipeline)
    assert len({c["args"]["ClientRequestToken"] for c in starts}) == 2


# ---------------------------------------------------------------------------------------------------------
# issue 12: re-attach, stop tokens, state retention


def test_a_stopped_execution_allowed_as_success_is_the_result_when_the_task_is_cleared(
    local_aws: Any, dag_runner: Any
) -> None:
    """allow_stopped=True made the Stopped execution a success; a clear re-attaches to it and returns it
    (one rule with the status policy) instead of starting a fresh execution."""
    fast_endpoint(local_aws, step_seconds=30.0)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        operator(pipeline_name=pipeline, parameters={"RunDate": "x"}, allow_stopped=True)
    with Stopper(local_aws, pipeline):
        run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}
    (execution,) = executions(local_aws, pipeline)
    assert execution["PipelineExecutionStatus"] == "Stopped"

    local_aws.controls.set_default_step_duration(0.05)  # a fresh execution, were one started, ends quickly
    assert clear_and_run_again(d, run, "run") == "success"
    assert executions(local_aws, pipeline) == [execution]
    assert len(calls(local_aws, "StartPipelineExecution", pipeline)) == 1
    result = xcom(run, "run")
    assert (result["pipeline_execution_arn"], result["status"]) == (
        execution["PipelineExecutionArn"],
        "Stopped",
    )


def test_the_operator_state_never_expires(local_aws: Any, dag_runner: Any) -> None:
    """task_state_store entries expire after [state_store] default_retention_days (30) unless written with
    NEVER_EXPIRE: the operator's state must live as long as its task instance."""
    from sagemaker_pipelines_provider.operators.pipeline import STATE_KEY

    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    with dag() as d:
        operator(pipeline_name=pipeline, parameters={"RunDate": "x"})
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "success"}
    (row,) = task_state_rows(run, "run")
    assert row.key == STATE_KEY
    assert row.expires_at is None  # Airflow's state-store cleanup deletes only rows with expires_at < now


def test_a_clear_after_clear_on_success_wiped_the_state_reattaches_without_a_duplicate(
    local_aws: Any, dag_runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[state_store] clear_on_success wipes the operator's state when the task succeeds. The task instance
    had restarted once (first execution Failed, second Succeeded); a later clear re-sends its start tokens
    in order, SageMaker answers each with the execution it created, and the task re-attaches to the one
    that succeeded: no new execution, the same result."""
    from sagemaker_pipelines_provider.operators.pipeline import REUSED_TOKEN_MARGIN

    monkeypatch.setenv("AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS", "True")
    pipeline, d, run = run_restarted_once(local_aws, dag_runner)
    assert dag_runner.task_states(run) == {"run": "success"}
    succeeded, failed = executions(local_aws, pipeline)
    assert (failed["PipelineExecutionStatus"], succeeded["PipelineExecutionStatus"]) == (
        "Failed",
        "Succeeded",
    )
    assert task_state_rows(run, "run") == []  # wiped on success
    first_tokens = [c["args"]["ClientRequestToken"] for c in calls(local_aws, "StartPipelineExecution")]

    # SageMaker's answer to a re-sent token is recognised by its creation time: let both executions age.
    margin = REUSED_TOKEN_MARGIN.total_seconds() + 0.5
    wait_until(lambda: time.time() > succeeded["StartTime"].timestamp() + margin, timeout=30, what="age")
    assert clear_and_run_again(d, run, "run") == "success"
    assert len(executions(local_aws, pipeline)) == 2, "the clear must not start a new execution"
    starts = calls(local_aws, "StartPipelineExecution")
    assert [c["args"]["ClientRequestToken"] for c in starts[len(first_tokens) :]] == first_tokens
    result = xcom(run, "run")
    assert (result["pipeline_execution_arn"], result["status"]) == (
        succeeded["PipelineExecutionArn"],
        "Succeeded",
    )


@pytest.mark.timeout(150)  # the code before issue 12 slept on the Stopping execution until killed
def test_a_retry_that_finds_its_execution_stopping_waits_deferred_until_the_deadline(
    local_aws: Any, dag_runner: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """Try 1 times out: the trigger stops the execution, whose callback nobody answers, so it stays
    Stopping. Try 2 re-attaches: it waits in a trigger (not a sleeping worker), says why, and fails at its
    own deadline without starting anything."""
    fast_endpoint(local_aws)
    queue = create_queue(local_aws)
    pipeline = create_pipeline(
        local_aws, parameters=[], steps=[processing_step("Prep"), callback_step("Approve", queue, ["Prep"])]
    )
    failures = Failures()
    with dag() as d:
        operator(
            pipeline_name=pipeline,
            deferrable=True,
            execution_timeout=dt.timedelta(seconds=8),
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=failures,
            on_failure_callback=failures,
        )
    run = dag_runner.run_dag(d)
    log = capfd.readouterr().out
    assert dag_runner.task_states(run) == {"run": "failed"}
    (execution,) = executions(local_aws, pipeline)
    assert execution["PipelineExecutionStatus"] == "Stopping"
    assert len(calls(local_aws, "StartPipelineExecution", pipeline)) == 1
    first, second = failures.messages
    assert "passed while waiting" in first  # try 1: the trigger's deadline, which stopped the execution
    # try 2 resumed from its trigger (resume_after_stopping) at its own deadline
    assert f"Execution {execution['PipelineExecutionArn']} was still Stopping at the deadline 20" in second
    assert "is Stopping (a stop was requested" in log
    assert "A callback step that nobody answers keeps an execution Stopping" in log


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_stop_after_a_resumed_execution_is_a_new_stop_request(
    local_aws: Any, dag_runner: Any, deferrable: bool
) -> None:
    """Try 1's execution fails and try 2 resumes it with RetryPipelineExecution; try 2 then times out. Its
    stop (on_kill when synchronous, the trigger's deadline when deferred) carries the token of this attempt
    (counter 0, retries 1), not the one of the attempt before the resume, which SageMaker would answer as
    a repeat of an earlier stop without stopping anything."""
    from sagemaker_pipelines_provider.utils.tokens import stop_token

    fast_endpoint(local_aws)
    pipeline = create_pipeline(local_aws)
    local_aws.controls.set_step_behaviour(pipeline, "Train", fail="GPU on fire", fail_attempts=1)

    def slow_train(context: Any) -> None:  # the resumed Train runs until try 2's execution_timeout
        local_aws.controls.set_step_behaviour(pipeline, "Train", duration=120)

    with dag() as d:
        operator(
            pipeline_name=pipeline,
            parameters={"RunDate": "x"},
            deferrable=deferrable,
            # slack for a loaded machine: try 1 must end Failed, not timed out
            execution_timeout=dt.timedelta(seconds=10),
            retries=1,
            retry_delay=dt.timedelta(seconds=0),
            on_retry_callback=slow_train,
        )
    run = dag_runner.run_dag(d)
    assert dag_runner.task_states(run) == {"run": "failed"}
    (execution,) = executions(local_aws, pipeline)
    arn = execution["PipelineExecutionArn"]
    assert len(calls(local_aws, "RetryPipelineExecution", pipeline)) == 1
    (stop,) = calls(local_aws, "StopPipelineExecution", pipeline)
    identity = (run.dag_id, run.run_id, "run", -1)
    assert stop["args"]["ClientRequestToken"] == stop_token(identity, arn, counter=0, retries=1)
    assert stop["args"]["ClientRequestToken"] != stop_token(identity, arn, counter=0, retries=0)
    wait_until(
        lambda: executions(local_aws, pipeline)[0]["PipelineExecutionStatus"] == "Stopped", what="Stopped"
    )
