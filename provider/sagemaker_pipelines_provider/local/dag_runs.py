"""Run a DAG once, in this process, from a test: :func:`sync_dag` serializes the DAG into the metadata
database (as the dag processor would), :func:`run_dag` syncs and runs it with ``dag.test()``. Which run
each ``logical_date`` creates: docs/testing-your-dags.md.
"""

from __future__ import annotations

from typing import Any

#: The bundle Airflow's dag processor files DAGs of the ``dags_folder`` under.
BUNDLE = "dags-folder"


def sync_dag(dag: Any) -> None:
    """Serialize ``dag`` into the metadata database under the ``dags-folder`` bundle."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/dev/null", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, BUNDLE, None)


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """Sync ``dag`` and run it once with ``dag.test(**kwargs)`` (``logical_date``, ``run_conf``...);
    return the finished DagRun. See the module doc for ``logical_date``."""
    sync_dag(dag)
    return dag.test(**kwargs)


def task_states(dag_run: Any) -> dict[str, str | None]:
    """Map task_id (with ``[i]`` for mapped instances) to the final state of each task instance."""
    states: dict[str, str | None] = {}
    for ti in dag_run.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = None if ti.state is None else str(ti.state)
    return states


__all__ = ["BUNDLE", "run_dag", "sync_dag", "task_states"]
