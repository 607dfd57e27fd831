"""The engine's in-memory records: pipelines, executions, step runs, behaviours. Plain data; every
mutation happens in :mod:`.actions` or :mod:`.machine` with the engine lock held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sagemaker_pipelines_provider.definition import PipelineDefinition, Step

__all__ = [
    "ACTIVE_EXECUTION",
    "Behaviour",
    "Execution",
    "Pipeline",
    "StepRun",
    "iso",
    "reference_run",
    "utcnow",
]

ACTIVE_EXECUTION = frozenset({"Executing", "Stopping"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """EventBridge-style timestamp: ``2024-01-02T03:04:05Z``."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Behaviour:
    """How a simulated step behaves (see ``PipelineEngine.set_step_behaviour``)."""

    duration: float | None = None
    fail: str | None = None
    fail_attempts: int | None = None
    property_files: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    def fails(self, attempt: int) -> bool:
        return self.fail is not None and (self.fail_attempts is None or attempt <= self.fail_attempts)


@dataclass(eq=False)
class Pipeline:
    name: str
    arn: str
    region: str
    role_arn: str | None
    display_name: str
    description: str | None
    parallelism: int | None
    creation_time: datetime
    client_token: str | None
    versions: list[tuple[str, PipelineDefinition]] = field(default_factory=list)
    last_modified_time: datetime | None = None
    last_run_time: datetime | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)  # creation order
    start_tokens: dict[str, Execution] = field(default_factory=dict)
    active: int = 0

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def version_id(self) -> int:
        return len(self.versions)

    @property
    def definition_json(self) -> str:
        return self.versions[-1][0]

    @property
    def definition(self) -> PipelineDefinition:
        return self.versions[-1][1]


@dataclass(eq=False)
class StepRun:
    """One step of one execution. ``phase``: waiting (not started, may start), skipped (will not run:
    branch not taken, not selected, or downstream of such a step), active (Starting/Executing/Stopping),
    done (Succeeded/Failed/Stopped). ``status`` is what ListPipelineExecutionSteps shows (None = never
    started, so not listed); after a retry it keeps the previous attempt's status until the re-run starts."""

    spec: Step
    phase: str = "waiting"
    status: str | None = None
    start_seq: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    attempt_count: int = 0
    failure_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] | None = None
    arguments: dict[str, Any] | None = None
    outcome: bool | None = None
    error: str | None = None  # a failure decided at start, reported when the step ends
    fail_message: str | None = None
    callback_token: str | None = None
    answer: tuple[str, str | None] | None = None  # (kind, ClientRequestToken) of the accepted answer
    run_id: int = 0
    property_file_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(eq=False)
class Execution:
    arn: str
    id: str
    seq: int
    pipeline: Pipeline
    definition: PipelineDefinition
    definition_json: str
    version_id: int
    display_name: str
    description: str | None
    parameters: list[dict[str, str]]
    values: dict[str, Any]
    creation_time: datetime
    client_token: str | None
    fingerprint: Any
    parallelism: int | None
    parallelism_given: bool
    steps: dict[str, StepRun]
    status: str = "Executing"
    failure_reason: str | None = None
    last_modified_time: datetime | None = None
    end_time: datetime | None = None
    selective: dict[str, Any] | None = None
    selected: frozenset[str] | None = None
    source: Execution | None = None
    running: int = 0
    stop_requested: bool = False
    first_failure: StepRun | None = None
    stop_tokens: set[str] = field(default_factory=set)
    retry_tokens: set[str] = field(default_factory=set)
    alive: bool = True

    @property
    def region(self) -> str:
        return self.pipeline.region


def reference_run(execution: Execution, name: str) -> tuple[Execution, StepRun] | None:
    """The run whose results ``name`` means in ``execution`` (the source's for unselected steps)."""
    while execution.selected is not None and name not in execution.selected:
        if execution.source is None:
            return None
        execution = execution.source
    run = execution.steps.get(name)
    return None if run is None else (execution, run)
