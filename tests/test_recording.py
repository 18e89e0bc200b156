"""Recorder (a real child process on a real ipc bus), reader, info, recover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _core_util import wait_recorded
from mcap.reader import make_reader

from spikefuse.errors import LogFileError
from spikefuse.protocol import EventBatch, Heartbeat, decode, encode
from spikefuse.recording.info import summarize
from spikefuse.recording.mcapio import SCHEMA_NAME, LogWriter, open_log
from spikefuse.recording.recover import recover
from spikefuse.transport.publisher import Publisher


def _batch(seq: int, t_ns: int, sensor: str = "imu", inp: str = "gyro") -> EventBatch:
    ch = np.array([seq % 3, (seq + 1) % 3], np.int32)
    co = np.array([1 + seq % 5, -1], np.int32)
    return EventBatch(sensor, seq, t_ns, inp, 1000.0, ch, co)


def _start_recorder(out: Path, endpoint: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "record", "-o", str(out)]
    cmd += ["--endpoint", endpoint, *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return err


def test_recorder_process_sigterm_finishes_indexed_file(tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/bus"
    out = tmp_path / "run.mcap"
    with Publisher(ep) as pub:
        proc = _start_recorder(out, ep, "--topics", "sensor/")
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30), "recorder did not subscribe"
            sent = []
            for i in range(500):
                b = _batch(i, 1_000_000 + i * 1000)
                sent.append(encode(b))
                assert pub.send(b)
                if i % 100 == 0:
                    pub.send(Heartbeat("imu", i // 100, 1_000_000 + i * 1000, "ok"))
            # a status message is not in the recorded topics
            pub.send_payload(b"status/x", encode(Heartbeat("x", 0, 0, "ok"))[:5])
            deadline = time.monotonic() + 10
            # wait until the recorder must have drained (its flush makes the data visible)
            while time.monotonic() < deadline and (
                not out.exists() or len(open_log(out).messages) < 505
            ):
                time.sleep(0.1)
        finally:
            err = _stop(proc)
    assert proc.returncode == 0, err
    stats = json.loads(err.strip().splitlines()[-1])
    assert stats["n_messages"] == 505 and stats["n_events"] == 1000
    assert stats["n_seq_missing"] == 0 and stats["n_rejected"] == 0
    log = open_log(out)
    assert log.indexed and log.problem == ""
    batches = [m for m in log.messages if decode(m.payload).__class__ is EventBatch]
    assert [m.payload for m in batches] == sent
    assert [m.sequence for m in batches] == list(range(500))
    assert [m.publish_time_ns for m in batches] == [1_000_000 + i * 1000 for i in range(500)]
    assert all(m.log_time_ns >= 0 for m in log.messages)
    assert log.schema_names == [SCHEMA_NAME]
    # the mcap library's own reader opens it
    with open(out, "rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary.statistics.message_count == 505
        chans = {c.topic: c for c in summary.channels.values()}
        assert set(chans) == {"sensor/imu"} and chans["sensor/imu"].message_encoding == "msgpack"
        assert all(s.name == SCHEMA_NAME for s in summary.schemas.values())
        assert summary.chunk_indexes and summary.chunk_indexes[0].compression == "zstd"
    info = summarize(out)
    s = info.stream("sensor/imu/gyro")
    assert s.n_messages == 500 and s.n_events == 1000 and s.n_seq_missing == 0
    assert s.rate_hz == pytest.approx(1e6, rel=1e-6)
    assert info.stream("heartbeat/imu").n_messages == 5


def test_sigkill_loses_at_most_last_second_and_recover(tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/bus"
    out = tmp_path / "killed.mcap"
    send_s: list[float] = []
    with Publisher(ep) as pub:
        proc = _start_recorder(out, ep)
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30)
            period_s = 0.01
            t0 = time.monotonic()
            for i in range(300):  # 3 s at 100 Hz on deadlines
                due = t0 + i * period_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.send(_batch(i, time.monotonic_ns()))
                send_s.append(time.monotonic())
            kill_s = time.monotonic()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    log = open_log(out)
    assert not log.indexed and log.problem
    n_old = sum(1 for t in send_s if t < kill_s - 1.0)
    got = [decode(m.payload).seq for m in log.messages]
    assert got == list(range(len(got))), "messages must be a gap-free prefix"
    assert len(got) >= n_old, f"only {len(got)} of {n_old} messages older than 1 s survived"
    info = summarize(out)
    assert not info.indexed and info.n_messages == len(got)
    # the CLI reports it as unfinished, and recover makes an indexed copy
    res = subprocess.run(
        [sys.executable, "-m", "spikefuse", "info", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(res.stdout)["indexed"] is False
    fixed = tmp_path / "fixed.mcap"
    rr = recover(out, fixed)
    assert rr.n_messages == len(got) and not rr.was_indexed
    again = open_log(fixed)
    assert again.indexed and [m.payload for m in again.messages] == [
        m.payload for m in log.messages
    ]
    with open(fixed, "rb") as fh:
        assert make_reader(fh).get_summary().statistics.message_count == len(got)


def _write_small(path: Path, n: int = 2000) -> list[bytes]:
    payloads = []
    with LogWriter(path, flush_interval_s=None, chunk_bytes=4096) as w:
        for i in range(n):
            p = encode(_batch(i, i * 1000))
            payloads.append(p)
            w.write("sensor/imu", p, i * 1000, i * 1000, i)
    return payloads


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_file_reads_prefix(tmp_path: Path, keep: float) -> None:
    src = tmp_path / "a.mcap"
    payloads = _write_small(src)
    data = src.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * keep)])
    log = open_log(cut)
    assert not log.indexed and log.problem
    assert [m.payload for m in log.messages] == payloads[: len(log.messages)]
    if keep >= 0.5:
        assert len(log.messages) > 0


def test_corrupt_chunk_is_reported_not_raised(tmp_path: Path) -> None:
    src = tmp_path / "a.mcap"
    payloads = _write_small(src)
    with open(src, "rb") as fh:
        chunk = make_reader(fh).get_summary().chunk_indexes[2]
    data = bytearray(src.read_bytes())
    mid = chunk.chunk_start_offset + chunk.chunk_length // 2
    for k in range(mid, mid + 16):  # flip bits inside the third chunk's compressed data
        data[k] ^= 0x5A
    data[-40:] = bytes(40)  # and break the footer so the index cannot be used
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(bytes(data))
    log = open_log(bad)
    assert not log.indexed and "scan stopped" in log.problem and "crc" in log.problem.lower()
    assert 0 < len(log.messages) < len(payloads)
    assert [m.payload for m in log.messages] == payloads[: len(log.messages)]


def test_not_mcap_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not an mcap file at all")
    with pytest.raises(LogFileError, match="junk.mcap: not an MCAP file"):
        open_log(junk)
    with pytest.raises(LogFileError, match="missing.mcap: cannot open"):
        open_log(tmp_path / "missing.mcap")
    res = subprocess.run(
        [sys.executable, "-m", "spikefuse", "info", str(junk)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        res.returncode == 1 and "not an MCAP file" in res.stderr and "Traceback" not in res.stderr
    )


def test_split_by_size(tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/bus"
    out = tmp_path / "part.mcap"
    with Publisher(ep) as pub:
        proc = _start_recorder(out, ep, "--split-size", "8k", "--flush-interval", "0.05")
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30)
            t0 = time.monotonic()
            for i in range(400):
                due = t0 + i * 0.002
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.send(_batch(i, i))
            assert wait_recorded(lambda: sorted(tmp_path.glob("part_*.mcap")), 400) == 400
        finally:
            err = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, err
    files = json.loads(err.strip().splitlines()[-1])["files"]
    assert len(files) >= 2 and files[0].endswith("part_000.mcap")
    seqs = []
    for f in files:
        log = open_log(f)
        assert log.indexed
        seqs += [m.sequence for m in log.messages]
    assert seqs == list(range(400))
    assert os.path.getsize(files[0]) < 64 * 1024
