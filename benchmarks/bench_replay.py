"""Replay and recording throughput (issue 5).

* ``offline_events_per_s``: ``replay_offline`` of a synthetic high-rate log through
  ``configs/graphs/example.yaml`` (MCAP read, decode, engine, MotorCommand/Status out);
  baseline: the same batches pushed into the same engine straight from memory.
* ``record_events_per_s``: a real ``spikefuse record`` child process recording from a
  publisher sending as fast as the recorder takes them (back-pressure, no drops), measured
  from the receive times in the file; baseline: ``LogWriter`` writing the same payloads
  with no bus. ``record_drop_count``: messages lost (sequence gaps + publisher drops).
* ``mcap_bytes_per_event``: recorded file size / events.
* the cost of a smaller recorder flush interval (``--flush-fast``, default 0.1 s, against
  the default 1 s in the same run): ``record_fast_flush_ratio_to_default`` (full-speed
  throughput) and, for a paced IMU-like stream recorded by both recorders at once,
  ``paced_cpu_ratio_fast_to_default`` (recorder CPU) and
  ``paced_bytes_ratio_fast_to_default`` (file size: smaller zstd chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spikefuse.benchmarks._common import BenchResult
from spikefuse.engine import Engine
from spikefuse.errors import LogFileError
from spikefuse.graph import Graph
from spikefuse.protocol import EventBatch, encode
from spikefuse.recording.info import summarize
from spikefuse.recording.mcapio import DEFAULT_FLUSH_INTERVAL_S, LogWriter, open_log
from spikefuse.recording.offline import replay_offline
from spikefuse.recording.recorder import MAX_POLL_S
from spikefuse.transport.publisher import Publisher

DESCRIPTION = "offline replay and recording throughput (events/s) vs same-run baselines"
REPEATS = 5
GRAPH = Path(__file__).resolve().parents[1] / "configs" / "graphs" / "example.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-batches", type=int, default=1000, help="batches in the synthetic log")
    p.add_argument("--batch-events", type=int, default=2048, help="events per batch")
    p.add_argument("--graph", default=str(GRAPH), help="graph of the offline replay")
    p.add_argument(
        "--flush-fast",
        type=float,
        default=0.1,
        metavar="S",
        help="the smaller recorder flush interval whose cost is measured against 1 s",
    )
    p.add_argument("--paced-hz", type=float, default=1000.0, help="paced stream: batches/s")
    p.add_argument("--paced-s", type=float, default=4.0, help="paced stream: seconds")


def make_batches(n: int, k: int, seed: int = 0) -> list[EventBatch]:
    """Coalesced batches of a fast IMU (1 kHz), alternating gyro/accel, ±1..3 counts."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        inp = "gyro" if i % 2 == 0 else "accel"
        ch = rng.integers(0, 3, k).astype(np.int32)
        co = (rng.integers(1, 4, k) * rng.choice([-1, 1], k)).astype(np.int32)
        out.append(
            EventBatch(
                "imu", i // 2, 10**9 + i * 1_000_000, inp, 200.0 if inp == "gyro" else 20.0, ch, co
            )
        )
    return out


def _offline(batches: list[EventBatch], graph: str, d: Path) -> tuple[float, float]:
    src = d / "in.mcap"
    with LogWriter(src, flush_interval_s=None) as w:
        for b in batches:
            w.write("sensor/imu", encode(b), b.t_ns, b.t_ns, b.seq)
    n_events = sum(b.n_events for b in batches)
    base_s = off_s = float("inf")
    for _ in range(REPEATS):  # best of REPEATS: the machine is shared and noisy
        eng = Engine(Graph.load(graph))
        t = time.perf_counter()
        eng.start(batches[0].t_ns)
        for b in batches:
            eng.push(b.t_ns, b.input, b.channels, b.counts)
        base_s = min(base_s, time.perf_counter() - t)
        t = time.perf_counter()
        res = replay_offline(src, graph, d / "out.mcap", progress=False)
        off_s = min(off_s, time.perf_counter() - t)
        if res.n_events_in != n_events:
            raise RuntimeError(f"offline replay consumed {res.n_events_in} of {n_events} events")
    return n_events / off_s, n_events / base_s


