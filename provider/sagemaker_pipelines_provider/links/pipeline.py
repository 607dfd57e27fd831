"""The "SageMaker Pipeline Execution" extra link, and the one console-URL builder for an execution.

The link reads the execution ARN the task pushed under :data:`EXECUTION_ARN_XCOM_KEY` and targets the
SageMaker console (the URL needs only the ARN). Why not Studio's URL: ``docs/start-and-wait.md``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from sagemaker_pipelines_provider.utils.arn import ExecutionArn

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key under which the operator and the sensor push the execution ARN.
EXECUTION_ARN_XCOM_KEY = "pipeline_execution_arn"

_CONSOLE_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}


def execution_console_url(pipeline_execution_arn: str | None) -> str:
    """The console page of a pipeline execution, or ``""`` when the ARN is not an execution ARN."""
    arn = ExecutionArn.parse_or_none(pipeline_execution_arn)
    if arn is None:
        return ""
    domain = _CONSOLE_DOMAINS.get(arn.partition, "aws.amazon.com")
    return (
        f"https://{arn.region}.console.{domain}/sagemaker/home?region={arn.region}"
        f"#/pipelines/{quote(arn.pipeline_name, safe='')}/executions/{quote(arn.execution_id, safe='')}"
    )


class SageMakerPipelineExecutionLink(BaseOperatorLink):
    """Link to the console page of the pipeline execution a task started or waited on."""

    name = "SageMaker Pipeline Execution"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        arn = XCom.get_value(key=EXECUTION_ARN_XCOM_KEY, ti_key=ti_key)
        return execution_console_url(arn if isinstance(arn, str) else None)
