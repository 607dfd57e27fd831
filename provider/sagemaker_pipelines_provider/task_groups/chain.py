"""pipeline_chain(): SageMaker pipelines, Glue jobs and ECS tasks in one TaskGroup, wired by typed references.

:class:`SageMakerPipelineChain` adds members one after the other; a :class:`SageMakerPipelineChainMember`
exposes its execution's result as :class:`~sagemaker_pipelines_provider.references.PipelineValue`
references. How to use it: ``docs/chaining.md``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup
from airflow.sdk.definitions.xcom_arg import XComArg

from sagemaker_pipelines_provider.operators.pipeline import SageMakerPipelineOperator
from sagemaker_pipelines_provider.references import (
    MISSING,
    PipelineValue,
    PipelineValueMissing,
    execution_id_from_arn,
)
from sagemaker_pipelines_provider.sensors.pipeline import SageMakerPipelineExecutionSensor
from sagemaker_pipelines_provider.utils.deprecation import renamed
from sagemaker_pipelines_provider.utils.poll_interval import default_poll_interval

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator


class _ResultRefs:
    """References into a result dict of :func:`~sagemaker_pipelines_provider.hooks.pipeline.
    build_execution_result` pushed by ``source``'s task."""

    def __init__(self, source: XComArg) -> None:
        self._source = source

    def value(self, *path: str, default: Any = MISSING) -> PipelineValue:
        """Any value of the result by its keys, e.g. ``value("steps", "Train", "status")``."""
        return PipelineValue(self._source, path, default=default)

    @property
    def execution_arn(self) -> PipelineValue:
        return self.value("pipeline_execution_arn")

    @property
    def execution_id(self) -> PipelineValue:
        """The last part of the execution ARN (what ``Execution.PipelineExecutionId`` is in a definition)."""
        return self.execution_arn.map(execution_id_from_arn, description="execution_id")

    @property
    def status(self) -> PipelineValue:
        return self.value("status")

    @property
    def display_name(self) -> PipelineValue:
        return self.value("display_name")

    def parameter(self, name: str) -> PipelineValue:
        """A parameter value the execution ran with (a string, as SageMaker reports it)."""
        return self.value("parameters", name)

    def output(self, step: str, name: str, default: Any = MISSING) -> PipelineValue:
        """Output ``name`` of ``step``: a Callback/Lambda output parameter, ``ModelPackageArn`` of a
        RegisterModel step, ``TrainingJobArn``/``ProcessingJobArn`` of job steps, ``Outcome`` of a
        Condition step (see :func:`~sagemaker_pipelines_provider.hooks.pipeline.step_outputs`)."""
        return self.value("outputs", step, name, default=default)

    def model_package_arn(self, step: str = "RegisterModel") -> PipelineValue:
        """The model package a RegisterModel step created."""
        return self.output(step, "ModelPackageArn")


@dataclass
class SageMakerCallbackWork:
    """How a chained pipeline's Callback step is answered: the arguments of
    :func:`~sagemaker_pipelines_provider.task_groups.callback.callback_handler` (minus the routing, which
    the chain sets to the execution's ARN)."""

    queue_url: str
    work: Callable[..., Any] | None = None
    outputs: Any = None
    visibility_timeout: int | None = None
    sensor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    match_arguments: dict[str, Any] | None = None


class SageMakerPipelineChainMember(_ResultRefs):
    """One chained pipeline: its tasks and typed references into its result."""

    def __init__(
        self,
        start: BaseOperator,
        result_task: BaseOperator,
        callback_group: TaskGroup | None = None,
    ) -> None:
        super().__init__(XComArg(result_task))
        self.start = start
        self.result_task = result_task
        self.callback_group = callback_group

    @property
    def result(self) -> XComArg:
        """The whole result dict (an XComArg: pass it to a TaskFlow function)."""
        return XComArg(self.result_task)

    @property
    def first(self) -> BaseOperator:
        return self.start

    @property
    def last(self) -> BaseOperator:
        return self.result_task


