"""Offline: how the UI system test finds its browser, and the one line it fails with when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import StackError, browser


def test_chromium_is_found_at_the_debian_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "chromium"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setattr(browser, "CHROMIUM", binary)
    assert browser.ensure_chromium(tmp_path / "install.log", install=False) == binary


def test_a_missing_chromium_that_may_not_be_installed_fails_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "absent")
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="apt-get install chromium"):
        browser.ensure_chromium(tmp_path / "install.log", install=False)
    assert not (tmp_path / "install.log").exists()
