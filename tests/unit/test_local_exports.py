"""``sagemaker_pipelines_provider.local`` exports its public names, loaded on first use."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import sagemaker_pipelines_provider.local as local
heavy = [name for name in ("moto", "boto3", "airflow", "pytest") if name in sys.modules]
assert not heavy, f"importing the package loaded {heavy}"
from sagemaker_pipelines_provider.local import LocalControls, LocalEndpoint, endpoint_environ
from sagemaker_pipelines_provider.local.controls import LocalControls as controls_class
from sagemaker_pipelines_provider.local.server import LocalEndpoint as endpoint_class
assert LocalControls is controls_class and LocalEndpoint is endpoint_class
assert endpoint_environ("http://127.0.0.1:1")["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
for name in local.__all__:
    assert getattr(local, name) is not None, name
assert set(local.__all__) <= set(dir(local))
try:
    local.NotAName
except AttributeError:
    pass
else:
    raise AssertionError("unknown names must raise AttributeError")
"""


def test_public_names_are_exported_lazily() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
