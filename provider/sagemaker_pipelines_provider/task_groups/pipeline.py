"""The mirror's former module path, kept importable: the mirror is :mod:`.mirror`, the definition's
sources and cache :mod:`sagemaker_pipelines_provider.definition_source`."""

from __future__ import annotations

from sagemaker_pipelines_provider.definition_source import (
    DEFAULT_CACHE_TTL,
    DefinitionSource,
    clear_definition_cache,
    fetch_definition_cached,
    resolve_definition,
)
from sagemaker_pipelines_provider.task_groups.mirror import (
    RESERVED_TASK_IDS,
    RESULT_TASK_ID,
    START_TASK_ID,
    MirrorPlan,
    SageMakerPipelineTaskGroup,
    plan_mirror,
    step_task_id,
)

__all__ = [
    "DEFAULT_CACHE_TTL",
    "RESERVED_TASK_IDS",
    "RESULT_TASK_ID",
    "START_TASK_ID",
    "DefinitionSource",
    "MirrorPlan",
    "SageMakerPipelineTaskGroup",
    "clear_definition_cache",
    "fetch_definition_cached",
    "plan_mirror",
    "resolve_definition",
    "step_task_id",
]
