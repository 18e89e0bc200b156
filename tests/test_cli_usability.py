"""What a newcomer meets first: help texts and errors of the CLI (real ``spikefuse``
processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spikefuse", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "argv",
    [["eval", "attitude", "{junk}"], ["plot", "{junk}", "-o", "{out}"]],
    ids=["eval", "plot"],
)
def test_table_of_unknown_layout_names_preset(tmp_path: Path, argv: list[str]) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("time,x,y\n0,1,2\n1,2,3\n")
    args = [a.format(junk=junk, out=tmp_path / "p.png") for a in argv]
    r = _cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{junk}: its columns ('time', 'x', 'y') match no known table layout" in r.stderr
    assert "--preset NAME (known presets: broad, vqf, xio)" in r.stderr
