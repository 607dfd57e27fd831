"""``make stack``: the stack of ``docker-compose.yaml`` (CeleryExecutor on PostgreSQL and Redis, an
api-server, a scheduler, a dag-processor, two triggerers, a Celery worker and the local AWS endpoint) as
local processes, configured from the compose file itself. Not shipped in the wheel: a development tool
of this repository, run with the venv's Python (``.venv/bin/python -m stack up|down|status|airflow``).
"""

from .core import AIRFLOW_SERVICES, BASE_SERVICES, DEFAULT_STATE_DIR, POOL, Stack, free_port
from .errors import StackError
from .rest import AirflowApi, ApiError

__all__ = [
    "AIRFLOW_SERVICES",
    "BASE_SERVICES",
    "DEFAULT_STATE_DIR",
    "POOL",
    "AirflowApi",
    "ApiError",
    "Stack",
    "StackError",
    "free_port",
]
