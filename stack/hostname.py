"""``[core] hostname_callable`` of the stack's Airflow processes: one hostname per process.

In ``docker-compose.yaml`` every Airflow service runs in its own container, so each reports its own
hostname (job records, task instances, ``airflow jobs check --hostname``). On one machine the stack gives
each process the name of its service through ``STACK_HOSTNAME`` (``triggerer-1``, ``worker`` ...), so
the two triggerers are told apart and a task instance names the worker that ran it.
"""

from __future__ import annotations

import os
import socket

ENV_NAME = "STACK_HOSTNAME"


def from_environment() -> str:
    """``$STACK_HOSTNAME``, else the machine's fully qualified name (Airflow's default)."""
    return os.environ.get(ENV_NAME) or socket.getfqdn()
