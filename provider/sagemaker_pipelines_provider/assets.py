"""Assets for SageMaker models: a successful retraining emits an event other DAGs are scheduled on.

One asset per model package group (``sagemaker://model-package-group/<group>``); the event's extra is
:func:`model_event_extra`. How to publish and consume: ``docs/chaining.md``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, task

if TYPE_CHECKING:
    from airflow.sdk.definitions.xcom_arg import XComArg

#: URI scheme of the model package group assets.
ASSET_SCHEME = "sagemaker"


def model_package_group_asset(group_name: str, *, region: str | None = None) -> Asset:
    """The asset standing for the models registered in model package group ``group_name``.

    URI ``sagemaker://model-package-group/<region>/<group>`` (region part omitted when ``None``); name
    ``sagemaker-model-package-group-<group>``.
    """
    path = f"{region}/{group_name}" if region else group_name
    return Asset(
        name=f"sagemaker-model-package-group-{group_name}",
        uri=f"{ASSET_SCHEME}://model-package-group/{path}",
        group="model",
    )


def model_package_arn(result: Mapping[str, Any], step: str | None = None) -> str | None:
    """The model package registered by ``step`` (default: the only/first RegisterModel step) of a result."""
    outputs = result.get("outputs") or {}
    if step is not None:
        value = (outputs.get(step) or {}).get("ModelPackageArn")
        return str(value) if value else None
    for step_outputs in outputs.values():
        if isinstance(step_outputs, Mapping) and step_outputs.get("ModelPackageArn"):
            return str(step_outputs["ModelPackageArn"])
    return None


def model_event_extra(result: Mapping[str, Any], *, step: str | None = None) -> dict[str, Any]:
    """The asset event ``extra`` for a pipeline result; raises ``ValueError`` when it is not publishable."""
    arn = result.get("pipeline_execution_arn")
    status = result.get("status")
    if status != "Succeeded":
        raise ValueError(f"Pipeline execution {arn} is {status}, not Succeeded: no model to publish")
    package = model_package_arn(result, step)
    if not package:
        raise ValueError(
            f"Pipeline execution {arn} registered no model package"
            f"{f' in step {step!r}' if step else ''}; its step outputs: {sorted(result.get('outputs') or {})}"
        )
    group = package.rsplit(":", 1)[-1].split("/")[1] if "/" in package else None
    return {
        "pipeline_execution_arn": arn,
        "model_package_arn": package,
        "model_package_group": group,
        "pipeline_name": result.get("pipeline_name"),
        "display_name": result.get("display_name"),
        "status": status,
    }


def emit_model_event(asset: Asset, *, step: str | None = None) -> Callable[[Any, Any], None]:
    """A ``post_execute`` hook for a pipeline task with ``outlets=[asset]``: sets the event's extra from
    the task's result (no extra task)::

        SageMakerPipelineOperator(..., outlets=[MODELS], post_execute=emit_model_event(MODELS))

    A result that is not publishable (not Succeeded, no model package) fails the task, so no event is
    emitted for it.
    """

    def post_execute(context: Any, result: Any) -> None:
        context["outlet_events"][asset].extra = model_event_extra(result or {}, step=step)

    return post_execute


def publish_model(
    asset: Asset,
    result: XComArg | Any,
    *,
    step: str | None = None,
    task_id: str = "publish_model",
    **task_kwargs: Any,
) -> XComArg:
    """A task that emits an event on ``asset`` for the execution in ``result`` (an XComArg of a pipeline
    task's result, or a chain member's ``.result``:
    :class:`~sagemaker_pipelines_provider.task_groups.chain.SageMakerPipelineChainMember`).

    Returns the task's XComArg (its value: the event's extra).
    """

    @task(task_id=task_id, outlets=[asset], **task_kwargs)
    def _publish(pipeline_result: dict[str, Any], **context: Any) -> dict[str, Any]:
        extra = model_event_extra(pipeline_result, step=step)
        context["outlet_events"][asset].extra = extra
        return extra

    return _publish(result)  # type: ignore[no-any-return,arg-type]


__all__ = [
    "ASSET_SCHEME",
    "emit_model_event",
    "model_event_extra",
    "model_package_arn",
    "model_package_group_asset",
    "publish_model",
]
