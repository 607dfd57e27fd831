"""The environment that points boto3, aiobotocore and Airflow at a local endpoint, and its defaults."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "ENV_TO_UNSET",
    "ENV_TO_UNSET_PREFIXES",
    "endpoint_environ",
    "variables_to_unset",
]

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's default account: what credentials "testing" map to
DEFAULT_REGION = "us-east-1"

# Variables that would send clients elsewhere or hide our credentials: unset while the endpoint is used.
ENV_TO_UNSET_PREFIXES = ("AWS_ENDPOINT_URL_",)
ENV_TO_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def endpoint_environ(url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The env vars for an endpoint at ``url``: AWS_* for boto3/aiobotocore, AIRFLOW_CONN_AWS_DEFAULT."""
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": region, "endpoint_url": url},
    }
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
    }


def variables_to_unset(environ: Iterable[str]) -> Iterator[str]:
    """The names in ``environ`` that :data:`ENV_TO_UNSET` / :data:`ENV_TO_UNSET_PREFIXES` cover."""
    for name in environ:
        if name in ENV_TO_UNSET or name.startswith(ENV_TO_UNSET_PREFIXES):
            yield name
