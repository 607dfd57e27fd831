"""boto3 / botocore sessions for the local endpoint's own tools, cut off from the user's AWS set-up
(no profile, config file, credentials or other ``AWS_*`` setting is read), and :func:`isolate_moto`,
which does the same for the sessions moto creates inside the endpoint. Why: docs/local-endpoint.md.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any

#: Credentials the local endpoint accepts (moto maps them to account 123456789012).
TEST_ACCESS_KEY = "testing"
TEST_SECRET_KEY = "testing"


def _isolated_session_vars() -> dict[str, tuple[Any, Any, Any, Any]]:
    """botocore's session variables with no environment variable and no config-file source (defaults
    only); the config and credentials files are the null device, no profile."""
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES as DEFAULTS

    session_vars: dict[str, tuple[Any, Any, Any, Any]] = {
        name: (None, None, default, conversion) for name, (_, _, default, conversion) in DEFAULTS.items()
    }
    for name in ("config_file", "credentials_file"):
        session_vars[name] = (None, None, os.devnull, None)
    session_vars["profile"] = (None, None, None, None)
    return session_vars


def isolated_botocore_session() -> Any:
    """A botocore session that reads nothing from the environment or the AWS config files."""
    import botocore.session

    return botocore.session.Session(session_vars=_isolated_session_vars())


def isolated_boto3_session(region: str) -> Any:
    """A boto3 session on :func:`isolated_botocore_session` with the test credentials and ``region``."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=TEST_ACCESS_KEY,
        aws_secret_access_key=TEST_SECRET_KEY,
        region_name=region,
        botocore_session=isolated_botocore_session(),
    )


_MOTO_LOCK = threading.Lock()
_moto_isolated = False
#: moto modules that call ``Session()`` while being imported (the EC2 region list is built in a class body).
_MOTO_EAGER_IMPORTS = ("moto.core.base_backend", "moto.core.utils", "moto.ec2.models")


def isolate_moto() -> None:
    """Make moto's own ``Session()`` calls (region and service lists) use isolated sessions (idempotent).

    moto binds ``from boto3 import Session`` (or botocore's) at import time: the modules that use it are
    imported here with ``boto3.Session`` briefly replaced, and the ``Session`` name of every moto module
    already imported is re-pointed to a subclass that builds isolated sessions.
    """
    global _moto_isolated
    with _MOTO_LOCK:
        if _moto_isolated:
            return
        import boto3
        import botocore.session

        real_boto3, real_botocore = boto3.Session, botocore.session.Session

        class IsolatedSession(real_boto3):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("botocore_session", isolated_botocore_session())
                super().__init__(*args, **kwargs)

        class IsolatedBotocoreSession(real_botocore):  # type: ignore[misc, valid-type]
            def __init__(self, session_vars: Any = None, *args: Any, **kwargs: Any) -> None:
                super().__init__({**_isolated_session_vars(), **(session_vars or {})}, *args, **kwargs)

        replacements = {id(real_boto3): IsolatedSession, id(real_botocore): IsolatedBotocoreSession}
        boto3.Session = IsolatedSession  # type: ignore[misc]
        try:
            for name in _MOTO_EAGER_IMPORTS:
                importlib.import_module(name)
        finally:
            boto3.Session = real_boto3  # type: ignore[misc]
        for name, module in list(sys.modules.items()):
            replacement = replacements.get(id(getattr(module, "Session", None)))
            if name.startswith("moto.") and replacement is not None:
                setattr(module, "Session", replacement)  # noqa: B010 (a module's attribute, by name)
        from moto.core.base_backend import AccountSpecificBackend

        AccountSpecificBackend.get_session.cache_clear()
        _moto_isolated = True


__all__ = [
    "TEST_ACCESS_KEY",
    "TEST_SECRET_KEY",
    "isolate_moto",
    "isolated_boto3_session",
    "isolated_botocore_session",
]
