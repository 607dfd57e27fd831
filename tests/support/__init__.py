"""What the tests share (no tests here), imported as ``tests.support.<module>``:

- :mod:`.waiting`: ``wait_until``, the one polling wait;
- :mod:`.endpoint`: names, pipelines, queues and executions on the local endpoint (``local_aws``);
- :mod:`.pipelines`: the pipeline operator / sensor / trigger tests' DAGs, steps and background actors;
- :mod:`.callbacks`: Callback-step pipelines, answers and asset events of the callback tests;
- :mod:`.example_dags`: the example DAGs of ``dags/`` run against the endpoint (once per session);
- :mod:`.scheduler_loop`: existing DAG runs driven in-process as the scheduler and triggerer would;
- :mod:`.airflow_processes`: real ``airflow`` processes and tasks deferred in the metadata DB;
- :mod:`.user_env`: a user's environment for child processes.
"""
