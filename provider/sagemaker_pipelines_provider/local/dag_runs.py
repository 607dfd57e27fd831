"""Run a DAG once, in this process, from a test: ``dag.test()`` with the DAG made known to Airflow first.

A plain ``dag.test()`` only works for DAGs the dag processor would find in the configured DAGs folder:
for any other DAG (one built in a test, one imported from a module elsewhere) it fails with "Cannot
create DagRun ... the dag is not serialized". :func:`sync_dag` serializes the DAG object itself into the
metadata database, as the dag processor would; :func:`run_dag` syncs and runs it. The ``dag_runner``
pytest fixture (:mod:`.pytest_plugin`) gives these functions with the metadata database ready::

    def test_my_dag(local_aws, dag_runner):
        local_aws.seed()
        run = dag_runner.run_dag(my_dag, logical_date=None)
        assert run.state == "success", dag_runner.task_states(run)

Which run :func:`run_dag` creates, by ``logical_date``:

- not given: what ``dag.test()`` does — a manual run whose logical date is now;
- ``None``: a manual run **without a logical date**, which is what the UI's Trigger button,
  ``airflow dags trigger`` and the REST API create by default in Airflow 3: ``ds``, ``ts``,
  ``logical_date`` and ``data_interval_*`` are undefined in templates, ``dag_run.logical_date`` and
  ``dag_run.data_interval_start`` are None, ``dag_run.run_after`` is set;
- a datetime: a manual run of that logical date, with the data interval the DAG's timetable infers for a
  manual run (for ``@daily``-style timetables, the interval that *ends* at that date).

Tasks run one after the other in this process; deferred tasks run their trigger in line.
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
