"""Run DAGs in-process in tests with ``dag.test()``.

``dag.test()`` needs the DAG in the metadata database; DAGs built inside a test are synced there
directly (``sync_dag``) so each test can declare the DAG it needs next to its assertions.
"""

from __future__ import annotations

from typing import Any

BUNDLE = "dags-folder"


def sync_dag(dag: Any) -> None:
    """Serialize ``dag`` into the metadata DB under the dags-folder bundle, as the dag processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/dev/null", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE, None)


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """Sync and run ``dag`` once in this process; return the finished DagRun."""
    sync_dag(dag)
    return dag.test(**kwargs)


def task_states(dag_run: Any) -> dict[str, str | None]:
    """Map task_id (with ``[i]`` for mapped instances) to the final state of each task instance."""
    states: dict[str, str | None] = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = None if ti.state is None else str(ti.state)
    return states
