"""The pure pieces of callback handling: message parsing and routing, the visibility lease, the reconciler.

Nothing here is an Airflow operator: :mod:`.message` is pure (no I/O), :mod:`.lease` keeps one SQS message
hidden while a worker works on it, :mod:`.reconciler` answers callbacks left waiting past a deadline. The
operators, sensor, triggers and task group that use them live in the usual ``operators``/``sensors``/
``triggers``/``task_groups`` packages.
"""
