"""``docker-compose.yaml`` read as Compose reads it: the stack's one source of configuration.

* :func:`interpolate` applies Compose's variable interpolation (``$$``, ``${VAR}``, ``${VAR:-default}``,
  ``${VAR-default}``, ``${VAR:?error}``, ``${VAR:+alt}``, nested defaults) to one string;
  :func:`interpolate_tree` to a whole document. ``tests/compose`` checks the file with the same code.
* :func:`compose_variables` collects the variables Compose would use: ``.env`` next to the file,
  overridden by the shell's environment.
* :func:`load_compose` returns the interpolated document (YAML anchors and merge keys resolved).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster

# --------------------------------------------------------------------------------------------------------
# Interpolation (https://github.com/compose-spec/compose-spec/blob/main/spec.md#interpolation)


class InterpolationError(ValueError):
    pass


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", "-", ":?", "?", ":+", "+")


@dataclass
class VariableUse:
    name: str
    operator: str  # "" when the variable has neither default nor error
    where: str


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (nested braces counted), or -1."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return -1


def interpolate(
    text: str, variables: Mapping[str, str], uses: list[VariableUse] | None = None, where: str = ""
) -> str:
    """``text`` with Compose interpolation applied; records every variable reference in ``uses``."""
    out: list[str] = []
    index = 0
    while index < len(text):
        dollar = text.find("$", index)
        if dollar < 0:
            out.append(text[index:])
            break
        out.append(text[index:dollar])
        index = dollar
        following = text[index + 1 : index + 2]
        if following == "$":
            out.append("$")
            index += 2
            continue
        if following == "{":
            end = _closing_brace(text, index + 1)
            if end < 0:
                raise InterpolationError(f"unterminated '${{' in {text!r}")
            body = text[index + 2 : end]
            match = _NAME.match(body)
            if not match:
                raise InterpolationError(f"invalid variable '${{{body}}}' in {text!r}")
            name, rest = match.group(), body[match.end() :]
            operator = next((op for op in _OPERATORS if rest.startswith(op)), "")
            if rest and not operator:
                raise InterpolationError(f"invalid variable '${{{body}}}' in {text!r}")
            argument = rest[len(operator) :]
            if uses is not None:
                uses.append(VariableUse(name, operator, where))
            value = variables.get(name)
            is_set, non_empty = value is not None, bool(value)
            if operator in (":-", "-"):
                use_value = non_empty if operator == ":-" else is_set
                out.append(value if use_value and value is not None else interpolate(argument, variables))
            elif operator in (":?", "?"):
                ok = non_empty if operator == ":?" else is_set
                if not ok:
                    raise InterpolationError(f"required variable {name} is missing a value: {argument}")
                out.append(value or "")
            elif operator in (":+", "+"):
                use_alt = non_empty if operator == ":+" else is_set
                out.append(interpolate(argument, variables) if use_alt else "")
            else:
                out.append(value or "")
            index = end + 1
            continue
        match = _NAME.match(text, index + 1)
        if not match:
            raise InterpolationError(
                f"invalid interpolation: a '$' not followed by a variable name in {text!r} "
                "(write '$$' for a literal '$')"
            )
        if uses is not None:
            uses.append(VariableUse(match.group(), "", where))
        out.append(variables.get(match.group()) or "")
        index = match.end()
    return "".join(out)


def interpolate_tree(
    node: Any,
    variables: Mapping[str, str],
    uses: list[VariableUse] | None = None,
    path: tuple[Any, ...] = (),
    where: Callable[[tuple[Any, ...]], str] = lambda path: ".".join(map(str, path)),
) -> Any:
    """A parsed document with every string interpolated; ``where(path)`` names a string for ``uses``."""
    if isinstance(node, str):
        return interpolate(node, variables, uses, where=where(path)) if "$" in node else node
    if isinstance(node, dict):
        return {
            key: interpolate_tree(value, variables, uses, (*path, key), where) for key, value in node.items()
        }
    if isinstance(node, list):
        return [interpolate_tree(value, variables, uses, (*path, i), where) for i, value in enumerate(node)]
    return node


# --------------------------------------------------------------------------------------------------------
# The file


def compose_variables(environ: Mapping[str, str], project_dir: Path = REPO) -> dict[str, str]:
    """The variables Compose interpolates with: ``project_dir/.env``, overridden by ``environ``."""
    from dotenv import dotenv_values

    env_file = project_dir / ".env"
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    values.update(environ)
    return values


def load_compose(variables: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file, parsed and interpolated with ``variables``."""
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ValueError(f"{path}: not a compose file with services")
    document: dict[str, Any] = interpolate_tree(raw, variables)
    return document


def environment(spec: Mapping[str, Any]) -> dict[str, str]:
    """A service's (or extension's) ``environment`` as strings, as Compose passes it (list or mapping)."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {name: value for name, value in pairs}
    return {str(k): _scalar(v) for k, v in env.items()}


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def published_port(document: Mapping[str, Any], service: str, container_port: int) -> int:
    """The host port ``service`` publishes for ``container_port`` (``ports: ["HOST:CONTAINER"]``)."""
    for mapping in document["services"][service].get("ports") or []:
        if isinstance(mapping, dict):
            host, target = mapping.get("published"), mapping.get("target")
        else:
            parts = str(mapping).split(":")
            host, target = (parts[-2], parts[-1]) if len(parts) >= 2 else (None, parts[0])
        if host and int(str(target).split("/")[0]) == container_port:
            return int(host)
    raise ValueError(f"service {service!r} publishes no host port for container port {container_port}")
