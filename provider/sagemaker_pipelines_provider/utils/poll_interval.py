"""``SMP_POLL_INTERVAL``: the default poll interval of this provider's operator, sensors and task groups.

Production keeps the defaults (30 s for ``SageMakerPipelineOperator``, ``pipeline_chain`` and
``SageMakerPipelineTaskGroup``; Airflow's 60 s ``poke_interval`` for the pipeline sensors). Tests and the
local demo set ``SMP_POLL_INTERVAL`` (seconds) so that DAGs poll fast without being changed; an explicit
``poll_interval`` / ``poke_interval`` argument always wins. Read when the DAG file is parsed.
"""

from __future__ import annotations

import os

#: Environment variable overriding the default poll interval (seconds).
POLL_INTERVAL_ENV = "SMP_POLL_INTERVAL"
#: Production default between two status polls of one execution (the trigger's poller coalesces them).
DEFAULT_POLL_INTERVAL = 30.0
#: Airflow's default ``poke_interval`` of sensors, kept by the pipeline sensors when the variable is unset.
DEFAULT_SENSOR_POKE_INTERVAL = 60.0


def poll_interval_from_env(default: float = DEFAULT_POLL_INTERVAL) -> float:
    """``SMP_POLL_INTERVAL`` as seconds, else ``default``; a bad value is a clear error."""
    raw = os.environ.get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ValueError(f"{POLL_INTERVAL_ENV}={raw!r} is not a number of seconds") from err
    if value <= 0:
        raise ValueError(f"{POLL_INTERVAL_ENV} must be > 0 seconds, got {raw!r}")
    return value


__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_SENSOR_POKE_INTERVAL",
    "POLL_INTERVAL_ENV",
    "poll_interval_from_env",
]
