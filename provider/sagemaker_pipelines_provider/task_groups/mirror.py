"""SageMakerPipelineTaskGroup: mirror a SageMaker pipeline in Airflow, one task per step.

:func:`plan_mirror` turns a parsed definition into task ids and edges (pure: no Airflow object, no AWS
call); the group instantiates that plan between a ``start`` and a ``result`` task. The group's shape,
trigger rules and where its definition comes from: ``docs/mirror.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import TaskGroup, TriggerRule

from sagemaker_pipelines_provider.definition import PipelineDefinition
from sagemaker_pipelines_provider.definition_source import (
    DEFAULT_CACHE_TTL,
    DefinitionSource,
    resolve_definition,
)
from sagemaker_pipelines_provider.links.pipeline import EXECUTION_ARN_XCOM_KEY
from sagemaker_pipelines_provider.utils.arn import as_pipeline_name
from sagemaker_pipelines_provider.utils.step_status import BranchRef

START_TASK_ID = "start"
RESULT_TASK_ID = "result"
RESERVED_TASK_IDS = frozenset({START_TASK_ID, RESULT_TASK_ID})
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


# --------------------------------------------------------------------------------------------------------
# rendering: graph -> plan (pure)


@dataclass(frozen=True)
class MirrorPlan:
    """The tasks a mirror renders: one per step, in topological order, and the edges between them.

    ``task_ids`` maps step name -> task id (inside the group); ``edges`` are (upstream step, downstream
    step) pairs, deduplicated; ``roots`` follow the start task; ``leaves`` precede the result task;
    ``branch_chains`` give each step's enclosing Condition branches, innermost first.
    """

    task_ids: Mapping[str, str]
    order: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    roots: tuple[str, ...]
    leaves: tuple[str, ...]
    branch_chains: Mapping[str, tuple[BranchRef, ...]]
    step_types: Mapping[str, str]


def step_task_id(step_name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A task id for ``step_name``: unsafe characters become ``_``, and it avoids ``start``/``result``
    and the ids in ``taken`` (suffix ``_step``, then ``_2``, ``_3``...)."""
    base = _UNSAFE.sub("_", step_name) or "step"
    candidate = f"{base}_step" if base in RESERVED_TASK_IDS else base
    n = 1
    unique = candidate
    while unique in taken or unique in RESERVED_TASK_IDS:
        n += 1
        unique = f"{candidate}_{n}"
    return unique


def plan_mirror(definition: PipelineDefinition) -> MirrorPlan:
    """Turn a parsed definition into the mirror's tasks and edges (no Airflow objects, no AWS call)."""
    task_ids: dict[str, str] = {}
    for name in definition.order:
        task_ids[name] = step_task_id(name, set(task_ids.values()))
    seen: set[tuple[str, str]] = set()
    edges: list[tuple[str, str]] = []
    for edge in definition.edges:
        pair = (edge.upstream, edge.downstream)
        if pair not in seen:
            seen.add(pair)
            edges.append(pair)
    position = {name: i for i, name in enumerate(definition.order)}
    edges.sort(key=lambda e: (position[e[0]], position[e[1]]))
    has_upstream = {d for _, d in edges}
    has_downstream = {u for u, _ in edges}
    return MirrorPlan(
        task_ids=task_ids,
        order=definition.order,
        edges=tuple(edges),
        roots=tuple(n for n in definition.order if n not in has_upstream),
        leaves=tuple(n for n in definition.order if n not in has_downstream),
        branch_chains={
            n: tuple(BranchRef(b.condition, b.outcome) for b in definition.branch_chain(n))
            for n in definition.order
        },
        step_types={n: definition.steps[n].type for n in definition.order},
    )


# --------------------------------------------------------------------------------------------------------
# the task group


