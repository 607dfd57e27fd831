"""Mirror the ``evaluation`` SageMaker pipeline in Airflow: one task per step.

The Graph view shows ``start -> Evaluate -> CheckAccuracy -> RegisterEvaluatedModel | AccuracyTooLow ->
result``; the Grid view shows each step's state: the branch the Condition did not take ends skipped, a
failed step's task fails with the step's reason, and clearing it resumes the execution
(RetryPipelineExecution) from that step.

The definition is the JSON the local endpoint is seeded with, read at parse time from the package (no
AWS call while parsing). Against real AWS, pass ``definition="pipelines/evaluation.json"`` (a file next to
this DAG) or ``fetch_definition=True``.

Run it against the local endpoint::

    sagemaker-pipelines-local serve --seed &
    AWS_ENDPOINT_URL=http://127.0.0.1:5055 airflow dags test mirror_pipeline \\
        -c '{"accuracy_threshold": 0.85}'
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param
from sagemaker_pipelines_provider.local.seed import load_definition
from sagemaker_pipelines_provider.task_groups.mirror import SageMakerPipelineTaskGroup

with DAG(
    dag_id="mirror_pipeline",
    description="One Airflow task per step of the SageMaker pipeline 'evaluation'",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["sagemaker", "example", "mirror"],
    params={
        "accuracy_threshold": Param(0.8, type="number", minimum=0, maximum=1),
        "model_data_url": Param("s3://sagemaker-local-demo/models/latest/model.tar.gz", type="string"),
    },
) as dag:
    evaluation = SageMakerPipelineTaskGroup(
        "evaluation",
        definition=load_definition("evaluation"),
        parameters={
            "AccuracyThreshold": "{{ params.accuracy_threshold }}",
            "ModelDataUrl": "{{ params.model_data_url }}",
        },
        # a manual run without a logical date (the Trigger button) has no ts_nodash: use when it was triggered
        display_name="airflow-{{ (dag_run.logical_date or dag_run.run_after) | ts_nodash }}",
        poll_interval=5.0,
    )
