"""Airflow provider for DAG-in-DAG orchestration of Amazon SageMaker Pipelines."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-sagemaker-pipelines"
_PKG = "sagemaker_pipelines_provider"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for Airflow's ProvidersManager (validated against Airflow's provider-info schema).

    Every module listed here must import; tests/unit/test_provider_info.py checks that, so the list is
    kept in step with the package as features land.
    """
    integration = "Amazon SageMaker Pipelines"
    return {
        "package-name": PACKAGE_NAME,
        "name": "SageMaker Pipelines (DAG-in-DAG)",
        "description": (
            "Start, wait on, resume and stop Amazon SageMaker Pipelines executions, answer their callback "
            "steps from Airflow, and chain them with Glue and ECS work."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": integration,
                "external-doc-url": "https://docs.aws.amazon.com/sagemaker/latest/dg/pipelines.html",
                "tags": ["aws"],
            }
        ],
        "hooks": [
            {
                "integration-name": integration,
                "python-modules": [f"{_PKG}.hooks.pipeline", f"{_PKG}.hooks.callback_queue"],
            }
        ],
        "operators": [
            {
                "integration-name": integration,
                "python-modules": [f"{_PKG}.operators.pipeline", f"{_PKG}.operators.callback"],
            }
        ],
        "sensors": [
            {
                "integration-name": integration,
                "python-modules": [
                    f"{_PKG}.sensors.pipeline",
                    f"{_PKG}.sensors.pipeline_step",
                    f"{_PKG}.sensors.callback",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": integration,
                "python-modules": [
                    f"{_PKG}.triggers.pipeline",
                    f"{_PKG}.triggers.pipeline_step",
                    f"{_PKG}.triggers.callback",
                    f"{_PKG}.triggers.capacity",
                ],
            }
        ],
        "extra-links": [f"{_PKG}.links.pipeline.SageMakerPipelineExecutionLink"],
        # Read by sagemaker_pipelines_provider.utils.poll_interval (which holds the same names and default).
        "config": {
            "sagemaker_pipelines": {
                "description": "Defaults of the SageMaker Pipelines (DAG-in-DAG) provider's operators, "
                "sensors and task groups.",
                "options": {
                    "default_poll_interval": {
                        "description": (
                            "Seconds between two status polls of a pipeline execution, the default of "
                            "SageMakerPipelineOperator(poll_interval=), pipeline_chain and "
                            "SageMakerPipelineTaskGroup, and the default poke_interval of "
                            "SageMakerPipelineExecutionSensor and SageMakerPipelineStepSensor. An explicit "
                            "argument wins. Read when the DAG file is parsed; must be a number > 0."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "5",
                        "default": "30",
                    },
                    "event_safety_poll_interval": {
                        "description": (
                            "Seconds between two safety polls of a pipeline execution whose wait reads "
                            "SageMaker's status events from an SQS queue (event_queue_url): the default "
                            "safety_poll_interval, the latency of an end whose events were lost. An explicit "
                            "argument wins. Must be a number > 0."
                        ),
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "300",
                        "default": "600",
                    },
                },
            }
        },
    }