class SageMakerPipelineChainMappedMember:
    """A fan-out of one pipeline: one execution per element of ``parameters``."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.first = task
        self.last = task

    @property
    def results(self) -> XComArg:
        """The result dicts of every mapped execution (a lazy list, in map-index order)."""
        return XComArg(self.task)

    @property
    def execution_arns(self) -> XComArg:
        return self.results.map(_execution_arn_of)


def _execution_arn_of(result: Any) -> Any:
    return result["pipeline_execution_arn"]


class SageMakerPipelineChain:
    """The builder :func:`pipeline_chain` yields; each method adds one member after the previous one."""

    def __init__(self, group: TaskGroup, defaults: Mapping[str, Any]) -> None:
        self.group = group
        self.defaults = dict(defaults)
        self.links: list[Any] = []
        self._last: Any = None

    # -- plumbing ---------------------------------------------------------------------------------------

    def _append(self, first: Any, last: Any) -> None:
        if self._last is not None:
            self._last >> first
        self._last = last

    def _pipeline_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**self.defaults, **kwargs}
        if merged.get("poll_interval") is None:
            merged["poll_interval"] = default_poll_interval()
        return merged

    # -- links --------------------------------------------------------------------------------------------

    def add(self, task: Any) -> Any:
        """Append any operator, TaskFlow call (XComArg) or TaskGroup as the next member; return it."""
        first = task
        last = task
        if isinstance(task, XComArg):
            ops = [op for op, _ in task.iter_references()]
            first = last = ops[0] if len(ops) == 1 else ops
        self._append(first, last)
        self.links.append(task)
        return task

    def pipeline(
        self,
        pipeline_name: str,
        *,
        task_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        display_name: str | None = None,
        callback: SageMakerCallbackWork | None = None,
        **operator_kwargs: Any,
    ) -> SageMakerPipelineChainMember:
        """Run one execution of ``pipeline_name`` as the next member (``docs/chaining.md``).

        :param task_id: default: the pipeline name with ``-`` replaced by ``_``.
        :param parameters: templated; values may be :class:`PipelineValue` references of earlier links.
        :param display_name: templated; default ``<pipeline>-{{ ds_nodash }}-<run hash>`` style names are
            left to the caller (SageMaker display names are optional).
        :param callback: the pipeline has a Callback step answered in this DAG.
        :param operator_kwargs: more :class:`SageMakerPipelineOperator` arguments (they override the
            chain's defaults).
        """
        tid = task_id or pipeline_name.replace("-", "_")
        kwargs = self._pipeline_kwargs(operator_kwargs)
        if callback is None:
            op = SageMakerPipelineOperator(
                task_id=tid,
                pipeline_name=pipeline_name,
                parameters=parameters,
                display_name=display_name,
                **kwargs,
            )
            link = SageMakerPipelineChainMember(op, op)
            self._append(op, op)
            self.links.append(link)
            return link
        return self._pipeline_with_callback(tid, pipeline_name, parameters, display_name, callback, kwargs)

    def _pipeline_with_callback(
        self,
        tid: str,
        pipeline_name: str,
        parameters: Mapping[str, Any] | None,
        display_name: str | None,
        callback: SageMakerCallbackWork,
        kwargs: dict[str, Any],
    ) -> SageMakerPipelineChainMember:
        from sagemaker_pipelines_provider.task_groups.callback import callback_handler

        poll_interval = float(kwargs["poll_interval"])
        start_kwargs = {k: v for k, v in kwargs.items() if k not in ("wait_for_completion",)}
        start = SageMakerPipelineOperator(
            task_id=tid,
            pipeline_name=pipeline_name,
            parameters=parameters,
            display_name=display_name,
            wait_for_completion=False,
            **start_kwargs,
        )
        handler_kwargs: dict[str, Any] = {
            "pipeline_execution_arn": start.execution_arn,
            "work": callback.work,
            "outputs": callback.outputs,
            "match_arguments": callback.match_arguments,
            "sensor_kwargs": {"deferrable": bool(kwargs.get("deferrable", False)), **callback.sensor_kwargs},
        }
        if callback.visibility_timeout is not None:
            handler_kwargs["visibility_timeout"] = callback.visibility_timeout
        for name in ("aws_conn_id", "region_name"):
            if name in kwargs:
                handler_kwargs[name] = kwargs[name]
        group = callback_handler(f"{tid}_callback", callback.queue_url, **handler_kwargs)
        sensor_kwargs = {
            k: kwargs[k]
            for k in (
                "aws_conn_id",
                "region_name",
                "deferrable",
                "allow_stopped",
                "pool",
                "timeout",
                "event_queue_url",
                "safety_poll_interval",
            )
            if k in kwargs
        }
        wait = SageMakerPipelineExecutionSensor(
            task_id=f"{tid}_wait",
            pipeline_execution_arn=start.execution_arn,
            poke_interval=poll_interval,
            **sensor_kwargs,
        )
        start >> group
        # Only the success answer leads on: answer_failure (skipped when all went well) must not skip the
        # wait; when the work failed, answer_failure fails the execution and the wait is upstream_failed.
        group["answer"] >> wait
        link = SageMakerPipelineChainMember(start, wait, group)
        self._append(start, wait)
        self.links.append(link)
        return link

    def pipeline_map(
        self,
        pipeline_name: str,
        *,
        parameters: Sequence[Mapping[str, Any]] | XComArg,
        task_id: str | None = None,
        display_name: str | None = None,
        max_active_tis_per_dag: int | None = None,
        **operator_kwargs: Any,
    ) -> SageMakerPipelineChainMappedMember:
        """Fan out: one execution of ``pipeline_name`` per element of ``parameters`` (dynamic task mapping).

        :param parameters: a list of parameter dicts, or an XComArg resolving to one (e.g.
            ``markets.map(to_parameters)``); literal dicts may hold Jinja templates, values coming from
            XCom are never rendered.
        :param display_name: templated, shared by every mapped task; ``{{ ti.map_index }}`` tells them
            apart.
        :param max_active_tis_per_dag: at most this many of the mapped executions run at once (per DAG,
            across runs).
        """
        tid = task_id or f"{pipeline_name.replace('-', '_')}_each"
        kwargs = self._pipeline_kwargs(operator_kwargs)
        if max_active_tis_per_dag is not None:
            kwargs["max_active_tis_per_dag"] = max_active_tis_per_dag
        mapped = SageMakerPipelineOperator.partial(
            task_id=tid, pipeline_name=pipeline_name, display_name=display_name, **kwargs
        ).expand(parameters=parameters)
        link = SageMakerPipelineChainMappedMember(mapped)
        self._append(mapped, mapped)
        self.links.append(link)
        return link


@contextmanager
def pipeline_chain(group_id: str, **defaults: Any) -> Iterator[SageMakerPipelineChain]:
    """A TaskGroup whose members run one after the other; ``defaults`` go to every pipeline task.

    ``defaults`` are :class:`~sagemaker_pipelines_provider.operators.pipeline.SageMakerPipelineOperator`
    arguments (``deferrable``, ``poll_interval``, ``event_queue_url``, ``safety_poll_interval``,
    ``pool``, ``aws_conn_id``, ``retries``...). Without ``poll_interval``, ``[sagemaker_pipelines]
    default_poll_interval`` applies. ``event_queue_url`` also reaches the wait of a pipeline with a
    ``callback`` (its execution sensor), so every wait of the chain wakes on events (``docs/events.md``).

    Use it as a context manager inside a DAG; set dependencies on the group (``chain.group``) or on the
    first/last links.
    """
    with TaskGroup(group_id) as group:
        yield SageMakerPipelineChain(group, defaults)


__all__ = [
    "PipelineValue",
    "PipelineValueMissing",
    "SageMakerCallbackWork",
    "SageMakerPipelineChain",
    "SageMakerPipelineChainMappedMember",
    "SageMakerPipelineChainMember",
    "execution_id_from_arn",
    "pipeline_chain",
]

# Former names (deprecated): importable from here, with a warning.
__getattr__ = renamed(
    __name__,
    globals(),
    {
        "CallbackWork": "SageMakerCallbackWork",
        "PipelineChain": "SageMakerPipelineChain",
        "PipelineLink": "SageMakerPipelineChainMember",
        "MappedPipelineLink": "SageMakerPipelineChainMappedMember",
    },
)
