"""Tests of the full paths that need Debian libraries (EGL/Mesa for MuJoCo's renderer,
Chromium for the live view). `.ci/run` installs them, and under CI a missing one fails the
test; on a developer's machine without them the test is skipped with the install command
in its reason (pytest -ra lists it), never silently."""

from __future__ import annotations

import ctypes.util
import os
import shutil

import pytest

EGL_DEBS = "libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(present: bool, what: str, debs: str) -> None:
    if present:
        return
    msg = f"{what} needs the Debian package(s) {debs} (apt-get install {debs}; .ci/run does)"
    if _in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def require_chromium() -> str:
    exe = shutil.which("chromium")
    require(exe is not None, "the live-view browser test", "chromium")
    return exe


def require_egl() -> None:
    require(ctypes.util.find_library("EGL") is not None, "MuJoCo's EGL renderer", EGL_DEBS)
