"""Evaluate the values of a pipeline definition: literals, ``Get`` references, ``Std:*`` functions,
conditions. Pure: every input comes through a :class:`Scope`; failures raise :class:`ExpressionError`
with a reason fit for a step's ``FailureReason``. Modelling choices: docs/local-endpoint.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sagemaker_pipelines_provider.definition import format_value, split_reference, thaw

__all__ = [
    "ExpressionError",
    "Scope",
    "evaluate",
    "evaluate_conditions",
    "lookup_path",
    "parse_path",
]


class ExpressionError(Exception):
    """A value could not be evaluated; ``str(err)`` is the reason."""


@dataclass(frozen=True)
class Scope:
    """Where evaluation reads from.

    * ``parameters``: typed parameter values of the execution;
    * ``execution``: ``Execution.*`` variables (``CurrentDateTime``, when absent, comes from ``now``);
    * ``step_properties(step)``: the Describe*-shaped properties of a finished step, or None when the
      step has none to offer (not run, not succeeded);
    * ``property_file(step, file_name)``: the parsed JSON document of a step's property file; raises
      :class:`ExpressionError` when it cannot be read;
    * ``read_json(s3_uri)``: a parsed JSON document at an S3 URI (``Std:JsonGet`` with ``S3Uri``).
    """

    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    step_properties: Callable[[str], Mapping[str, Any] | None]
    property_file: Callable[[str, str], Any]
    read_json: Callable[[str], Any] | None = None
    now: Callable[[], str] | None = None


# --------------------------------------------------------------------------------------------------
# paths

_TOKEN = re.compile(r"""\.?([^.\[\]]+)|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]|\[\s*(-?\d+)\s*\]""")

PathSegment = tuple[str, str | int]  # ("attr", name) | ("key", key) | ("index", n)


def parse_path(path: str) -> list[PathSegment]:
    """``"Outputs['train'].S3Output.S3Uri"`` -> ``[("attr","Outputs"), ("key","train"), ...]``."""
    segments: list[PathSegment] = []
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"cannot parse path {path!r} at position {position}")
        attr, single, double, index = match.groups()
        if attr is not None:
            segments.append(("attr", attr))
        elif single is not None:
            segments.append(("key", single))
        elif double is not None:
            segments.append(("key", double))
        else:
            segments.append(("index", int(index)))
        position = match.end()
    return segments


def _select_named(items: Sequence[Any], key: str) -> Any:
    for item in items:
        if isinstance(item, Mapping) and any(
            field.endswith("Name") and value == key for field, value in item.items()
        ):
            return item
    raise KeyError(key)


def lookup_path(value: Any, segments: Sequence[PathSegment], *, what: str) -> Any:
    """Follow ``segments`` into ``value``; raises :class:`ExpressionError` naming ``what`` and the segment."""
    current = value
    walked = ""
    for kind, key in segments:
        walked += f".{key}" if kind == "attr" else f"[{key!r}]"
        try:
            if isinstance(current, Mapping):
                current = current[str(key)]
            elif isinstance(current, list | tuple) and not isinstance(current, str):
                if kind == "index":
                    current = current[int(key)]
                elif kind == "key":
                    current = _select_named(current, str(key))
                else:
                    raise KeyError(key)
            else:
                raise KeyError(key)
        except (KeyError, IndexError, ValueError):
            raise ExpressionError(f"{what} has no {walked.lstrip('.')}") from None
    return current


# --------------------------------------------------------------------------------------------------
# values


def evaluate(value: Any, scope: Scope) -> Any:
    """The plain JSON value of ``value`` with every expression in it resolved (containers are rebuilt)."""
    if isinstance(value, Mapping):
        if len(value) == 1:
            (key, inner), *_ = value.items()
            if key == "Get" and isinstance(inner, str):
                return _get(inner, scope)
            if key == "Std:Join":
                return _join(inner, scope)
            if key == "Std:JsonGet":
                return _json_get(inner, scope)
        return {k: evaluate(v, scope) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [evaluate(v, scope) for v in value]
    return value


def _get(reference: str, scope: Scope) -> Any:
    try:
        root, name, rest = split_reference(reference)
    except ValueError as err:
        raise ExpressionError(str(err)) from None
    if root == "Parameters":
        if name not in scope.parameters:
            raise ExpressionError(f"parameter {name!r} has no value")
        return scope.parameters[name]
    if root == "Execution":
        if name in scope.execution:
            return scope.execution[name]
        if name == "CurrentDateTime" and scope.now is not None:
            return scope.now()
        raise ExpressionError(f"execution variable {name!r} is not available")
    if rest.startswith(".PropertyFiles."):
        return scope.property_file(name, rest[len(".PropertyFiles.") :])
    properties = scope.step_properties(name)
    if properties is None:
        raise ExpressionError(f"step {name!r} has no properties (it has not succeeded in this execution)")
    if not rest:
        return thaw(properties)
    value = lookup_path(properties, parse_path(rest), what=f"step {name!r}")
    return thaw(value)


def _join(arguments: Any, scope: Scope) -> str:
    if not isinstance(arguments, Mapping):
        raise ExpressionError(f"Std:Join needs {{On, Values}}, got {arguments!r}")
    separator = evaluate(arguments.get("On", ""), scope)
    values = evaluate(arguments.get("Values", []), scope)
    if not isinstance(values, list):
        raise ExpressionError(f"Std:Join Values must be a list, got {values!r}")
    return format_value(separator).join(format_value(v) for v in values)


def _json_get(arguments: Any, scope: Scope) -> Any:
    if not isinstance(arguments, Mapping):
        raise ExpressionError(f"Std:JsonGet needs {{PropertyFile, Path}}, got {arguments!r}")
    path = evaluate(arguments.get("Path"), scope)
    if not isinstance(path, str):
        raise ExpressionError(f"Std:JsonGet Path must be a string, got {path!r}")
    source = arguments.get("PropertyFile")
    if source is not None:
        if isinstance(source, Mapping) and isinstance(source.get("Get"), str):
            document = evaluate(source, scope)
            what = f"property file {source['Get']!r}"
        else:
            raise ExpressionError(
                "Std:JsonGet PropertyFile must be {'Get': 'Steps.<step>.PropertyFiles.<name>'}, "
                f"got {source!r}"
            )
    elif "S3Uri" in arguments:
        uri = evaluate(arguments["S3Uri"], scope)
        if scope.read_json is None:
            raise ExpressionError("Std:JsonGet on an S3Uri is not available here")
        document = scope.read_json(str(uri))
        what = f"JSON document {uri}"
    else:
        raise ExpressionError("Std:JsonGet needs a PropertyFile or an S3Uri")
    return thaw(lookup_path(document, parse_path(path), what=f"{what} (Std:JsonGet path {path!r})"))


# --------------------------------------------------------------------------------------------------
# conditions


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    if isinstance(left, bool) != isinstance(right, bool):
        flag, other = (left, right) if isinstance(left, bool) else (right, left)
        if isinstance(other, str) and other.strip().lower() in ("true", "false"):
            parsed = other.strip().lower() == "true"
            return (flag, parsed) if isinstance(left, bool) else (parsed, flag)
        return left, right
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    left_number, right_number = _as_number(left), _as_number(right)
    if left_number is not None and right_number is not None:
        return left_number, right_number
    return left, right


def _compare(type_name: str, left: Any, right: Any) -> bool:
    left, right = _comparable(left, right)
    if type_name == "Equals":
        return bool(left == right)
    try:
        if type_name == "GreaterThan":
            return bool(left > right)
        if type_name == "GreaterThanOrEqualTo":
            return bool(left >= right)
        if type_name == "LessThan":
            return bool(left < right)
        if type_name == "LessThanOrEqualTo":
            return bool(left <= right)
    except TypeError:
        raise ExpressionError(f"{type_name} cannot compare {left!r} with {right!r}") from None
    raise ExpressionError(f"unknown condition type {type_name!r}")


def evaluate_condition(condition: Mapping[str, Any], scope: Scope) -> bool:
    """The truth of one condition object."""
    type_name = condition.get("Type")
    if type_name == "Not":
        return not evaluate_condition(condition["Expression"], scope)
    if type_name == "Or":
        return any(evaluate_condition(c, scope) for c in condition["Conditions"])
    if type_name == "In":
        query = evaluate(condition["QueryValue"], scope)
        values = evaluate(condition["Values"], scope)
        for candidate in values:
            left, right = _comparable(query, candidate)
            if left == right:
                return True
        return False
    return _compare(
        str(type_name), evaluate(condition["LeftValue"], scope), evaluate(condition["RightValue"], scope)
    )


def evaluate_conditions(conditions: Sequence[Mapping[str, Any]], scope: Scope) -> bool:
    """A Condition step's outcome: all of its conditions hold (an empty list holds)."""
    return all(evaluate_condition(c, scope) for c in conditions)
