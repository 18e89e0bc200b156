"""No Docker engine here: check that the Dockerfile installs the package exactly the way
the README says and runs ``spikefuse launch`` on a launch file that exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_install_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
    assert blocks, "README has no code blocks"
    # the main job's block: the first one that installs the package
    for block in blocks:
        cmds = [c.strip() for line in block.splitlines() for c in line.split("&&")]
        pips = [shlex.split(c) for c in cmds if c.startswith("pip install")]
        if pips:
            return pips
    raise AssertionError("README installs nothing with pip")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_installs_like_the_readme():
    readme = _readme_install_commands()
    assert readme == [["pip", "install", "."]]
    instr = _dockerfile_instructions()
    pips = [
        shlex.split(c.strip())
        for op, rest in instr
        if op == "RUN"
        for c in rest.split("&&")
        if "pip" in c and "install" in c
    ]
    assert pips == readme
    # the repository root is copied to the working directory before installing
    ops = [op for op, _ in instr]
    copy = ops.index("COPY")
    assert instr[copy][1] == ". ."
    assert copy < next(
        i for i, (op, rest) in enumerate(instr) if op == "RUN" and "pip install" in rest
    )
    assert instr[0][0] == "FROM" and "python:3.11" in instr[0][1]


def test_dockerfile_runs_spikefuse_launch_on_an_existing_file():
    instr = dict(_dockerfile_instructions())
    entry = json.loads(instr["ENTRYPOINT"])
    cmd = json.loads(instr["CMD"])
    assert entry == ["spikefuse", "launch"]
    assert (REPO / cmd[0]).is_file()
    assert "--duration" in cmd


def test_systemd_unit_starts_the_launcher():
    unit = (REPO / "docs/systemd/spikefuse.service").read_text()
    assert re.search(r"^ExecStart=\S*spikefuse launch \S+\.yaml$", unit, re.M)
    assert "KillSignal=SIGTERM" in unit and "[Install]" in unit
