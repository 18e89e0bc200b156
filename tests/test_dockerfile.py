"""No Docker engine here: check the Dockerfile's structure: a build stage that builds the
wheel of the repository (what the README's ``pip install .`` installs), a final image with
no compiler that runs ``spikefuse launch`` on a launch file that exists as a non-root user,
and a mount example for ../shared/data where the configs look for it."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from pathlib import Path, PurePosixPath

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


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, rest in _dockerfile_instructions():
        if op == "FROM":
            stages.append([])
        stages[-1].append((op, rest))
    return stages


def _runs(stage: list[tuple[str, str]]) -> list[list[str]]:
    return [shlex.split(c.strip()) for op, rest in stage if op == "RUN" for c in rest.split("&&")]


def test_dockerfile_builds_a_wheel_of_the_repository_like_the_readme():
    readme = _readme_install_commands()
    assert readme == [["pip", "install", ".[sim]"]]
    build, final = _stages()
    assert build[0] == ("FROM", "python:3.11-slim AS build")
    assert final[0][0] == "FROM" and final[0][1] == "python:3.11-slim"
    # the build stage has the compiler, copies the repository root and builds its wheel
    assert any("build-essential" in c for c in _runs(build))
    copy = build.index(("COPY", ". ."))
    wheel = next(i for i, (op, rest) in enumerate(build) if op == "RUN" and "pip wheel" in rest)
    assert copy < wheel
    cmds = _runs(build)
    pip_wheel = next(c for c in cmds if c[:2] == ["pip", "wheel"])
    assert pip_wheel[-1] == readme[0][-1] and "--wheel-dir" in pip_wheel
    # what is installed is that wheel, offline (no other source of the package)
    install = next(c for c in cmds if c[-3:] == ["--find-links", "/wheels", "spikefuse[sim]"])
    assert "--no-index" in install and install[1:3] == ["install", "--no-cache-dir"]


def test_final_image_has_no_compiler_and_runs_as_a_non_root_user():
    _, final = _stages()
    text = " ".join(rest for _, rest in final)
    assert "build-essential" not in text and "gcc" not in text
    # the only packages installed there are the renderer's runtime libraries
    installs = [c for c in _runs(final) if c[:2] == ["apt-get", "install"]]
    pkgs = {a for c in installs for a in c[2:] if not a.startswith("-")}
    assert pkgs <= {"libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libgbm1"}, pkgs
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    users = [rest for op, rest in final if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    ops = [op for op, _ in final]
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    # the run dir exists and belongs to that user
    env = dict(rest.split("=", 1) for op, rest in final if op == "ENV")
    assert any(
        "chown" in c[0] and c[1] == f"{users[-1]}:{users[-1]}" and env["SPIKEFUSE_RUN_DIR"] in c
        for c in _runs(final)
    )


def test_dockerfile_says_how_to_mount_the_shared_data_where_the_configs_look():
    text = (REPO / "Dockerfile").read_text()
    mount = re.search(r'-v "\$PWD/\.\./shared/data:(\S+):ro"', text)
    assert mount, "no mount example for ../shared/data"
    _, final = _stages()
    workdir = PurePosixPath(next(rest for op, rest in final if op == "WORKDIR"))
    # a config that reads the shared data, resolved inside the image
    rel = re.search(r"path: (\S+)", (REPO / "configs/drivers/imu_broad.yaml").read_text())
    inside = posixpath.normpath(str(workdir / "configs/drivers" / rel.group(1)))
    assert inside.startswith(mount.group(1) + "/"), (inside, mount.group(1))
    copied = {rest.split()[-2] for op, rest in final if op == "COPY" and "--from" not in rest}
    assert {"launch/", "configs/"} <= copied


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
