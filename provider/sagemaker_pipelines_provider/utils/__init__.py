"""Small single-purpose helpers shared by hooks, operators, sensors and triggers.

Each module holds exactly one mechanism that everything else calls:

- :mod:`.backoff`: the jittered retry/backoff policy for AWS calls (sync and async);
- :mod:`.tokens`: the idempotency-token derivation;
- :mod:`.status`: the terminal-status policy of a pipeline execution.
"""
