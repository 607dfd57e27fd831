"""Where a pipeline definition comes from: a dict, a JSON string or file, or DescribePipeline (cached).

How a mirror reads its definition, and the cache's rules: ``docs/mirror.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sagemaker_pipelines_provider.definition import DefinitionError, PipelineDefinition, parse_definition

log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL = 300.0

DefinitionSource = PipelineDefinition | Mapping[str, Any] | str | os.PathLike[str]


_FETCHED: dict[str, tuple[float, str]] = {}


def _cache_key(pipeline_name: str, aws_conn_id: str | None, region_name: str | None) -> str:
    raw = json.dumps([aws_conn_id, region_name, pipeline_name])
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def fetch_definition_cached(
    pipeline_name: str,
    *,
    aws_conn_id: str | None = "aws_default",
    region_name: str | None = None,
    verify: bool | str | None = None,
    botocore_config: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_ttl: float = DEFAULT_CACHE_TTL,
) -> str:
    """The pipeline's definition JSON from DescribePipeline, cached in process and on disk for ``cache_ttl``.

    A failed call falls back to an expired cached copy (logged); with no copy at all it raises.
    """
    key = _cache_key(pipeline_name, aws_conn_id, region_name)
    now = time.time()
    cached = _FETCHED.get(key)
    folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "sagemaker-pipelines-definitions"
    path = folder / f"{key}.json"
    if cached is None and path.is_file():
        try:
            stored = json.loads(path.read_text())
            cached = (float(stored["fetched_at"]), str(stored["definition"]))
            _FETCHED[key] = cached
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("Ignoring unreadable definition cache %s: %s", path, err)
    if cached is not None and now - cached[0] < cache_ttl:
        return cached[1]
    from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook

    try:
        hook = SageMakerPipelineHook(
            aws_conn_id=aws_conn_id, region_name=region_name, verify=verify, config=botocore_config
        )
        text = str(hook.describe_pipeline(pipeline_name).describe["PipelineDefinition"])
    except Exception as err:
        if cached is None:
            raise
        log.warning(
            "DescribePipeline %s failed (%s); using the definition cached %.0fs ago",
            pipeline_name,
            err,
            now - cached[0],
        )
        return cached[1]
    _FETCHED[key] = (now, text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pipeline": pipeline_name, "fetched_at": now, "definition": text}))
        tmp.replace(path)
    except OSError as err:
        log.warning("Could not write the definition cache %s: %s", path, err)
    return text


def clear_definition_cache() -> None:
    """Forget the in-process copies of fetched definitions (the disk copies expire by TTL)."""
    _FETCHED.clear()


def resolve_definition(
    definition: DefinitionSource | None,
    *,
    pipeline_name: str,
    fetch_definition: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
    **fetch_kwargs: Any,
) -> PipelineDefinition:
    """Parse the definition given as a dict / JSON string / JSON file path, or fetch it when asked.

    :raises DefinitionError: the definition is missing, unreadable or invalid; the message says which
        and what to pass instead.
    """
    if isinstance(definition, PipelineDefinition):
        return definition
    where = f"pipeline {pipeline_name!r}"
    if definition is None:
        if not fetch_definition:
            raise DefinitionError(
                f"No definition for {where}: pass definition= (a dict, a JSON string or a path to a JSON "
                "file), or fetch_definition=True to read it with DescribePipeline at parse time (cached)."
            )
        return parse_definition(fetch_definition_cached(pipeline_name, **fetch_kwargs))
    if isinstance(definition, Mapping):
        return parse_definition(definition)
    if isinstance(definition, str) and definition.lstrip().startswith("{"):
        return parse_definition(definition)
    path = Path(definition)
    candidates = [path] if path.is_absolute() else [Path(base_dir) / path] if base_dir else []
    if not path.is_absolute():
        candidates.append(Path.cwd() / path)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return parse_definition(candidate.read_text())
            except DefinitionError as err:
                raise DefinitionError(f"{candidate} ({where}): {err}") from err
    tried = ", ".join(str(c) for c in candidates)
    raise DefinitionError(
        f"Definition of {where} not found: {str(definition)[:200]!r} is neither a JSON object nor an "
        f"existing file (tried {tried})."
    )


__all__ = [
    "DEFAULT_CACHE_TTL",
    "DefinitionSource",
    "clear_definition_cache",
    "fetch_definition_cached",
    "resolve_definition",
]
