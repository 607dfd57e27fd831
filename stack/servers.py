"""Finding (or installing) the PostgreSQL and Redis servers the stack runs.

PostgreSQL: the newest ``/usr/lib/postgresql/<version>/bin`` (Debian/Ubuntu's layout), else the folder
of ``pg_ctl`` on the PATH. Redis: ``redis-server`` on the PATH. When either is missing and the stack runs
as root on a system with ``apt-get``, it installs Debian's ``postgresql`` / ``redis-server`` packages
(running ``apt-get update`` first when the install fails for want of package lists), without letting
the packages start servers of their own; otherwise it stops with one line naming what to install.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError

APT_PACKAGES = {"postgresql": "postgresql", "redis": "redis-server"}


@dataclass(frozen=True)
class Servers:
    postgres_bin: Path  # the folder holding postgres, initdb, pg_isready, psql
    redis_server: Path


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name)) or (0,)


def find_postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=_version_key)
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and (Path(pg_ctl).resolve().parent / "initdb").exists():
        return Path(pg_ctl).resolve().parent
    return None


def find_redis_server() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def _missing() -> list[str]:
    missing = []
    if find_postgres_bin() is None:
        missing.append("postgresql")
    if find_redis_server() is None:
        missing.append("redis")
    return missing


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep the packages from starting their own servers (Debian's postgresql would start a cluster on
    5432, redis-server one on 6379): the stack runs its own. ``policy-rc.d`` exiting 101 is Debian's way
    to say so; one that already exists is left as it is."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text(
        "#!/bin/sh\n# written by make stack for the duration of one apt-get install\nexit 101\n"
    )
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def _apt_install(packages: list[str], log: Path) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("ab") as out, _no_service_starts():
        install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
        if subprocess.call(install, stdout=out, stderr=subprocess.STDOUT, env=env) == 0:
            return
        subprocess.call(["apt-get", "update"], stdout=out, stderr=subprocess.STDOUT, env=env)
        if subprocess.call(install, stdout=out, stderr=subprocess.STDOUT, env=env) != 0:
            raise StackError(f"`{' '.join(install)}` failed: see {log}")


def ensure_servers(log: Path, install: bool = True) -> Servers:
    """The server binaries, installed with apt-get when missing (root only); else :class:`StackError`."""
    missing = _missing()
    if missing:
        packages = [APT_PACKAGES[name] for name in missing]
        if not (install and os.geteuid() == 0 and shutil.which("apt-get")):
            raise StackError(
                f"the stack needs the {' and '.join(missing)} server(s): install them "
                f"(Debian/Ubuntu: sudo apt-get install {' '.join(packages)}; macOS: brew install "
                f"{' '.join('postgresql' if m == 'postgresql' else 'redis' for m in missing)})"
            )
        print(f"installing {' '.join(packages)} with apt-get (log: {log}) ...", flush=True)
        _apt_install(packages, log)
        if _missing():
            raise StackError(f"installed {' '.join(packages)} but still cannot find {', '.join(_missing())}")
    postgres_bin, redis_server = find_postgres_bin(), find_redis_server()
    assert postgres_bin is not None and redis_server is not None
    return Servers(postgres_bin, redis_server)
