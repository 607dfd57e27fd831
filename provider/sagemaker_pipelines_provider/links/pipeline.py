"""The "SageMaker Pipeline Execution" extra link, and the one console-URL builder for an execution.

URL format. SageMaker Studio's pipeline pages live at
``https://studio-<domain-id>.studio.<region>.sagemaker.aws/pipelines/view/<pipeline>/executions/<id>/graph``,
which needs the Studio domain ID — something a task does not know (an account may have several domains
or none). So the link targets the SageMaker console, which needs only the region and the ARN and which
AWS keeps redirecting to the account's Studio experience:
``https://<region>.console.aws.amazon.com/sagemaker/home?region=<region>#/pipelines/<pipeline>/executions/<id>``
(``console.amazonaws.cn`` in China, ``console.amazonaws-us-gov.com`` in GovCloud). Everything is read
from the execution ARN ``arn:<partition>:sagemaker:<region>:<account>:pipeline/<pipeline>/execution/<id>``.

The operator pushes the execution ARN to XCom under :data:`EXECUTION_ARN_XCOM_KEY` as soon as the
execution starts; the link reads it back, so the link works while the task is still waiting (or
deferred), and for the sensor too.
"""

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
