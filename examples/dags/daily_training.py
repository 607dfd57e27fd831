import pendulum
from airflow.sdk import DAG
from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator

# The run's date: its logical date, or when it was triggered for a manual run, which has none in Airflow 3.
RUN_DATE = "(dag_run.logical_date or dag_run.run_after)"

with DAG("daily_training", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    SageMakerPipelineOperator(
        task_id="train",
        pipeline_name="retraining",
        parameters={"DataStartDate": "{{ " + RUN_DATE + " | ds }}", "Market": "all"},
        display_name="train-{{ " + RUN_DATE + " | ds_nodash }}",
        deferrable=True,
    )
