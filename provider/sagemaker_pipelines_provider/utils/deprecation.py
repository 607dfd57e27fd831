"""Old public names kept importable, with a DeprecationWarning on use.

A module assigns ``__getattr__ = deprecated_aliases(__name__, OldName=NewClass)``: ``from module import
OldName`` and ``import_string("module.OldName")`` (how Airflow loads a trigger by the classpath stored with
it) both give ``NewClass``, which then serialises under its new name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def deprecated_aliases(module: str, **aliases: Any) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` resolving each old name in ``aliases`` to its new object."""

    def __getattr__(name: str) -> Any:
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new = aliases[name]
        warnings.warn(
            f"{module}.{name} is deprecated; use {module}.{new.__name__}",
            DeprecationWarning,
            stacklevel=2,
        )
        return new

    return __getattr__


__all__ = ["deprecated_aliases"]
