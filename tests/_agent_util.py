"""Helpers of the multi-host tests: agents as real processes, free tcp ports, launch files
split over hosts."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

from _core_util import LineReader, write_yaml

from spikefuse.config import load_yaml

REPO = Path(__file__).resolve().parents[1]
STARTED = re.compile(r"^\[launch\] (?:(\w+): )?started (\S+) \(pid (\d+)\)")


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive tcp ports free on loopback right now."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        if all(_bindable(base + k) for k in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def agent_config(tmp: Path, name: str, port: int, **over) -> Path:
    data = {
        "name": name,
        "endpoint": f"tcp://127.0.0.1:{port}",
        "run_dir": str(tmp / f"run-{name}"),
    }
    data.update(over)
    return write_yaml(tmp / f"agent-{name}.yaml", data)


def start_agent(
    cfg: Path, *prefix: str, sets: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, LineReader]:
    """``spikefuse agent --config cfg [--set ...]`` (behind ``prefix``, e.g. ip netns exec
    NS); returns once it listens."""
    over = [x for s in sets for x in ("--set", s)]
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "spikefuse", "agent", "--config", str(cfg), *over],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    reader = LineReader(proc)
    hit = reader.wait_for(lambda ln: "listening on" in ln, 60.0)
    assert hit is not None, reader.text()
    return proc, reader


def launch(path: Path, *extra: str) -> tuple[subprocess.Popen, LineReader]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(path), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, LineReader(proc)


def pids(reader: LineReader) -> dict[str, int]:
    out = {}
    for _, line in list(reader.lines):
        m = STARTED.match(line)
        if m:
            out[m.group(2)] = int(m.group(3))
    return out


def load_launch_data(name: str, env: dict[str, str]) -> dict:
    """A launch file of the repository as plain data (``${...}`` filled from ``env``) with
    its relative config paths made absolute."""
    data = json.loads(json.dumps(load_yaml(REPO / "launch" / name, env)))
    for p in data["processes"]:
        if "config" in p:
            p["config"] = str((REPO / "launch" / p["config"]).resolve())
    return data


def demo_split(
    tmp: Path,
    hosts: dict[str, dict],
    placement: dict[str, str],
    csv: Path,
    procs: dict[str, dict] | None = None,
    **top,
) -> Path:
    """launch/demo.yaml with ``host:`` per ``placement`` (process -> host), the motors
    writing ``csv`` and ``procs`` (process -> fields) merged in."""
    data = load_launch_data("demo.yaml", {"SPIKEFUSE_RUN_DIR": str(tmp / "run-launcher")})
    data.update(hosts=hosts, data_port=free_ports(8), **top)
    for p in data["processes"]:
        if p["name"] in placement:
            p["host"] = placement[p["name"]]
        if p["name"] == "motors":
            p["set"] = [f"csv={csv}", "print_hz=0"]
        p.update((procs or {}).get(p["name"], {}))
    return write_yaml(tmp / "demo_split.yaml", data)


def live_cmds(csv: Path) -> int:
    if not csv.exists():
        return 0
    rows = [ln.split(",") for ln in csv.read_text().splitlines()[1:]]
    return sum(1 for r in rows if len(r) > 4 and r[1] == "cmd" and any(float(v) for v in r[4:]))
