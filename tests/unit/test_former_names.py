"""Renamed public classes stay importable under their former names, from the same modules, with a warning;
the mirror's former module path gives the same objects without one."""

from __future__ import annotations

import importlib
import warnings

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

PKG = "sagemaker_pipelines_provider"

#: (module, former name, current name)
RENAMED = [
    ("operators.callback", "SendCallbackSuccessOperator", "SageMakerCallbackSuccessOperator"),
    ("operators.callback", "SendCallbackFailureOperator", "SageMakerCallbackFailureOperator"),
    ("operators.callback", "AnswerOverdueCallbacksOperator", "SageMakerCallbackReconcileOperator"),
    ("hooks.callback_queue", "CallbackQueueHook", "SageMakerCallbackQueueHook"),
    ("task_groups.callback", "CallbackArguments", "SageMakerCallbackArguments"),
    ("task_groups.callback", "CallbackFromAssetEventOperator", "SageMakerCallbackFromAssetEventOperator"),
    ("task_groups.chain", "CallbackWork", "SageMakerCallbackWork"),
    ("task_groups.chain", "PipelineChain", "SageMakerPipelineChain"),
    ("task_groups.chain", "PipelineLink", "SageMakerPipelineChainMember"),
    ("task_groups.chain", "MappedPipelineLink", "SageMakerPipelineChainMappedMember"),
]


@pytest.mark.parametrize(("module", "former", "current"), RENAMED)
def test_a_former_name_warns_and_is_the_current_class(module: str, former: str, current: str) -> None:
    mod = importlib.import_module(f"{PKG}.{module}")
    with pytest.warns(AirflowProviderDeprecationWarning, match=rf"{former} is deprecated: use .*\.{current}"):
        old = getattr(mod, former)
    assert old is getattr(mod, current)
    assert issubclass(AirflowProviderDeprecationWarning, DeprecationWarning)


@pytest.mark.parametrize(("module", "former", "current"), RENAMED)
def test_from_import_of_a_former_name_warns(module: str, former: str, current: str) -> None:
    namespace: dict[str, object] = {}
    with pytest.warns(AirflowProviderDeprecationWarning):
        exec(f"from {PKG}.{module} import {former}", namespace)
    assert namespace[former] is getattr(importlib.import_module(f"{PKG}.{module}"), current)


@pytest.mark.parametrize("module", sorted({m for m, _, _ in RENAMED}))
def test_current_names_do_not_warn_and_unknown_names_still_fail(module: str) -> None:
    mod = importlib.import_module(f"{PKG}.{module}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in mod.__all__:
            getattr(mod, name)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        mod.NoSuchName  # noqa: B018


def test_a_subclass_of_a_former_name_is_a_subclass_of_the_current_one() -> None:
    from sagemaker_pipelines_provider.operators import callback

    with pytest.warns(AirflowProviderDeprecationWarning):
        former = callback.SendCallbackSuccessOperator

    class Mine(former):  # type: ignore[valid-type,misc]
        pass

    assert issubclass(Mine, callback.SageMakerCallbackSuccessOperator)


def test_the_mirror_former_module_path_gives_the_same_objects() -> None:
    from sagemaker_pipelines_provider import definition_source
    from sagemaker_pipelines_provider.task_groups import mirror, pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in pipeline.__all__:
            home = mirror if hasattr(mirror, name) else definition_source
            assert getattr(pipeline, name) is getattr(home, name), name
    assert pipeline.SageMakerPipelineTaskGroup.__module__ == f"{PKG}.task_groups.mirror"
    assert definition_source.fetch_definition_cached.__module__ == f"{PKG}.definition_source"
