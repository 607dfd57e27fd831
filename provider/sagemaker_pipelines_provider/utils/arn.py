"""The one parser of SageMaker pipeline and pipeline-execution ARNs.

An execution ARN reads ``arn:<partition>:sagemaker:<region>:<account>:pipeline/<pipeline>/execution/<id>``;
a pipeline ARN ends at ``pipeline/<pipeline>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXECUTION_ARN_FORMAT = "arn:<partition>:sagemaker:<region>:<account>:pipeline/<pipeline>/execution/<id>"

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z\-]*):sagemaker:(?P<region>[a-z0-9\-]+):(?P<account>\d{12}):"
    r"pipeline/(?P<pipeline>[^/]+)(?:/execution/(?P<execution>[^/]+))?$"
)


@dataclass(frozen=True)
class ExecutionArn:
    """The parts of a pipeline execution ARN; ``str()`` gives the ARN back."""

    partition: str
    region: str
    account: str
    pipeline_name: str
    execution_id: str

    @classmethod
    def parse(cls, arn: str) -> ExecutionArn:
        """Split ``arn``; :class:`ValueError` naming the expected form when it is no execution ARN."""
        match = _ARN.match(arn) if isinstance(arn, str) else None
        if match is None or match["execution"] is None:
            raise ValueError(
                f"{arn!r} is not a SageMaker pipeline execution ARN (expected {EXECUTION_ARN_FORMAT})"
            )
        return cls(
            match["partition"], match["region"], match["account"], match["pipeline"], match["execution"]
        )

    @classmethod
    def parse_or_none(cls, arn: str | None) -> ExecutionArn | None:
        """:meth:`parse`, or None when ``arn`` is missing or no execution ARN (for best-effort readers)."""
        try:
            return cls.parse(arn) if arn else None
        except ValueError:
            return None

    def __str__(self) -> str:
        return (
            f"arn:{self.partition}:sagemaker:{self.region}:{self.account}:"
            f"pipeline/{self.pipeline_name}/execution/{self.execution_id}"
        )


def as_pipeline_name(name_or_arn: str) -> str:
    """The pipeline named by a pipeline name, a pipeline ARN or one of its execution ARNs.

    :raises ValueError: for a value starting with ``arn:`` that is neither kind of ARN.
    """
    if not name_or_arn.startswith("arn:"):
        return name_or_arn
    match = _ARN.match(name_or_arn)
    if match is None:
        raise ValueError(
            f"{name_or_arn!r} is not a SageMaker pipeline ARN (expected "
            "arn:<partition>:sagemaker:<region>:<account>:pipeline/<pipeline>) nor an execution ARN"
        )
    return match["pipeline"]


__all__ = ["EXECUTION_ARN_FORMAT", "ExecutionArn", "as_pipeline_name"]