class SageMakerPipelineTaskGroup(TaskGroup):
    """A TaskGroup mirroring one execution of a SageMaker pipeline (``docs/mirror.md``).

    :param pipeline_name: the pipeline (name or ARN). Templated in the start task.
    :param definition: a dict, a JSON string, a path to a JSON file, or a parsed ``PipelineDefinition``.
    :param fetch_definition: with ``definition=None``, read it with DescribePipeline at parse time
        (cached: ``definition_cache_dir``, ``definition_cache_ttl`` seconds).
    :param group_id: the group's id (default: the pipeline name, made safe for Airflow).
    :param parameters: execution parameters, templated (as on ``SageMakerPipelineOperator``);
        ``display_name``, ``description``, ``parallelism`` likewise.
    :param deferrable: step and result tasks (and the start task's capacity waits) defer (default True).
    :param poll_interval: seconds between polls of every task of the group (default
        ``[sagemaker_pipelines] default_poll_interval``, 30).
    :param event_queue_url: the SQS queue of SageMaker's status events (``docs/events.md``), templated:
        the deferred step and result tasks wake on its events and poll every ``safety_poll_interval``;
        the start task checks it before starting the execution.
    :param safety_poll_interval: seconds between the safety polls of those waits (default
        ``[sagemaker_pipelines] event_safety_poll_interval``, 600).
    :param allow_stopped: the result task accepts a Stopped execution.
    :param resume_failed: a new try (clear/retry) of a failed step task resumes the execution.
    :param start_kwargs: / :param step_kwargs: / :param result_kwargs: extra operator arguments for the
        start task, for every step task (``retries``, ``timeout``, ``pool``...) and for the result task.
    :param aws_conn_id: Airflow AWS connection; ``region_name``, ``verify``, ``botocore_config`` as usual.

    Other keyword arguments go to ``TaskGroup`` (``tooltip``, ``default_args``, ``prefix_group_id``...).
    Attributes after construction: ``definition`` (parsed), ``plan`` (:class:`MirrorPlan`),
    ``start_task``, ``step_tasks`` (step name -> task), ``result_task``.
    """

    def __init__(
        self,
        pipeline_name: str,
        *,
        definition: DefinitionSource | None = None,
        fetch_definition: bool = False,
        group_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        display_name: str | None = None,
        description: str | None = None,
        parallelism: int | None = None,
        deferrable: bool = True,
        poll_interval: float | None = None,
        event_queue_url: str | None = None,
        safety_poll_interval: float | None = None,
        allow_stopped: bool = False,
        resume_failed: bool = True,
        start_kwargs: Mapping[str, Any] | None = None,
        step_kwargs: Mapping[str, Any] | None = None,
        result_kwargs: Mapping[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        definition_cache_dir: str | os.PathLike[str] | None = None,
        definition_cache_ttl: float = DEFAULT_CACHE_TTL,
        **task_group_kwargs: Any,
    ) -> None:
        group = group_id or _UNSAFE.sub("_", as_pipeline_name(pipeline_name)) or "pipeline"
        task_group_kwargs.setdefault("tooltip", f"SageMaker pipeline {pipeline_name}: one task per step")
        super().__init__(group_id=group, **task_group_kwargs)
        base_dir = Path(self.dag.fileloc).parent if getattr(self.dag, "fileloc", None) else None
        parsed = resolve_definition(
            definition,
            pipeline_name=pipeline_name,
            fetch_definition=fetch_definition,
            base_dir=base_dir,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
            cache_dir=definition_cache_dir,
            cache_ttl=definition_cache_ttl,
        )
        self.pipeline_name = pipeline_name
        self.definition = parsed
        self.plan = plan_mirror(parsed)
        aws = {
            "aws_conn_id": aws_conn_id,
            "region_name": region_name,
            "verify": verify,
            "botocore_config": botocore_config,
            # every task of the group checks the queue; the step and result waits read its events
            "event_queue_url": event_queue_url,
            "safety_poll_interval": safety_poll_interval,
        }
        self._build(
            aws=aws,
            parameters=parameters,
            display_name=display_name,
            description=description,
            parallelism=parallelism,
            deferrable=deferrable,
            poll_interval=poll_interval,
            allow_stopped=allow_stopped,
            resume_failed=resume_failed,
            start_kwargs=dict(start_kwargs or {}),
            step_kwargs=dict(step_kwargs or {}),
            result_kwargs=dict(result_kwargs or {}),
        )

    def _build(
        self,
        *,
        aws: dict[str, Any],
        parameters: Mapping[str, Any] | None,
        display_name: str | None,
        description: str | None,
        parallelism: int | None,
        deferrable: bool,
        poll_interval: float | None,
        allow_stopped: bool,
        resume_failed: bool,
        start_kwargs: dict[str, Any],
        step_kwargs: dict[str, Any],
        result_kwargs: dict[str, Any],
    ) -> None:
        from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
        from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor
        from sagemaker_pipelines_provider.sensors.pipeline_step import SageMakerPipelineStepSensor
        from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval

        if poll_interval is None:
            poll_interval = default_poll_interval()
        plan, definition = self.plan, self.definition
        with self:
            start = SageMakerPipelineOperator(
                **{
                    "task_id": START_TASK_ID,
                    "pipeline_name": self.pipeline_name,
                    "parameters": parameters,
                    "display_name": display_name,
                    "description": description,
                    "parallelism": parallelism,
                    "wait_for_completion": False,
                    "deferrable": deferrable,
                    "poll_interval": poll_interval,
                    "doc_md": f"Starts an execution of SageMaker pipeline `{self.pipeline_name}`.",
                    **aws,
                    **start_kwargs,
                }
            )
            # A Jinja string, not ``start.execution_arn``: a reference would add an edge start -> every step
            # and hide the pipeline's own edges in the Graph view.
            arn = f"{{{{ ti.xcom_pull(task_ids='{start.task_id}', key='{EXECUTION_ARN_XCOM_KEY}') }}}}"
            tasks: dict[str, Any] = {}
            for name in plan.order:
                step = definition.steps[name]
                kwargs: dict[str, Any] = {
                    "task_id": plan.task_ids[name],
                    "pipeline_execution_arn": arn,
                    "step_name": name,
                    "step_type": step.type,
                    "branch_chain": plan.branch_chains[name],
                    "resume_failed": resume_failed,
                    "deferrable": deferrable,
                    "poke_interval": poll_interval,
                    "trigger_rule": TriggerRule.NONE_FAILED,
                    **aws,
                    **step_kwargs,
                }
                if step.display_name or plan.task_ids[name] != name:
                    kwargs.setdefault("task_display_name", step.display_name or name)
                if step.description:
                    kwargs.setdefault("doc_md", step.description)
                tasks[name] = SageMakerPipelineStepSensor(**kwargs)
            result = SageMakerPipelineExecutionSensor(
                **{
                    "task_id": RESULT_TASK_ID,
                    "pipeline_execution_arn": arn,
                    "allow_stopped": allow_stopped,
                    "deferrable": deferrable,
                    "poke_interval": poll_interval,
                    "trigger_rule": TriggerRule.NONE_FAILED,
                    **aws,
                    **result_kwargs,
                }
            )
            for upstream, downstream in plan.edges:
                tasks[upstream] >> tasks[downstream]
            for name in plan.roots:
                start >> tasks[name]
            for name in plan.leaves:
                tasks[name] >> result
            if not plan.order:
                start >> result
        self.start_task = start
        self.step_tasks = tasks
        self.result_task = result


__all__ = [
    "RESERVED_TASK_IDS",
    "RESULT_TASK_ID",
    "START_TASK_ID",
    "MirrorPlan",
    "SageMakerPipelineTaskGroup",
    "plan_mirror",
    "step_task_id",
]
