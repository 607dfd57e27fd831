"""pipeline_chain: links run in order, results flow through XComArg references, fan-out maps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def test_references_set_dependencies_and_validate_patterns() -> None:
    from airflow.sdk import DAG, task
    from sagemaker_pipelines_provider.task_groups.chain import PipelineValue, pipeline_chain

    with DAG("chain_shape", schedule=None, start_date=START), pipeline_chain("c", poll_interval=0.1) as chain:
        features = chain.pipeline("features")

        @task
        def consume(arn: str) -> str:
            return arn

        out = consume(features.execution_arn)  # type: ignore[arg-type]
        second = chain.pipeline(
            "evaluation", parameters={"ModelDataUrl": features.execution_id.format("s3://b/{}")}
        )
    assert isinstance(features.execution_arn, PipelineValue)
    assert "c.features" in out.operator.upstream_task_ids  # type: ignore[attr-defined]
    assert second.start.upstream_task_ids == {"c.features"}
    with pytest.raises(ValueError, match="exactly one"):
        features.execution_id.format("s3://{}/{}")


def test_missing_value_names_the_producer_and_what_was_there() -> None:
    from sagemaker_pipelines_provider.task_groups.chain import PipelineValue, PipelineValueMissing

    class Source:
        def resolve(self, context: Any) -> Any:
            return {"outputs": {"Train": {"TrainingJobArn": "arn"}}}

        def iter_references(self) -> Any:
            return iter(())

    value = PipelineValue(Source(), ("outputs", "Register", "ModelPackageArn"))  # type: ignore[arg-type]
    with pytest.raises(PipelineValueMissing, match=r"no 'Register' under outputs .*\['Train'\]"):
        value.resolve({})  # type: ignore[arg-type]
    assert PipelineValue(Source(), ("outputs", "X"), default="d").resolve({}) == "d"  # type: ignore[arg-type]


def test_chain_feeds_outputs_forward_and_fans_out_per_market(local_aws: Any, dag_runner: Any) -> None:
    from airflow.sdk import DAG, task
    from sagemaker_pipelines_provider.task_groups.chain import pipeline_chain

    local_aws.controls.set_time_scale(1.0)
    local_aws.controls.set_default_step_duration(0.05)
    local_aws.seed()

    @task
    def markets() -> list[str]:
        return ["de", "fr", "{{ not_rendered }}"]

    def market_parameters(market: str) -> dict[str, Any]:
        return {"Market": market, "DataStartDate": "2026-02-01", "DataEndDate": "2026-02-02"}

    seen: list[Any] = []

    @task
    def report(features_arn: str, arns: list[str]) -> None:
        seen.append((features_arn, list(arns)))

    with (
        DAG("chain_fan_out", schedule=None, start_date=START, tags=["test"]) as dag,
        pipeline_chain("c", poll_interval=0.1, deferrable=True) as chain,
    ):
        features = chain.pipeline("features", display_name="features-{{ ds_nodash }}")
        retrain = chain.pipeline_map(
            "retraining",
            parameters=markets().map(market_parameters),
            display_name="retraining-{{ ds_nodash }}-{{ ti.map_index }}",
        )
        chain.add(report(features.execution_arn, retrain.execution_arns))  # type: ignore[arg-type]

    run = dag_runner.run_dag(dag, logical_date=START)
    states = dag_runner.task_states(run)
    assert run.state == "success", states
    sm = local_aws.client("sagemaker")
    summaries = sm.list_pipeline_executions(PipelineName="retraining")["PipelineExecutionSummaries"]
    assert len(summaries) == 3
    markets_run = sorted(
        next(
            p["Value"]
            for p in sm.list_pipeline_parameters_for_execution(
                PipelineExecutionArn=s["PipelineExecutionArn"]
            )["PipelineParameters"]
            if p["Name"] == "Market"
        )
        for s in summaries
    )
    assert markets_run == sorted(["de", "fr", "{{ not_rendered }}"])  # XCom values are never rendered
    ((features_arn, arns),) = seen
    assert (
        features_arn
        == sm.list_pipeline_executions(PipelineName="features")["PipelineExecutionSummaries"][0][
            "PipelineExecutionArn"
        ]
    )
    assert sorted(arns) == sorted(s["PipelineExecutionArn"] for s in summaries)