def _start_recorder(out: Path, ep: str, flush_s: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "record", "-o"]
    cmd += [str(out), "--endpoint", ep, "--flush-interval", str(flush_s)]
    # cwd: out's folder (a temporary one), not the caller's: from a repository checkout
    # ``-m`` would import the uncompiled source tree instead of the installed package
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=out.parent)


def _stop_recorder(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"recorder exited {proc.returncode}: {err[-500:]}")
    return json.loads(err.strip().splitlines()[-1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _n_recorded(out: Path) -> int:
    """Messages in the recorder's file so far (0 before it has written its header: a
    recorder that subscribed may not have yet, on a busy machine)."""
    try:
        return len(open_log(out).messages)
    except LogFileError:
        return 0


def _record(
    batches: list[EventBatch], d: Path, flush_s: float, tag: str
) -> tuple[float, int, float, int]:
    """Events/s of a real recorder taking a back-pressured stream as fast as it can."""
    payloads = [encode(b) for b in batches]
    n_events = sum(b.n_events for b in batches)
    ep = f"ipc://{d}/bus-{tag}"
    out = d / f"rec-{tag}.mcap"
    with Publisher(ep) as pub:
        proc = _start_recorder(out, ep, flush_s)
        try:
            if not pub.wait_for_subscribers(1, timeout_s=30):
                raise RuntimeError("recorder did not subscribe")
            for p in payloads:
                while not pub.send_payload(b"sensor/imu", p):
                    pub.wait_writable(0.005)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _n_recorded(out) < len(payloads):
                time.sleep(0.2)
        finally:
            stats = _stop_recorder(proc)
    log = open_log(out)
    recv = [m.log_time_ns for m in log.messages]
    rec_rate = n_events / ((max(recv) - min(recv)) / 1e9) if len(recv) > 1 else 0.0
    info = summarize(log)
    # every send eventually succeeded: nothing dropped at the publisher
    lost = len(payloads) - stats["n_messages"] + stats["n_seq_missing"]
    return rec_rate, lost, out.stat().st_size / max(1, info.n_events), info.n_events


def _raw_write_rate(batches: list[EventBatch], d: Path) -> float:
    payloads = [encode(b) for b in batches]
    t = time.perf_counter()
    with LogWriter(d / "raw.mcap") as w:
        for b, p in zip(batches, payloads, strict=True):
            w.write("sensor/imu", p, time.monotonic_ns(), b.t_ns, b.seq)
    return sum(b.n_events for b in batches) / (time.perf_counter() - t)


def _paced(d: Path, flushes: list[float], rate_hz: float, duration_s: float) -> list[dict]:
    """One paced IMU-like stream (``rate_hz`` batches of 6 events) recorded at once by one
    recorder per flush interval: CPU seconds per second of stream and bytes per event."""
    batches = make_batches(round(rate_hz * duration_s), 6, seed=1)
    ep = f"ipc://{d}/bus-paced"
    outs = [d / f"paced-{i}.mcap" for i in range(len(flushes))]
    with Publisher(ep) as pub:
        procs = [_start_recorder(o, ep, f) for o, f in zip(outs, flushes, strict=True)]
        try:
            if not pub.wait_for_subscribers(len(procs), timeout_s=30):
                raise RuntimeError("recorders did not subscribe")
            cpu0 = [_cpu_s(p.pid) for p in procs]
            t0 = time.monotonic()
            for i, b in enumerate(batches):
                delay = t0 + i / rate_hz - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pub.send(b)
            # each recorder has flushed everything once its interval is over
            time.sleep(max(flushes) + 2 * MAX_POLL_S)
            span_s = time.monotonic() - t0
            cpu = [_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        finally:
            stats = [_stop_recorder(p) for p in procs]
    n_events = sum(b.n_events for b in batches)
    return [
        {
            "cpu_s_per_s": c / span_s,
            "bytes_per_event": o.stat().st_size / n_events,
            "n_messages": st["n_messages"],
        }
        for c, o, st in zip(cpu, outs, stats, strict=True)
    ]


def run(args: argparse.Namespace) -> BenchResult:
    batches = make_batches(args.n_batches, args.batch_events)
    fast = args.flush_fast
    with tempfile.TemporaryDirectory(prefix="bench_replay_") as tmp:
        d = Path(tmp)
        off_rate, push_rate = _offline(batches, args.graph, d)
        raw_rate = _raw_write_rate(batches, d)
        rec_rate, lost, bpe, n_rec = _record(batches, d, DEFAULT_FLUSH_INTERVAL_S, "default")
        fast_rate, fast_lost, fast_bpe, _ = _record(batches, d, fast, "fast")
        slow_p, fast_p = _paced(d, [DEFAULT_FLUSH_INTERVAL_S, fast], args.paced_hz, args.paced_s)
    n_events = sum(b.n_events for b in batches)
    r = BenchResult(
        f"replay/record ({args.n_batches} batches x {args.batch_events} events = {n_events})"
    )
    r.add("offline replay events/s", off_rate, push_rate, off_rate / push_rate)
    r.add("record events/s (bus -> mcap)", rec_rate, raw_rate, rec_rate / raw_rate)
    r.add(f"record events/s, --flush-interval {fast:g}", fast_rate, rec_rate, fast_rate / rec_rate)
    r.add("record drop count (1 s / fast flush)", lost + fast_lost, 0, None)
    r.add("mcap bytes per event", bpe, 4 + 4, bpe / 8)
    paced = f"paced {args.paced_hz:g} Hz x 6 events"
    r.add(
        f"{paced}: recorder CPU s/s, flush {fast:g} s",
        fast_p["cpu_s_per_s"],
        slow_p["cpu_s_per_s"],
        _ratio(fast_p["cpu_s_per_s"], slow_p["cpu_s_per_s"]),
    )
    r.add(
        f"{paced}: bytes per event, flush {fast:g} s",
        fast_p["bytes_per_event"],
        slow_p["bytes_per_event"],
        fast_p["bytes_per_event"] / slow_p["bytes_per_event"],
    )
    r.notes.append(
        "baselines: engine push from memory; LogWriter of the same payloads without the bus; "
        "8 B = raw int32 channel+count; fast-flush rows: the same recorder with the default "
        f"{DEFAULT_FLUSH_INTERVAL_S:g} s flush in the same run (paced: both record one stream at once)"
    )
    r.fields = {
        "offline_events_per_s": off_rate,
        "offline_baseline_push_events_per_s": push_rate,
        "offline_ratio": off_rate / push_rate,
        "record_events_per_s": rec_rate,
        "record_baseline_mcap_write_events_per_s": raw_rate,
        "record_ratio": rec_rate / raw_rate,
        "record_drop_count": lost,
        "record_n_events": n_rec,
        "mcap_bytes_per_event": bpe,
        "n_events": n_events,
        "flush_fast_s": fast,
        "record_fast_flush_events_per_s": fast_rate,
        "record_fast_flush_ratio_to_default": fast_rate / rec_rate,
        "record_fast_flush_drop_count": fast_lost,
        "record_fast_flush_bytes_per_event": fast_bpe,
        "paced_cpu_s_per_s_default_flush": slow_p["cpu_s_per_s"],
        "paced_cpu_s_per_s_fast_flush": fast_p["cpu_s_per_s"],
        "paced_cpu_ratio_fast_to_default": _ratio(fast_p["cpu_s_per_s"], slow_p["cpu_s_per_s"]),
        "paced_bytes_per_event_default_flush": slow_p["bytes_per_event"],
        "paced_bytes_per_event_fast_flush": fast_p["bytes_per_event"],
        "paced_bytes_ratio_fast_to_default": fast_p["bytes_per_event"] / slow_p["bytes_per_event"],
        "paced_n_messages": [slow_p["n_messages"], fast_p["n_messages"]],
    }
    return r


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None
