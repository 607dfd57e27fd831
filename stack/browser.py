"""The headless browser of the UI system test: Debian's ``chromium``, driven by Playwright's Python API.

Playwright is told where the browser is (``executable_path``): it never downloads one. When
``/usr/bin/chromium`` is missing and we run as root on a system with ``apt-get``, Debian's ``chromium``
package is installed the way the stack installs PostgreSQL and Redis; otherwise :class:`StackError`
names what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import StackError
from .servers import _apt_install

CHROMIUM = Path("/usr/bin/chromium")
APT_PACKAGE = "chromium"
#: Headless, no sandbox (root in a container), and nothing that calls home.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> Path | None:
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def ensure_chromium(log: Path, install: bool = True) -> Path:
    """The chromium binary, installed with apt-get when missing (root only); else :class:`StackError`."""
    found = find_chromium()
    if found is not None:
        return found
    if not (install and os.geteuid() == 0 and shutil.which("apt-get")):
        raise StackError(
            f"the UI system test needs Chromium at {CHROMIUM}: install it "
            f"(Debian/Ubuntu: sudo apt-get install {APT_PACKAGE})"
        )
    print(f"installing {APT_PACKAGE} with apt-get (log: {log}) ...", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    _apt_install([APT_PACKAGE], log)
    found = find_chromium()
    if found is None:
        raise StackError(f"installed {APT_PACKAGE} but still cannot find {CHROMIUM}")
    return found
