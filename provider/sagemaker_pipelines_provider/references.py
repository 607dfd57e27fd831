"""Typed references to values of upstream pipeline tasks: :class:`PipelineValue`.

Resolved when the consuming task renders its templates, never rendered as Jinja again; ``.map(fn)`` and
``.format(...)`` derive others. See ``docs/chaining.md``."""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions._internal.mixins import ResolveMixin

from sagemaker_pipelines_provider.utils.arn import ExecutionArn

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.definitions.xcom_arg import XComArg
    from airflow.sdk.types import Operator

#: ``default`` of a reference that has none (the consuming task fails when the value is missing).
MISSING = object()


class PipelineValueMissing(KeyError):
    """A :class:`PipelineValue` found nothing at its path in the producer's result."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "missing pipeline value"


class PipelineValue(ResolveMixin):
    """One value of an upstream pipeline task's result, resolved when the consuming task renders.

    :param source: the XComArg of the producing task (its return value: the result dict).
    :param path: keys to follow inside the result, e.g. ``("outputs", "RegisterModel", "ModelPackageArn")``.
    :param transform: applied to the value found (a plain function; keep it at module level when the value
        is used in a mapped task).
    :param default: returned when the path is absent (otherwise the consuming task fails).
    :param description: what the value is, for error messages and the rendered-template view.
    """

    def __init__(
        self,
        source: XComArg,
        path: Sequence[str] = (),
        *,
        transform: Callable[[Any], Any] | None = None,
        default: Any = MISSING,
        description: str | None = None,
    ) -> None:
        self.source = source
        self.path = tuple(path)
        self.transform = transform
        self.default = default
        self.description = description or ".".join(self.path) or "result"

    def __repr__(self) -> str:
        producers = ",".join(sorted({op.task_id for op, _ in self.source.iter_references()}))
        return f"PipelineValue({producers}:{self.description})"

    __str__ = __repr__

    def iter_references(self) -> Iterator[tuple[Operator, str]]:
        yield from self.source.iter_references()

    def resolve(self, context: Context) -> Any:
        value: Any = self.source.resolve(context)
        walked: list[str] = []
        for key in self.path:
            if isinstance(value, Mapping) and key in value:
                value = value[key]
                walked.append(key)
                continue
            if self.default is not MISSING:
                return self.default
            here = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise PipelineValueMissing(
                f"{self!r}: no {key!r} under {'.'.join(walked) or 'the result'} of the upstream task "
                f"(found {here}). Check the step and output names against the pipeline's definition."
            )
        return self.transform(value) if self.transform is not None else value

    def map(self, transform: Callable[[Any], Any], description: str | None = None) -> PipelineValue:
        """The same value passed through ``transform`` (applied after any earlier transform)."""
        previous = self.transform

        def combined(value: Any) -> Any:
            return transform(previous(value) if previous is not None else value)

        return PipelineValue(
            self.source,
            self.path,
            transform=combined,
            default=self.default,
            description=description or f"{self.description}|{getattr(transform, '__name__', 'fn')}",
        )

    def format(self, pattern: str) -> PipelineValue:
        """The value inserted into a Python format string with one ``{}`` field (not a Jinja template)."""
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
        if fields != [""]:
            raise ValueError(f"format pattern needs exactly one '{{}}' field, got {pattern!r}")
        return self.map(pattern.format, description=f"{self.description}|format({pattern!r})")


def execution_id_from_arn(arn: str) -> str:
    """``<id>`` from ``arn:aws:sagemaker:<region>:<account>:pipeline/<name>/execution/<id>``."""
    return ExecutionArn.parse(str(arn)).execution_id


__all__ = ["MISSING", "PipelineValue", "PipelineValueMissing", "execution_id_from_arn"]
