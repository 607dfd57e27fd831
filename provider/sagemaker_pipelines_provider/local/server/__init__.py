"""The local AWS endpoint's server: one loopback port, SageMaker pipeline actions to the engine, the
control API under ``/_local/``, everything else to moto. See docs/local-endpoint.md.

:class:`LocalEndpoint` (:mod:`.lifecycle`) serves :class:`LocalEndpointApp` (:mod:`.app`); beside them:
request identity (:mod:`.identity`), the call record (:mod:`.calls`), faults (:mod:`.faults`), the control
API (:mod:`.control_api`), moto side effects (:mod:`.moto_effects`) and rewritten moto answers
(:mod:`.job_outcomes`, :mod:`.sqs_receipts`). Names are imported on first use, so a submodule (the
control client's :mod:`.job_outcomes`) loads without the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .app import LocalEndpointApp
    from .control_api import CONTROL_PREFIX
    from .environ import (
        DEFAULT_ACCOUNT_ID,
        DEFAULT_REGION,
        ENV_TO_UNSET,
        ENV_TO_UNSET_PREFIXES,
        endpoint_environ,
        variables_to_unset,
    )
    from .lifecycle import DEFAULT_STEP_DURATION, DEFAULT_TIME_SCALE, LocalEndpoint
    from .moto_effects import MotoSideEffects

_EXPORTS = {
    "CONTROL_PREFIX": "control_api",
    "DEFAULT_ACCOUNT_ID": "environ",
    "DEFAULT_REGION": "environ",
    "DEFAULT_STEP_DURATION": "lifecycle",
    "DEFAULT_TIME_SCALE": "lifecycle",
    "ENV_TO_UNSET": "environ",
    "ENV_TO_UNSET_PREFIXES": "environ",
    "LocalEndpoint": "lifecycle",
    "LocalEndpointApp": "app",
    "MotoSideEffects": "moto_effects",
    "endpoint_environ": "environ",
    "variables_to_unset": "environ",
}

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "DEFAULT_STEP_DURATION",
    "DEFAULT_TIME_SCALE",
    "ENV_TO_UNSET",
    "ENV_TO_UNSET_PREFIXES",
    "LocalEndpoint",
    "LocalEndpointApp",
    "MotoSideEffects",
    "endpoint_environ",
    "variables_to_unset",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
