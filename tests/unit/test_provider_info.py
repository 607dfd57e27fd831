"""The provider registers with Airflow and its metadata is valid and importable."""

from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import sagemaker_pipelines_provider
from sagemaker_pipelines_provider import get_provider_info


def _schema() -> dict:
    import airflow

    path = Path(airflow.__file__).parent / "provider_info.schema.json"
    return json.loads(path.read_text())


def test_provider_info_passes_airflow_schema() -> None:
    info = get_provider_info()
    jsonschema.validate(info, _schema())
    assert info["package-name"] == "airflow-provider-sagemaker-pipelines"
    assert info["versions"][0] == sagemaker_pipelines_provider.__version__


def test_every_listed_module_and_link_imports() -> None:
    info = get_provider_info()
    modules = [
        m
        for kind in ("hooks", "operators", "sensors", "triggers")
        for e in info[kind]
        for m in e["python-modules"]
    ]
    assert modules, "the provider lists no modules"
    for module in modules:
        importlib.import_module(module)
    for link in info["extra-links"]:
        module, _, name = link.rpartition(".")
        assert hasattr(importlib.import_module(module), name), link


def test_entry_point_is_declared() -> None:
    eps = entry_points(group="apache_airflow_provider")
    ours = [ep for ep in eps if ep.value == "sagemaker_pipelines_provider:get_provider_info"]
    assert len(ours) == 1
    assert ours[0].load()() == get_provider_info()


def test_providers_manager_discovers_the_provider() -> None:
    from airflow.providers_manager import ProvidersManager

    providers = ProvidersManager().providers
    assert "airflow-provider-sagemaker-pipelines" in providers
    assert (
        providers["airflow-provider-sagemaker-pipelines"].version == sagemaker_pipelines_provider.__version__
    )
