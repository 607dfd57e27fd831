"""A SageMaker Pipelines definition, parsed once into an immutable graph.

:func:`parse_definition` returns a read-only :class:`PipelineDefinition` or raises
:class:`DefinitionError` naming the element, the bad value and the valid choices; the hook checks
parameters with :func:`coerce_parameters`; the local engine interprets the graph and the mirror renders
it. Imports nothing from boto or moto. What a parsed graph guarantees: ``docs/mirror.md``."""

from __future__ import annotations

import heapq
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "CONDITION_TYPES",
    "EXECUTION_VARIABLES",
    "PARAMETER_TYPES",
    "STEP_TYPES",
    "Branch",
    "DefinitionError",
    "Edge",
    "OutputParameterSpec",
    "Parameter",
    "ParameterError",
    "PipelineDefinition",
    "PropertyFile",
    "Step",
    "coerce_parameters",
    "coerce_value",
    "describe_parameters",
    "execution_parameters",
    "format_value",
    "freeze",
    "iter_gets",
    "parse_definition",
    "resolve_parameters",
    "split_reference",
    "thaw",
]

PARAMETER_TYPES: tuple[str, ...] = ("String", "Integer", "Float", "Boolean")
"""Declared types of pipeline parameters and of Callback/Lambda output parameters."""

STEP_TYPES: tuple[str, ...] = (
    "Processing",
    "Training",
    "Tuning",
    "Transform",
    "Model",
    "RegisterModel",
    "Condition",
    "Callback",
    "Lambda",
    "Fail",
    "EMR",
    "EMRServerless",
    "QualityCheck",
    "ClarifyCheck",
    "AutoML",
)
"""Step types a definition may use: those of SageMaker's pipeline definition schema, plus
``EMRServerless`` (a documented metadata key of ListPipelineExecutionSteps emitted by the SageMaker Python
SDK's EMRServerlessStep)."""

CONDITION_TYPES: tuple[str, ...] = (
    "Equals",
    "GreaterThan",
    "GreaterThanOrEqualTo",
    "LessThan",
    "LessThanOrEqualTo",
    "In",
    "Not",
    "Or",
)

EXECUTION_VARIABLES: tuple[str, ...] = (
    "PipelineExecutionId",
    "PipelineExecutionArn",
    "PipelineExecutionDisplayName",
    "PipelineName",
    "PipelineArn",
    "CurrentDateTime",
    "StartDateTime",
)
"""``{"Get": "Execution.<name>"}`` variables (the SageMaker Python SDK's ExecutionVariables)."""

REFERENCE_ROOTS: tuple[str, ...] = ("Parameters", "Steps", "Execution")

MAX_PARAMETERS = 200
MAX_PARAMETER_VALUE_LENGTH = 1024
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
_STEP_NAME_END = re.compile(r"[.\[]")

EdgeKind = Literal["DependsOn", "Get", "Branch"]


class DefinitionError(ValueError):
    """The pipeline definition is invalid; the message names the element, the value and the choices."""


