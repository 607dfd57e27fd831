"""callback_handler's shape: tasks, edges, trigger rules, leases on work tasks; the sensor's arguments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/callbacks"


def build(**kwargs: Any) -> tuple[Any, Any]:
    from airflow.sdk import DAG
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    with DAG("shape", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) as dag:
        group = callback_handler("cb", **kwargs)
    return dag, group


def edges(dag: Any) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_taskflow_work_shape() -> None:
    from airflow.sdk import task

    @task
    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    dag, group = build(queue_url=QUEUE, pipeline_name="training", work=validate)
    assert group.group_id == "cb"
    assert set(dag.task_ids) == {"cb.wait", "cb.validate", "cb.answer", "cb.answer_failure"}
    assert edges(dag) == {
        ("cb.wait", "cb.validate"),
        ("cb.wait", "cb.answer"),
        ("cb.validate", "cb.answer"),
        ("cb.wait", "cb.answer_failure"),
        ("cb.validate", "cb.answer_failure"),
        ("cb.answer", "cb.answer_failure"),
    }
    assert dag.get_task("cb.answer").trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("cb.answer_failure").trigger_rule == "one_failed"
    assert dag.get_task("cb.validate")._pre_execute_hook is not None  # the lease / Stopping skip
    assert dag.get_task("cb.wait")._pre_execute_hook is None
    outputs = dag.get_task("cb.answer").outputs
    assert outputs.operator.task_id == "cb.validate"  # the TaskFlow result is the default outputs


def test_operator_work_chain_and_explicit_outputs() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator

    def work(args: Any) -> Any:
        first = EmptyOperator(task_id="first")
        second = EmptyOperator(task_id="second", doc=args.template("model"))
        first >> second
        return second

    dag, _ = build(queue_url=QUEUE, work=work, outputs={"passed": True})
    assert ("cb.wait", "cb.first") in edges(dag)
    assert ("cb.wait", "cb.second") not in edges(dag)  # only the roots hang off wait
    assert ("cb.second", "cb.answer") in edges(dag) and ("cb.first", "cb.answer") not in edges(dag)
    assert dag.get_task("cb.answer").outputs == {"passed": True}
    template = dag.get_task("cb.second").doc
    assert template.startswith("{{") and '"cb.wait"' in template and '"model"' in template


def test_callable_outputs_get_the_work_result() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator

    dag, _ = build(
        queue_url=QUEUE,
        work=lambda args: EmptyOperator(task_id="job"),
        outputs=lambda job: {"job": job.task_id},
    )
    assert dag.get_task("cb.answer").outputs == {"job": "cb.job"}


def test_no_work_answers_at_once_and_sensor_kwargs_reach_the_sensor() -> None:
    dag, _ = build(
        queue_url=QUEUE,
        pipeline_execution_arn="{{ ti.xcom_pull(task_ids='start', key='pipeline_execution_arn') }}",
        match_arguments={"k": "v"},
        visibility_timeout=600,
        sensor_kwargs={"deferrable": True, "timeout": 3600, "wait_time_seconds": 10},
    )
    assert set(dag.task_ids) == {"cb.wait", "cb.answer", "cb.answer_failure"}
    sensor = dag.get_task("cb.wait")
    assert (sensor.deferrable, sensor.timeout, sensor.wait_time_seconds, sensor.visibility_timeout) == (
        True,
        3600,
        10,
        600,
    )
    assert set(sensor.template_fields) >= {
        "queue_url",
        "pipeline_execution_arn",
        "pipeline_name",
        "match_arguments",
    }


def test_event_driven_form_takes_the_message_from_the_asset_event() -> None:
    from airflow.sdk import Asset
    from sagemaker_pipelines_provider.task_groups.callback import SageMakerCallbackFromAssetEventOperator

    dag, _ = build(from_asset=Asset("callbacks"))
    assert isinstance(dag.get_task("cb.wait"), SageMakerCallbackFromAssetEventOperator)


def test_invalid_arguments_say_what_to_do() -> None:
    from sagemaker_pipelines_provider.sensors.callback import SageMakerCallbackSensor

    with pytest.raises(ValueError, match="pass queue_url"):
        build()
    with pytest.raises(ValueError, match="visibility_timeout must be 1-43200"):
        SageMakerCallbackSensor(task_id="s", queue_url=QUEUE, visibility_timeout=0)
    with pytest.raises(ValueError, match="wait_time_seconds must be 0-20"):
        SageMakerCallbackSensor(task_id="s", queue_url=QUEUE, wait_time_seconds=60)


def test_argument_template_renders_its_default_when_the_message_lacks_the_argument() -> None:
    """``args.template(name, default)`` under Airflow's StrictUndefined: None, strings, numbers, bools."""
    from types import SimpleNamespace

    import jinja2
    from airflow.providers.standard.operators.empty import EmptyOperator

    cases: list[tuple[Any, str]] = [
        (None, "None"),
        ("fallback", "fallback"),
        ('quo"te\\ {{ 7 * 7 }} é', 'quo"te\\ {{ 7 * 7 }} é'),
        (3, "3"),
        (2.5, "2.5"),
        (True, "True"),
        (False, "False"),
    ]
    templates: list[str] = []

    def work(args: Any) -> Any:
        templates.extend(args.template("missing", default) for default, _ in cases)
        templates.append(args.template("present"))
        return EmptyOperator(task_id="noop")

    dag, _ = build(queue_url=QUEUE, work=work)
    env = dag.get_template_env()
    assert env.undefined is jinja2.StrictUndefined
    pulled: list[tuple[Any, Any]] = []

    def xcom_pull(task_ids: Any = None, key: Any = None) -> dict[str, Any]:
        pulled.append((task_ids, key))
        return {"present": "here"}  # a message without the argument "missing"

    ti = SimpleNamespace(xcom_pull=xcom_pull)
    rendered = [env.from_string(t).render(ti=ti) for t in templates]
    assert rendered == [expected for _, expected in cases] + ["here"]
    assert set(pulled) == {("cb.wait", "arguments")}
    with pytest.raises(TypeError, match="default"):
        work_args = []
        build(queue_url=QUEUE, work=lambda args: work_args.append(args.template("x", {"a": None})))
