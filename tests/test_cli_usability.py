"""What a newcomer meets first: help texts and errors of the CLI (real ``spikefuse``
processes)."""

from __future__ import annotations

import argparse
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


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "spikefuse"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


def test_every_subcommand_has_a_description_and_every_argument_a_help() -> None:
    from spikefuse.cli import build_parser

    missing = []
    for name, p in _subparsers(build_parser()):
        if not (p.description or "").strip():
            missing.append(f"{name}: no description")
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not (a.help or "").strip():
                missing.append(f"{name}: {'/'.join(a.option_strings) or a.dest} has no help")
    assert not missing, "\n".join(missing)


def test_launch_help_reads_well() -> None:
    r = _cli("launch", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "Start the processes of a launch file" in text
    assert "--set KEY=VALUE change the launch file" in text
    r = _cli("replay", "--help")
    assert "file the .mcap log to replay" in " ".join(r.stdout.split())