class ParameterError(ValueError):
    """Execution parameters do not fit the definition.

    ``problems`` lists every problem found (not only the first); the message also lists the valid
    parameters with their types and defaults, so the caller can fix all of them in one go.
    """

    def __init__(self, problems: Sequence[str], parameters: Sequence[Parameter]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.valid: str = describe_parameters(parameters)
        super().__init__("; ".join(self.problems) + f". Valid parameters: {self.valid}")


# --------------------------------------------------------------------------------------------------
# read-only JSON


def freeze(value: Any) -> Any:
    """A read-only deep copy of a JSON value: dicts become ``MappingProxyType``, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable, JSON-serialisable deep copy of a (possibly frozen) JSON value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# the graph


@dataclass(frozen=True)
class Parameter:
    """One declared pipeline parameter. ``default`` is typed (int for Integer, bool for Boolean...)."""

    name: str
    type: str
    default: Any = None
    has_default: bool = False
    enum_values: tuple[str, ...] | None = None

    @property
    def required(self) -> bool:
        """True when an execution must supply a value (no DefaultValue in the definition)."""
        return not self.has_default


@dataclass(frozen=True)
class PropertyFile:
    """A JSON document a Processing step writes to ``<output OutputName's S3Uri>/<FilePath>``."""

    name: str
    output_name: str
    file_path: str


@dataclass(frozen=True)
class OutputParameterSpec:
    """A declared Callback/Lambda output (``OutputName``, ``OutputType``)."""

    name: str
    type: str


@dataclass(frozen=True)
class Branch:
    """Where a step sits: in the ``IfSteps`` (outcome True) or ``ElseSteps`` of ``condition``."""

    condition: str
    outcome: bool

    @property
    def list_name(self) -> str:
        return "IfSteps" if self.outcome else "ElseSteps"


@dataclass(frozen=True)
class Edge:
    """``downstream`` waits for ``upstream``. ``kind`` says why: an explicit ``DependsOn``, a ``Get``
    reference in the step, or membership of a Condition step's branch (``Branch``)."""

    upstream: str
    downstream: str
    kind: EdgeKind


@dataclass(frozen=True)
class Step:
    """One step of the definition (top level or nested in a condition branch).

    ``arguments`` and ``raw`` (the whole step object, nested branch steps included) are frozen JSON.
    ``upstream`` is every step that must be terminal before this one may start.
    """

    name: str
    type: str
    position: int
    arguments: Any
    raw: Any
    display_name: str | None = None
    description: str | None = None
    depends_on: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    property_files: tuple[PropertyFile, ...] = ()
    sqs_queue_url: str | None = None
    output_parameters: tuple[OutputParameterSpec, ...] = ()
    function_arn: str | None = None
    conditions: tuple[Any, ...] = ()
    if_steps: tuple[str, ...] = ()
    else_steps: tuple[str, ...] = ()
    branch: Branch | None = None
    upstream: frozenset[str] = field(default_factory=frozenset)

    def property_file(self, name: str) -> PropertyFile | None:
        return next((p for p in self.property_files if p.name == name), None)

    def output_parameter(self, name: str) -> OutputParameterSpec | None:
        return next((p for p in self.output_parameters if p.name == name), None)


@dataclass(frozen=True)
class PipelineDefinition:
    """The parsed definition. ``order`` is a topological order of all step names, stable with respect to
    the position of steps in the document (a branch's steps come right after their Condition step)."""

    source: Any
    version: str | None
    parameters: tuple[Parameter, ...]
    steps: Mapping[str, Step]
    order: tuple[str, ...]
    edges: tuple[Edge, ...]
    experiment_config: Any = None

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def top_level(self) -> tuple[str, ...]:
        """Names of the steps that are in no condition branch."""
        return tuple(n for n in self.order if self.steps[n].branch is None)

    def branch_of(self, step: str) -> Branch | None:
        return self.steps[step].branch

    def branch_chain(self, step: str) -> tuple[Branch, ...]:
        """The branches enclosing ``step``, innermost first (several for nested conditions)."""
        chain: list[Branch] = []
        branch = self.steps[step].branch
        while branch is not None:
            chain.append(branch)
            branch = self.steps[branch.condition].branch
        return tuple(chain)

    def downstream(self, step: str) -> frozenset[str]:
        """Steps that wait directly on ``step``."""
        return frozenset(e.downstream for e in self.edges if e.upstream == step)

    def to_json(self) -> str:
        """The definition document as a JSON string."""
        return json.dumps(thaw(self.source))


# --------------------------------------------------------------------------------------------------
# references


def split_reference(get: str) -> tuple[str, str, str]:
    """Split a ``Get`` string into (root, name, rest).

    ``"Steps.Train.ModelArtifacts.S3ModelArtifacts"`` -> ``("Steps", "Train", ".ModelArtifacts...")``;
    ``"Steps.Cb.OutputParameters['x']"`` -> ``("Steps", "Cb", ".OutputParameters['x']")``;
    ``"Parameters.Threshold"`` -> ``("Parameters", "Threshold", "")``. Raises ``ValueError`` when the
    string is not ``<root>.<name>...`` with a known root.
    """
    root, sep, tail = get.partition(".")
    if not sep or root not in REFERENCE_ROOTS or not tail:
        raise ValueError(
            f"reference {get!r} is not '<root>.<name>' with root one of {', '.join(REFERENCE_ROOTS)}"
        )
    if root == "Steps":
        match = _STEP_NAME_END.search(tail)
        if match is None:
            return root, tail, ""
        return root, tail[: match.start()], tail[match.start() :]
    return root, tail, ""


def iter_gets(value: Any) -> Iterator[str]:
    """Every ``{"Get": "..."}`` string anywhere inside a JSON value."""
    if isinstance(value, Mapping):
        get = value.get("Get")
        if isinstance(get, str) and len(value) == 1:
            yield get
            return
        for v in value.values():
            yield from iter_gets(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_gets(v)


# --------------------------------------------------------------------------------------------------
# values


def describe_parameters(parameters: Sequence[Parameter]) -> str:
    """``"A (String, default 'x'), B (Integer, required)"`` -- used in error messages."""
    if not parameters:
        return "(the pipeline declares no parameters)"
    parts = []
    for p in parameters:
        extra = f"default {p.default!r}" if p.has_default else "required"
        if p.enum_values:
            extra += f", one of {list(p.enum_values)}"
        parts.append(f"{p.name} ({p.type}, {extra})")
    return ", ".join(parts)


def coerce_value(type_name: str, value: Any) -> Any:
    """Convert ``value`` (a Python value or the string form an API call carries) to ``type_name``.

    Integer accepts ints and integral strings (``"3"``); Float accepts ints, floats and numeric strings
    (finite only); Boolean accepts bools and ``"true"``/``"false"`` in any case; String accepts strings,
    ints and floats (converted with :func:`format_value`). bools are never numbers. Raises
    ``ValueError`` with the reason.
    """
    if type_name == "String":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return format_value(value)
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    if type_name == "Integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if type_name == "Float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        else:
            raise ValueError(f"expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if type_name == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected a boolean (true or false), got {value!r}")
    raise ValueError(f"unknown type {type_name!r}; valid types: {', '.join(PARAMETER_TYPES)}")


def format_value(value: Any) -> str:
    """The string form of a typed value, as an API call carries it.

    Modelling choice (undocumented by AWS): bools are ``"true"``/``"false"`` (JSON style), floats use
    Python's shortest round-trip ``repr``, None is ``""``, containers are compact JSON.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(thaw(value), separators=(",", ":"), default=str)


def _as_definition(definition: PipelineDefinition | str | Mapping[str, Any]) -> PipelineDefinition:
    return definition if isinstance(definition, PipelineDefinition) else parse_definition(definition)


def _check_overrides(
    definition: PipelineDefinition, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Typed values of the overrides and the list of problems (unknown names, bad types, missing)."""
    problems: list[str] = []
    typed: dict[str, Any] = {}
    if len(overrides) > MAX_PARAMETERS:
        problems.append(f"{len(overrides)} parameters given, at most {MAX_PARAMETERS} are allowed")
    for name, value in overrides.items():
        parameter = definition.parameter(name)
        if parameter is None:
            problems.append(f"unknown parameter {name!r}")
            continue
        try:
            typed[name] = coerce_value(parameter.type, value)
        except ValueError as err:
            problems.append(f"parameter {name!r} is {parameter.type}: {err}")
            continue
        if isinstance(value, str) and len(value) > MAX_PARAMETER_VALUE_LENGTH:
            problems.append(f"parameter {name!r} is longer than {MAX_PARAMETER_VALUE_LENGTH} characters")
        if parameter.enum_values and format_value(typed[name]) not in parameter.enum_values:
            problems.append(f"parameter {name!r} value {value!r} is not one of {list(parameter.enum_values)}")
    for parameter in definition.parameters:
        if parameter.required and parameter.name not in overrides:
            problems.append(f"parameter {parameter.name!r} ({parameter.type}) has no default and no value")
    return typed, problems


def coerce_parameters(
    definition: PipelineDefinition | str | Mapping[str, Any], overrides: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Validate execution parameter overrides and return them as StartPipelineExecution wants them.

    ``overrides`` maps parameter names to Python values or strings. The result is
    ``[{"Name": ..., "Value": <string>}]`` for the overridden parameters only (in definition order):
    parameters left out keep the pipeline's defaults, applied by SageMaker at start. String values are
    passed through unchanged; typed values are formatted with :func:`format_value`.

    Raises :class:`ParameterError` listing every unknown name, every value that is not of the declared
    type (Integer, Float, Boolean; enum values of a String), every required parameter (no default) that
    has no value, and the valid parameters with their types.
    """
    parsed = _as_definition(definition)
    typed, problems = _check_overrides(parsed, overrides)
    if problems:
        raise ParameterError(problems, parsed.parameters)
    result: list[dict[str, str]] = []
    for parameter in parsed.parameters:
        if parameter.name in overrides:
            raw = overrides[parameter.name]
            value = raw if isinstance(raw, str) else format_value(typed[parameter.name])
            result.append({"Name": parameter.name, "Value": value})
    return result


def resolve_parameters(
    definition: PipelineDefinition | str | Mapping[str, Any],
    given: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """All parameter values of an execution, typed, defaults merged with ``given``.

    ``given`` is either a mapping or the API's ``[{"Name", "Value"}]`` list (a name given twice is a
    problem). Raises :class:`ParameterError` like :func:`coerce_parameters`.
    """
    parsed = _as_definition(definition)
    if isinstance(given, Mapping):
        overrides = dict(given)
    else:
        overrides = {}
        duplicated: list[str] = []
        for item in given:
            name = item.get("Name")
            if name in overrides:
                duplicated.append(f"parameter {name!r} given more than once")
            overrides[str(name)] = item.get("Value")
        if duplicated:
            raise ParameterError(duplicated, parsed.parameters)
    typed, problems = _check_overrides(parsed, overrides)
    if problems:
        raise ParameterError(problems, parsed.parameters)
    values: dict[str, Any] = {}
    for parameter in parsed.parameters:
        values[parameter.name] = typed.get(parameter.name, parameter.default)
    return values


def execution_parameters(
    definition: PipelineDefinition | str | Mapping[str, Any], given: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    """Every parameter of an execution as ListPipelineParametersForExecution reports it.

    ``given`` is StartPipelineExecution's ``PipelineParameters`` (already validated, e.g. by
    :func:`coerce_parameters`). The result is ``[{"Name", "Value"}]`` in definition order: a given value as
    sent (formatted with :func:`format_value`), otherwise the definition's default formatted with
    :func:`format_value`. The one rule for the local engine and for the operator that knows its
    execution's parameters without asking.
    """
    parsed = _as_definition(definition)
    sent = {str(p.get("Name")): format_value(p.get("Value")) for p in given}
    return [{"Name": p.name, "Value": sent.get(p.name, format_value(p.default))} for p in parsed.parameters]


# --------------------------------------------------------------------------------------------------
# parsing


def parse_definition(source: str | bytes | Mapping[str, Any]) -> PipelineDefinition:
    """Parse and validate a definition (JSON text or an already decoded dict). See ``docs/mirror.md``."""
    if isinstance(source, str | bytes):
        try:
            document = json.loads(source)
        except json.JSONDecodeError as err:
            raise DefinitionError(f"PipelineDefinition is not valid JSON: {err}") from None
    else:
        document = source
    if not isinstance(document, Mapping):
        raise DefinitionError(
            f"PipelineDefinition must be a JSON object with Version, Parameters and Steps, "
            f"got {type(document).__name__}"
        )
    return _Parser(document).parse()


class _Parser:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.raw_steps: dict[str, Mapping[str, Any]] = {}
        self.branches: dict[str, Branch | None] = {}
        self.positions: dict[str, int] = {}
        self.parameters: tuple[Parameter, ...] = ()

    def parse(self) -> PipelineDefinition:
        version = self.document.get("Version")
        if version is not None and not isinstance(version, str):
            raise DefinitionError(f"Version must be a string such as '2020-12-01', got {version!r}")
        self.parameters = self._parameters(self.document.get("Parameters") or [])
        steps_value = self.document.get("Steps")
        if not isinstance(steps_value, list | tuple):
            raise DefinitionError(f"Steps must be a list of step objects, got {steps_value!r}")
        self._collect(steps_value, None, "Steps")
        steps = {name: self._step(name) for name in self.raw_steps}
        experiment = self.document.get("PipelineExperimentConfig")
        if experiment is not None:
            self._check_gets(experiment, "PipelineExperimentConfig", steps)
        for step in steps.values():
            self._check_gets(self._scannable(step.raw), f"step {step.name!r}", steps)
        edges = self._edges(steps)
        order = self._order(steps)
        return PipelineDefinition(
            source=freeze(self.document),
            version=version,
            parameters=self.parameters,
            steps=MappingProxyType({name: steps[name] for name in order}),
            order=order,
            edges=edges,
            experiment_config=freeze(experiment),
        )

    # -- parameters --------------------------------------------------------------------------------

    def _parameters(self, value: Any) -> tuple[Parameter, ...]:
        if not isinstance(value, list | tuple):
            raise DefinitionError(f"Parameters must be a list of {{Name, Type, DefaultValue}}, got {value!r}")
        if len(value) > MAX_PARAMETERS:
            raise DefinitionError(f"{len(value)} Parameters declared, at most {MAX_PARAMETERS} are allowed")
        result: list[Parameter] = []
        seen: set[str] = set()
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise DefinitionError(f"Parameters[{index}] must be an object, got {item!r}")
            name = item.get("Name")
            if not isinstance(name, str) or not _PARAMETER_NAME.match(name):
                raise DefinitionError(
                    f"Parameters[{index}] Name {name!r} is invalid: names match ^[A-Za-z0-9\\-_]{{1,64}}$"
                )
            if name in seen:
                raise DefinitionError(f"parameter {name!r} is declared more than once")
            seen.add(name)
            type_name = item.get("Type")
            if type_name not in PARAMETER_TYPES:
                raise DefinitionError(
                    f"parameter {name!r} has Type {type_name!r}; valid types: {', '.join(PARAMETER_TYPES)}"
                )
            enum_values = item.get("EnumValues")
            if enum_values is not None:
                if not isinstance(enum_values, list | tuple) or not all(
                    isinstance(v, str) for v in enum_values
                ):
                    raise DefinitionError(f"parameter {name!r} EnumValues must be a list of strings")
                enum_values = tuple(enum_values)
            has_default = "DefaultValue" in item and item["DefaultValue"] is not None
            default = item.get("DefaultValue")
            if has_default:
                default = self._default(name, type_name, default)
                if enum_values and format_value(default) not in enum_values:
                    raise DefinitionError(
                        f"parameter {name!r} DefaultValue {default!r} is not one of its EnumValues "
                        f"{list(enum_values)}"
                    )
            result.append(Parameter(name, type_name, default, has_default, enum_values))
        return tuple(result)

    @staticmethod
    def _default(name: str, type_name: str, default: Any) -> Any:
        ok = {
            "String": isinstance(default, str),
            "Integer": isinstance(default, int) and not isinstance(default, bool),
            "Float": isinstance(default, int | float) and not isinstance(default, bool),
            "Boolean": isinstance(default, bool),
        }[type_name]
        if not ok:
            expected = {
                "String": "a JSON string",
                "Integer": "a JSON integer",
                "Float": "a JSON number",
                "Boolean": "true or false",
            }[type_name]
            raise DefinitionError(
                f"parameter {name!r} is {type_name} but its DefaultValue {default!r} is not {expected}"
            )
        return float(default) if type_name == "Float" else default

    # -- steps -------------------------------------------------------------------------------------

    def _collect(self, items: Sequence[Any], branch: Branch | None, where: str) -> None:
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise DefinitionError(f"{where}[{index}] must be a step object, got {item!r}")
            name = item.get("Name")
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"{where}[{index}] has no Name (a non-empty string is required)")
            if name in self.raw_steps:
                raise DefinitionError(
                    f"step name {name!r} is used more than once ({where}[{index}]); step names must be "
                    "unique across the definition, condition branches included"
                )
            type_name = item.get("Type")
            if type_name not in STEP_TYPES:
                raise DefinitionError(
                    f"step {name!r} has Type {type_name!r}; valid types: {', '.join(STEP_TYPES)}"
                )
            self.raw_steps[name] = item
            self.branches[name] = branch
            self.positions[name] = len(self.positions)
            if type_name == "Condition":
                arguments = item.get("Arguments") or {}
                if not isinstance(arguments, Mapping):
                    raise DefinitionError(f"Condition step {name!r} Arguments must be an object")
                for key, outcome in (("IfSteps", True), ("ElseSteps", False)):
                    nested = arguments.get(key) or []
                    if not isinstance(nested, list | tuple):
                        raise DefinitionError(
                            f"Condition step {name!r} {key} must be a list of step objects, got {nested!r}"
                        )
                    self._collect(nested, Branch(name, outcome), f"step {name!r} {key}")

    @staticmethod
    def _scannable(raw: Mapping[str, Any]) -> dict[str, Any]:
        """The parts of a step object whose ``Get`` references belong to that step (not to branch steps)."""
        scan = {k: v for k, v in raw.items() if k not in ("Name", "Type", "DependsOn", "PropertyFiles")}
        if raw.get("Type") == "Condition" and isinstance(raw.get("Arguments"), Mapping):
            scan["Arguments"] = {
                k: v for k, v in raw["Arguments"].items() if k not in ("IfSteps", "ElseSteps")
            }
        return scan

    def _step(self, name: str) -> Step:
        raw = self.raw_steps[name]
        type_name = raw["Type"]
        arguments = raw.get("Arguments")
        if arguments is None:
            arguments = {}
        depends_on = raw.get("DependsOn") or []
        if not isinstance(depends_on, list | tuple) or not all(isinstance(d, str) for d in depends_on):
            raise DefinitionError(f"step {name!r} DependsOn must be a list of step names, got {depends_on!r}")
        for upstream in depends_on:
            if upstream not in self.raw_steps:
                raise DefinitionError(
                    f"step {name!r} DependsOn unknown step {upstream!r}; steps: {', '.join(self.raw_steps)}"
                )
        references: list[str] = []
        for get in iter_gets(self._scannable(raw)):
            try:
                root, target, _ = split_reference(get)
            except ValueError as err:
                raise DefinitionError(f"step {name!r}: {err}") from None
            if root == "Steps" and target not in references:
                references.append(target)
        property_files = self._property_files(name, raw)
        output_parameters = self._output_parameters(name, raw)
        conditions: tuple[Any, ...] = ()
        if_steps: tuple[str, ...] = ()
        else_steps: tuple[str, ...] = ()
        if type_name == "Condition":
            conditions_value = arguments.get("Conditions") or []
            if not isinstance(conditions_value, list | tuple):
                raise DefinitionError(f"Condition step {name!r} Conditions must be a list")
            for condition in conditions_value:
                self._check_condition(name, condition)
            conditions = tuple(freeze(conditions_value))
            if_steps = tuple(s["Name"] for s in arguments.get("IfSteps") or [])
            else_steps = tuple(s["Name"] for s in arguments.get("ElseSteps") or [])
        sqs_queue_url = raw.get("SqsQueueUrl")
        if type_name == "Callback" and not isinstance(sqs_queue_url, str):
            raise DefinitionError(
                f"Callback step {name!r} needs an SqsQueueUrl string, got {sqs_queue_url!r}"
            )
        branch = self.branches[name]
        upstream = set(depends_on) | set(references)
        if branch is not None:
            upstream.add(branch.condition)
        display_name = raw.get("DisplayName")
        description = raw.get("Description")
        function_arn = raw.get("FunctionArn")
        return Step(
            name=name,
            type=type_name,
            position=self.positions[name],
            arguments=freeze(arguments),
            raw=freeze(raw),
            display_name=display_name if isinstance(display_name, str) else None,
            description=description if isinstance(description, str) else None,
            depends_on=tuple(depends_on),
            references=tuple(references),
            property_files=property_files,
            sqs_queue_url=sqs_queue_url if isinstance(sqs_queue_url, str) else None,
            output_parameters=output_parameters,
            function_arn=function_arn if isinstance(function_arn, str) else None,
            conditions=conditions,
            if_steps=if_steps,
            else_steps=else_steps,
            branch=branch,
            upstream=frozenset(upstream),
        )

    @staticmethod
    def _property_files(name: str, raw: Mapping[str, Any]) -> tuple[PropertyFile, ...]:
        value = raw.get("PropertyFiles") or []
        if not isinstance(value, list | tuple):
            raise DefinitionError(f"step {name!r} PropertyFiles must be a list, got {value!r}")
        result: list[PropertyFile] = []
        for item in value:
            keys = ("PropertyFileName", "OutputName", "FilePath")
            if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) for k in keys):
                raise DefinitionError(
                    f"step {name!r} PropertyFiles entry {item!r} needs string PropertyFileName, OutputName "
                    "and FilePath"
                )
            if any(p.name == item["PropertyFileName"] for p in result):
                raise DefinitionError(
                    f"step {name!r} declares property file {item['PropertyFileName']!r} twice"
                )
            result.append(PropertyFile(item["PropertyFileName"], item["OutputName"], item["FilePath"]))
        return tuple(result)

    @staticmethod
    def _output_parameters(name: str, raw: Mapping[str, Any]) -> tuple[OutputParameterSpec, ...]:
        value = raw.get("OutputParameters") or []
        if not isinstance(value, list | tuple):
            raise DefinitionError(f"step {name!r} OutputParameters must be a list, got {value!r}")
        result: list[OutputParameterSpec] = []
        for item in value:
            if not isinstance(item, Mapping) or not isinstance(item.get("OutputName"), str):
                raise DefinitionError(f"step {name!r} OutputParameters entry {item!r} needs an OutputName")
            output_type = item.get("OutputType", "String")
            if output_type not in PARAMETER_TYPES:
                raise DefinitionError(
                    f"step {name!r} output {item['OutputName']!r} has OutputType {output_type!r}; "
                    f"valid types: {', '.join(PARAMETER_TYPES)}"
                )
            result.append(OutputParameterSpec(item["OutputName"], output_type))
        return tuple(result)

    def _check_condition(self, step: str, condition: Any) -> None:
        if not isinstance(condition, Mapping):
            raise DefinitionError(
                f"Condition step {step!r} has a condition that is not an object: {condition!r}"
            )
        type_name = condition.get("Type")
        if type_name not in CONDITION_TYPES:
            raise DefinitionError(
                f"Condition step {step!r} has condition Type {type_name!r}; "
                f"valid types: {', '.join(CONDITION_TYPES)}"
            )
        if type_name == "Not":
            self._check_condition(step, condition.get("Expression"))
        elif type_name == "Or":
            nested = condition.get("Conditions")
            if not isinstance(nested, list | tuple) or not nested:
                raise DefinitionError(
                    f"Condition step {step!r}: an Or condition needs a non-empty Conditions list"
                )
            for item in nested:
                self._check_condition(step, item)
        elif type_name == "In":
            if "QueryValue" not in condition or not isinstance(condition.get("Values"), list | tuple):
                raise DefinitionError(f"Condition step {step!r}: an In condition needs QueryValue and Values")
        elif "LeftValue" not in condition or "RightValue" not in condition:
            raise DefinitionError(
                f"Condition step {step!r}: a {type_name} condition needs LeftValue and RightValue"
            )

    def _check_gets(self, value: Any, where: str, steps: Mapping[str, Step]) -> None:
        for get in iter_gets(value):
            try:
                root, name, rest = split_reference(get)
            except ValueError as err:
                raise DefinitionError(f"{where}: {err}") from None
            if root == "Parameters":
                if not any(p.name == name for p in self.parameters):
                    names = ", ".join(p.name for p in self.parameters) or "(none declared)"
                    raise DefinitionError(
                        f"{where} references unknown parameter {name!r}; parameters: {names}"
                    )
            elif root == "Execution":
                if name not in EXECUTION_VARIABLES:
                    raise DefinitionError(
                        f"{where} references unknown execution variable {name!r}; "
                        f"valid: {', '.join(EXECUTION_VARIABLES)}"
                    )
            else:
                target = steps.get(name)
                if target is None:
                    raise DefinitionError(
                        f"{where} references unknown step {name!r} in {get!r}; steps: {', '.join(steps)}"
                    )
                if rest.startswith(".PropertyFiles."):
                    file_name = rest[len(".PropertyFiles.") :]
                    if target.property_file(file_name) is None:
                        declared = ", ".join(p.name for p in target.property_files) or "(none)"
                        raise DefinitionError(
                            f"{where} references property file {file_name!r} of step {name!r}, which "
                            f"declares PropertyFiles: {declared}"
                        )

    # -- graph -------------------------------------------------------------------------------------

    @staticmethod
    def _edges(steps: Mapping[str, Step]) -> tuple[Edge, ...]:
        edges: list[Edge] = []
        for step in steps.values():
            if step.branch is not None:
                edges.append(Edge(step.branch.condition, step.name, "Branch"))
            edges.extend(Edge(u, step.name, "DependsOn") for u in step.depends_on)
            edges.extend(Edge(u, step.name, "Get") for u in step.references)
        return tuple(edges)

    def _order(self, steps: Mapping[str, Step]) -> tuple[str, ...]:
        waiting = {name: set(step.upstream) for name, step in steps.items()}
        for name, upstream in waiting.items():
            if name in upstream:
                raise DefinitionError(f"step {name!r} depends on itself")
        dependants: dict[str, list[str]] = {name: [] for name in steps}
        for name, upstream in waiting.items():
            for u in upstream:
                dependants[u].append(name)
        ready = [(self.positions[n], n) for n, up in waiting.items() if not up]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for d in dependants[name]:
                waiting[d].discard(name)
                if not waiting[d]:
                    heapq.heappush(ready, (self.positions[d], d))
        if len(order) != len(steps):
            cycle = _find_cycle({n: steps[n].upstream for n in steps if n not in order})
            raise DefinitionError(f"the steps form a dependency cycle: {' -> '.join(cycle)}")
        return tuple(order)


def _find_cycle(upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """One cycle among the given nodes (each node's upstream restricted to those nodes)."""
    start = next(iter(upstream))
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(u for u in sorted(upstream[node]) if u in upstream)
    cycle = [*path[seen[node] :], node]
    cycle.reverse()
    return cycle
