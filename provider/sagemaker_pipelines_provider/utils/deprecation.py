"""Former public names kept importable: a module ``__getattr__`` that warns, then returns the new object."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from airflow.exceptions import AirflowProviderDeprecationWarning


def renamed(module: str, namespace: Mapping[str, Any], aliases: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` serving ``aliases`` (old name -> new name) from ``namespace``.

    Using an old name (``from module import Old`` or ``module.Old``) warns with
    ``AirflowProviderDeprecationWarning`` (a ``DeprecationWarning``) and gives the new object itself, so
    ``isinstance`` checks and subclasses keep working.
    """

    def __getattr__(name: str) -> Any:
        new = aliases.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated: use {module}.{new} (same class, new name).",
            AirflowProviderDeprecationWarning,
            stacklevel=2,
        )
        return namespace[new]

    return __getattr__


__all__ = ["renamed"]
