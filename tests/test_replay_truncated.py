"""``spikefuse replay`` of an unfinished (truncated) log: a warning with the number of
messages read, exit 0 (documented); ``--strict`` refuses it (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from spikefuse.protocol import EventBatch, encode
from spikefuse.recording.mcapio import LogWriter, open_log

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "configs" / "graphs" / "example.yaml"


def _truncated(tmp_path: Path) -> tuple[Path, int]:
    full = tmp_path / "full.mcap"
    with LogWriter(full, flush_interval_s=None, chunk_bytes=4096) as w:
        for i in range(2000):
            ch = np.array([i % 3], np.int32)
            b = EventBatch("imu", i, 10**9 + i * 10**6, "gyro", 200.0, ch, np.ones(1, np.int32))
            w.write("sensor/imu", encode(b), b.t_ns, b.t_ns, i)
    cut = tmp_path / "cut.mcap"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    n = len(open_log(cut).messages)
    assert 0 < n < 2000
    return cut, n


def _replay(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "replay", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_replay_of_a_truncated_log_warns_with_the_count(tmp_path: Path) -> None:
    cut, n = _truncated(tmp_path)
    out = tmp_path / "out.mcap"
    res = _replay(str(cut), "--offline", "--graph", str(GRAPH), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert f"warning: {cut} is unfinished" in res.stderr
    assert f"{n} messages read" in res.stderr
    summary = json.loads(res.stderr.strip().splitlines()[-1])
    assert summary["n_read"] == n and summary["file_finished"] is False
    assert summary["n_batches"] == n and summary["unread_bytes"] > 0
    # live: the same warning and fields
    res = _replay(str(cut), "--fast", "--endpoint", f"ipc://{tmp_path}/bus")
    assert res.returncode == 0, res.stderr
    assert f"{n} messages read" in res.stderr
    summary = json.loads(res.stderr.strip().splitlines()[-1])
    assert summary["n_read"] == n and summary["n_sent"] == n


def test_replay_strict_refuses_a_truncated_log(tmp_path: Path) -> None:
    cut, n = _truncated(tmp_path)
    res = _replay(
        str(cut), "--strict", "--offline", "--graph", str(GRAPH), "-o", str(tmp_path / "x.mcap")
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "--strict refuses it" in res.stderr and f"{n} messages read" in res.stderr
    assert not (tmp_path / "x.mcap").exists()


def test_replay_of_a_finished_log_says_nothing_extra(tmp_path: Path) -> None:
    cut, _ = _truncated(tmp_path)
    res = _replay(
        str(tmp_path / "full.mcap"),
        "--offline",
        "--graph",
        str(GRAPH),
        "-o",
        str(tmp_path / "o.mcap"),
    )
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    assert json.loads(res.stderr.strip().splitlines()[-1])["file_finished"] is True
