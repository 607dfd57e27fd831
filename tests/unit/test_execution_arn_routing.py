"""``SageMakerPipelineOperator.execution_arn`` and where a ``callback_handler`` may be routed.

The reference resolves to the XCom the operator pushes as soon as the execution starts. Routing a handler
on a task that returns only once the execution ended (an operator waiting for completion, a pipeline
sensor, a pipeline_chain link that waits) would deadlock, and is refused when the DAG is parsed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/sagemaker-callbacks"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def dag(dag_id: str) -> Any:
    from airflow.sdk import DAG

    return DAG(dag_id, schedule=None, start_date=START)


def test_execution_arn_is_a_reference_to_the_start_xcom() -> None:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
    from sagemaker_pipelines_provider.references import PipelineValue

    with dag("arn_ref"):
        train = SageMakerPipelineOperator(
            task_id="train", pipeline_name="training", wait_for_completion=False
        )
    ref = train.execution_arn
    assert isinstance(ref, PipelineValue)
    assert [(op.task_id, key) for op, key in ref.iter_references()] == [("train", "pipeline_execution_arn")]

    class TI:
        def xcom_pull(self, task_ids: Any, key: str, **kwargs: Any) -> Any:
            assert (task_ids, key) == ("train", "pipeline_execution_arn")
            return "arn:aws:sagemaker:us-east-1:123456789012:pipeline/training/execution/abc123"

    context: Any = {"ti": TI()}
    assert ref.resolve(context).endswith("/execution/abc123")
    assert ref.map(lambda arn: arn.rsplit("/", 1)[-1]).resolve(context) == "abc123"


def test_handler_routed_on_an_operator_that_does_not_wait() -> None:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    with dag("routed") as d:
        train = SageMakerPipelineOperator(
            task_id="train", pipeline_name="training", wait_for_completion=False
        )
        validate = callback_handler("validate", queue_url=QUEUE, pipeline_execution_arn=train.execution_arn)
        done = SageMakerPipelineExecutionSensor(task_id="done", pipeline_execution_arn=train.execution_arn)
        validate["answer"] >> done
    assert d.get_task("validate.wait").upstream_task_ids == {"train"}
    assert d.get_task("done").upstream_task_ids == {"train", "validate.answer"}


@pytest.mark.parametrize("source", ["operator", "sensor", "chain_link", "chain_link_with_callback"])
def test_handler_routed_on_a_task_that_waits_is_refused(source: str) -> None:
    from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
    from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler
    from sagemaker_pipelines_provider.task_groups.chain import SageMakerCallbackWork, pipeline_chain

    with dag(f"refused_{source}"):
        if source == "operator":
            arn: Any = SageMakerPipelineOperator(task_id="train", pipeline_name="training").execution_arn
        elif source == "sensor":
            arn = SageMakerPipelineExecutionSensor(task_id="train", pipeline_execution_arn="arn").output[  # type: ignore[index]
                "pipeline_execution_arn"
            ]
        else:
            with pipeline_chain("chain") as chain:
                callback = (
                    SageMakerCallbackWork(queue_url=QUEUE) if source == "chain_link_with_callback" else None
                )
                arn = chain.pipeline("training", callback=callback).execution_arn
        with pytest.raises(ValueError) as raised:
            callback_handler("validate", queue_url=QUEUE, pipeline_execution_arn=arn)
    message = str(raised.value)
    assert "neither would ever finish" in message
    assert "wait_for_completion=False" in message
    assert "pipeline_execution_arn=start.execution_arn" in message
    assert 'handler["answer"] >> done' in message
    assert "callback=SageMakerCallbackWork(" in message


def test_a_template_string_is_not_inspected() -> None:
    """Jinja strings (``{{ ti.xcom_pull(...) }}``) stay allowed: nothing to see before rendering."""
    from sagemaker_pipelines_provider.task_groups.callback import callback_handler

    with dag("template"):
        callback_handler(
            "validate",
            queue_url=QUEUE,
            pipeline_execution_arn="{{ ti.xcom_pull(task_ids='train', key='pipeline_execution_arn') }}",
        )
