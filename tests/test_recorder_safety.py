"""What a killed recorder keeps: a restart under ``spikefuse launch`` never replaces what
it wrote (real launcher, imu driver, recorder), and a SIGKILL loses at most about one flush
interval (real recorder process, real ipc bus)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _core_util import LineReader, stop, wait_until, write_yaml

from spikefuse.protocol import EventBatch, decode
from spikefuse.recording.mcapio import LogWriter, open_log
from spikefuse.recording.recorder import Recorder, split_path
from spikefuse.transport.publisher import Publisher

STARTED = re.compile(r"^\[launch\] started (\S+) \(pid (\d+)\)")


def _launch_file(tmp_path: Path, out: Path) -> Path:
    run = tmp_path / "run"
    return write_yaml(
        tmp_path / "rec.yaml",
        {
            "run_dir": str(run),
            "processes": [
                {
                    "name": "imu",
                    "kind": "driver",
                    "type": "imu",
                    "set": ["groups.mag.enabled=false"],
                    "outputs": ["sensor/imu"],
                },
                {
                    "name": "rec",
                    "kind": "record",
                    "args": [
                        "-o",
                        str(out),
                        "--endpoint",
                        f"ipc://{run}/imu.sock",
                        "--flush-interval",
                        "0.1",
                    ],
                    "inputs": ["sensor/imu"],
                    "backoff_s": 1.0,
                },
            ],
        },
    )


def _n_messages(path: Path) -> int:
    return len(open_log(path).messages) if path.exists() else 0


def test_killed_recorder_restart_keeps_every_recorded_message(tmp_path: Path) -> None:
    out = tmp_path / "run.mcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "launch", str(_launch_file(tmp_path, out))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = LineReader(proc)
    try:
        hit = reader.wait_for(lambda ln: STARTED.match(ln) and " rec " in ln, 60)
        assert hit, reader.text()
        pid = int(STARTED.match(hit[2]).group(2))
        assert wait_until(lambda: _n_messages(out) >= 50, 60, 0.1), reader.text()
        os.kill(pid, signal.SIGKILL)
        assert reader.wait_for(lambda ln: "rec exited (signal 9)" in ln, 30), reader.text()
        before = [m.payload for m in open_log(out).messages]  # all the killed one wrote
        assert len(before) >= 50
        part = split_path(out, 1)
        assert reader.wait_for(lambda ln: f"recording continues into {part}" in ln, 60)
        assert wait_until(lambda: _n_messages(part) >= 20, 60, 0.1), reader.text()
    finally:
        stop(proc, 30)
    reader.wait_for(lambda ln: "restarted 1x" in ln, 10)
    text = reader.text()
    assert proc.returncode == 0, text
    assert re.search(r"rec: restarted 1x; nothing was overwritten", text), text
    assert f"{out} exists already, unfinished" in text
    killed = open_log(out)
    assert not killed.indexed and [m.payload for m in killed.messages] == before
    cont = open_log(part)
    assert cont.indexed and len(cont.messages) >= 20
    assert killed.messages[-1].log_time_ns < cont.messages[0].log_time_ns


def test_recorder_never_replaces_existing_files(tmp_path: Path) -> None:
    out = tmp_path / "a.mcap"
    with LogWriter(out) as w:
        w.write("sensor/x", b"keep", 1, 1, 0)
    split_path(out, 1).write_bytes(b"not even mcap")
    ep = f"ipc://{tmp_path}/bus"
    with Recorder(out, [ep], bind=True) as rec:
        writer = rec._open_next()
        writer.close()
    assert rec.stats.kept == [str(out), str(split_path(out, 1))]
    assert rec.stats.files == [str(split_path(out, 2))]
    assert [m.payload for m in open_log(out).messages] == [b"keep"]
    assert split_path(out, 1).read_bytes() == b"not even mcap"


FLUSH_MARGIN_S = 0.4
"""Scheduling slack on a loaded 2-core machine (load 4) on top of the flush interval."""


@pytest.mark.parametrize("flush_s", [0.1, 1.0])
def test_sigkill_loses_at_most_one_flush_interval(tmp_path: Path, flush_s: float) -> None:
    ep = f"ipc://{tmp_path}/bus"
    out = tmp_path / "k.mcap"
    cmd = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "record", "-o"]
    cmd += [str(out), "--endpoint", ep, "--flush-interval", str(flush_s)]
    period_s = 0.005
    sent_s: list[float] = []
    ch = np.array([0, 1], np.int32)
    with Publisher(ep) as pub:
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30), "recorder did not subscribe"
            t0 = time.monotonic()
            for i in range(600):  # 3 s at 200 Hz, on deadlines
                delay = t0 + i * period_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.send(EventBatch("imu", i, time.monotonic_ns(), "gyro", 100.0, ch, ch + 1))
                sent_s.append(time.monotonic())
            kill_s = time.monotonic()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    got = [decode(m.payload).seq for m in open_log(out).messages]
    assert got == list(range(len(got))), "a gap-free prefix"
    bound_s = flush_s + FLUSH_MARGIN_S
    n_old = sum(1 for t in sent_s if t < kill_s - bound_s)
    lost_s = kill_s - sent_s[len(got) - 1] if got else float("inf")
    assert len(got) >= n_old, (
        f"{len(got)} of {len(sent_s)} kept: lost the last {lost_s:.3f} s, "
        f"more than --flush-interval {flush_s} s + {FLUSH_MARGIN_S} s"
    )
