"""Helpers for the core / actuator / launch tests: real child processes and files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from spikefuse.errors import LogFileError
from spikefuse.graph import Graph
from spikefuse.recording.mcapio import open_log


def small_graph(path: Path, n: int = 4, with_integrator: bool = False) -> Path:
    """x (n) -> dense 0.5*I -> y (Output). Exact arithmetic: outputs are path independent."""
    g = Graph("small")
    g.input("x", n, scale=1.0)
    g.dense("h", "x", 0.5 * np.eye(n), scale=2.0)
    if with_integrator:
        g.integrator("i", "x", gain=1.0, tau_s=None, scale=10.0)
        g.output("yi", "i", scale=10.0)
    g.output("y", "h", scale=2.0)
    g.save(path)
    return path


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def core_config(tmp: Path, graph: Path, **over) -> Path:
    data = {
        "name": "core",
        "graph": str(graph),
        "run_dir": str(tmp),
        "inputs": {"x": {"sensor": "sens", "timeout_s": 0.2}},
        "actuators": {"motors": {"output": "y", "safe_values": 0.0}},
    }
    data.update(over)
    return write_yaml(tmp / "core.yaml", data)


def spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spikefuse", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        text=True,
    )


class LineReader:
    """Collects a child's output lines with their monotonic arrival time."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cv.notify_all()

    def wait_for(self, pred, timeout_s: float, start: int = 0) -> tuple[int, float, str] | None:
        deadline = time.monotonic() + timeout_s
        i = start
        with self._cv:
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    if pred(line):
                        return i, t, line
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)

    def join(self, timeout_s: float) -> None:
        """Wait until the child's output has ended (every line read)."""
        self._t.join(timeout_s)

    def text(self) -> str:
        with self._cv:
            return "\n".join(line for _, line in self.lines)


def stop(proc: subprocess.Popen, timeout_s: float = 5.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def read_csv_rows(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [ln.split(",") for ln in lines[1:] if ln.count(",") >= 4]


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_until(pred, timeout_s: float, poll_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll_s)
    return pred()


__all__ = ["os"]


def wait_recorded(paths, n: int, timeout_s: float = 60.0) -> int:
    """Wait until the recorder's files (finished or still open, read as they are on disk)
    hold ``n`` messages: the recorder flushes every --flush-interval, so this synchronises
    on its output instead of on a sleep. Returns the count reached."""
    deadline = time.monotonic() + timeout_s
    got = 0
    while time.monotonic() < deadline:
        got = 0
        for p in paths():
            try:
                got += len(open_log(p).messages)
            except LogFileError:
                pass  # a file just created (no header yet)
        if got >= n:
            return got
        time.sleep(0.05)
    return got
