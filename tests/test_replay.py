"""Offline and live replay: determinism, round trip through a real recorder process,
live timing without drift."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _core_util import wait_recorded

from spikefuse.core.inputs import split_by_time
from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.engine import Engine
from spikefuse.graph import Graph
from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status, decode, encode
from spikefuse.recording.live import replay_live
from spikefuse.recording.mcapio import LogWriter, open_log
from spikefuse.recording.offline import replay_offline
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "configs" / "graphs" / "example.yaml"


def imu_batches(n: int, period_ns: int, t0_ns: int = 10**9, seed: int = 0) -> list[EventBatch]:
    """What an IMU driver sends: gyro/accel through the sigma-delta encoders."""
    rng = np.random.default_rng(seed)
    enc = {"gyro": SigmaDeltaEncoder(3, 200.0), "accel": SigmaDeltaEncoder(3, 20.0)}
    seq = {"gyro": 0, "accel": 0}
    out = []
    for i in range(n):
        t = t0_ns + i * period_ns
        vals = {
            "gyro": np.sin(i / 40 + np.arange(3)) * 0.8 + rng.normal(0, 0.01, 3),
            "accel": np.array([0.0, 0.0, 9.81])
            + np.cos(i / 25 + np.arange(3))
            + rng.normal(0, 0.05, 3),
        }
        for name, e in enc.items():
            ch, co = e.encode(vals[name])
            if ch.size:
                out.append(
                    EventBatch("imu", seq[name], t, name, 200.0 if name == "gyro" else 20.0, ch, co)
                )
                seq[name] += 1
    return out


def write_log(path: Path, batches: list[EventBatch]) -> None:
    with LogWriter(path, flush_interval_s=None) as w:
        for b in batches:
            w.write("sensor/imu", encode(b), b.t_ns, b.t_ns, b.seq)


def direct_motor(batches: list[EventBatch]) -> list[tuple[str, int, tuple]]:
    """The engine fed directly (no MCAP), outputs grouped like the replay groups them."""
    eng = Engine(Graph.load(GRAPH))
    vals = {n: np.array(eng.output_value(n)) for n in eng.output_names}
    out = []

    def take(ev):
        for (t, o), grp in _groups(ev):
            name = eng.output_names[o]
            vals[name][grp["channel"]] = grp["value"]
            out.append((name, t, tuple(vals[name])))

    take(eng.start(batches[0].t_ns))
    for b in sorted(batches, key=lambda b: b.t_ns):
        take(eng.push(b.t_ns, b.input, b.channels, b.counts))
    take(eng.advance(max(batches[-1].t_ns, eng.now)))
    return out


def _groups(ev):
    i = 0
    while i < ev.size:
        j = i
        while j < ev.size and ev["t_ns"][j] == ev["t_ns"][i] and ev["output"][j] == ev["output"][i]:
            j += 1
        yield (int(ev["t_ns"][i]), int(ev["output"][i])), ev[i:j]
        i = j


def motor_of(path: Path) -> list[MotorCommand]:
    return [
        m
        for m in (decode(x.payload) for x in open_log(path).messages)
        if isinstance(m, MotorCommand)
    ]


def test_offline_twice_byte_identical_and_equals_direct_engine(tmp_path: Path) -> None:
    batches = imu_batches(1500, 5_000_000)
    src = tmp_path / "in.mcap"
    write_log(src, batches)
    a, b = tmp_path / "a.mcap", tmp_path / "b.mcap"
    ra = replay_offline(src, GRAPH, a)
    replay_offline(src, GRAPH, b)
    assert a.read_bytes() == b.read_bytes()
    assert ra.n_batches == len(batches) and ra.n_unknown == 0
    motors = motor_of(a)
    assert len(motors) == ra.n_motor_commands > 100
    got = [(m.actuator, m.t_ns, tuple(m.values)) for m in motors]
    assert sorted(got, key=lambda x: x[1]) == sorted(direct_motor(batches), key=lambda x: x[1])
    assert all(m.cause_t_ns <= m.t_ns for m in motors)
    status = [m for m in (decode(x.payload) for x in open_log(a).messages) if isinstance(m, Status)]
    assert status and status[-1].metrics["spikes"]["gyro"] == ra.counters["spikes"]["gyro"] > 0
    assert 7 <= len(status) <= 9  # 7.5 s of log time at 1 s


def test_offline_map_input_unknown_and_rescale(tmp_path: Path) -> None:
    batches = imu_batches(400, 5_000_000)
    renamed = [
        EventBatch(
            b.sensor,
            b.seq,
            b.t_ns,
            "rate" if b.input == "gyro" else b.input,
            b.scale,
            b.channels,
            b.counts,
        )
        for b in batches
    ]
    renamed.append(
        EventBatch(
            "cam",
            0,
            batches[-1].t_ns,
            "camera",
            5.0,
            np.array([1], np.int32),
            np.array([1], np.int32),
        )
    )
    src = tmp_path / "in.mcap"
    write_log(src, renamed)
    plain = replay_offline(src, GRAPH, None, keep_motor=True)
    assert plain.unknown_inputs == {"rate": sum(b.input == "gyro" for b in batches), "camera": 1}
    mapped = replay_offline(src, GRAPH, None, map_input={"rate": "gyro"}, keep_motor=True)
    assert mapped.unknown_inputs == {"camera": 1}
    ref = direct_motor(batches)
    assert [(m.actuator, m.t_ns, tuple(m.values)) for m in mapped.motor] == ref
    # the same signal at 10x the input's scale is re-quantised to (almost) the same outputs
    fine = [
        EventBatch(b.sensor, b.seq, b.t_ns, b.input, b.scale * 10, b.channels, b.counts * 10)
        for b in batches
    ]
    write_log(tmp_path / "fine.mcap", fine)
    rescaled = replay_offline(tmp_path / "fine.mcap", GRAPH, None, keep_motor=True)
    assert rescaled.n_rescaled_batches == len(batches)
    assert [(m.actuator, m.t_ns, tuple(m.values)) for m in rescaled.motor] == ref


def _start_recorder(out: Path, endpoint: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "spikefuse",
        "--log-level",
        "WARNING",
        "record",
        "-o",
        str(out),
        "--endpoint",
        endpoint,
    ]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)


def test_round_trip_recorder_process_then_offline_and_live(tmp_path: Path) -> None:
    period_ns = 4_000_000
    batches = imu_batches(400, period_ns, t0_ns=0)  # 1.6 s
    ep = f"ipc://{tmp_path}/bus"
    rec_path = tmp_path / "rec.mcap"
    with Publisher(ep) as pub:
        proc = _start_recorder(rec_path, ep)
        try:
            assert pub.wait_for_subscribers(1, timeout_s=30)
            start = time.monotonic_ns() + 20_000_000
            sent = []
            for b in batches:  # live timing on deadlines, acquisition time = now
                due = start + b.t_ns
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                live = EventBatch(b.sensor, b.seq, due, b.input, b.scale, b.channels, b.counts)
                sent.append(live)
                assert pub.send(live)
            assert wait_recorded(lambda: [rec_path], len(sent)) == len(sent)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(err.strip().splitlines()[-1])["n_messages"] == len(sent)

    # offline: identical motor outputs to the engine fed the sent batches directly
    off = replay_offline(rec_path, GRAPH, tmp_path / "off.mcap", keep_motor=True)
    ref = direct_motor(sent)
    assert [(m.actuator, m.t_ns, tuple(m.values)) for m in off.motor] == ref

    # live: replay the recording onto a bus; a fresh engine fed from the bus produces the
    # same output values, at times shifted by one constant (re-stamping keeps intervals)
    ep2 = f"ipc://{tmp_path}/bus2"
    received: list[tuple[int, EventBatch]] = []
    with Publisher(ep2) as pub2, Subscriber(ep2, ["sensor/"]) as sub:
        assert pub2.wait_for_subscribers(1, timeout_s=10)
        stop = StopSignal()
        result = {}
        th = threading.Thread(
            target=lambda: result.setdefault("r", replay_live(rec_path, pub2, stop))
        )
        th.start()
        deadline = time.monotonic() + 20
        while len(received) < len(sent) + 1 and time.monotonic() < deadline:
            for m in sub.recv_many(0.2):
                received.append((time.monotonic_ns(), m))
        th.join(10)
    res = result["r"]
    received = _without_ends(received, {"imu"})
    assert res.n_sent == len(sent) and len(received) == len(sent) and res.n_ends_announced == 1
    # lateness is scheduling noise on a shared 2-core machine: bound the typical and the worst
    assert res.mean_late_ns < 20_000_000
    assert res.max_late_ns < 400_000_000
    live_batches = [m for _, m in received]
    shift = live_batches[0].t_ns - sent[0].t_ns
    assert [b.t_ns - shift for b in live_batches] == [b.t_ns for b in sent]
    # arrival timing follows the acquisition timing within tolerance (no drift at the end)
    arrive = np.array([t for t, _ in received], np.int64)
    acq = np.array([b.t_ns for b in live_batches], np.int64)
    lag = arrive - acq
    assert np.median(lag) < 50_000_000 and lag[-1] < 100_000_000
    live_ref = direct_motor(live_batches)
    assert [(a, v) for a, _, v in live_ref] == [(a, v) for a, _, v in ref]
    assert {t - t_ref for (_, t, _), (_, t_ref, _) in zip(live_ref, ref, strict=True)} == {shift}


def test_live_replay_cli_rate_and_topics(tmp_path: Path) -> None:
    batches = imu_batches(100, 10_000_000)  # 1 s of log time
    src = tmp_path / "in.mcap"
    write_log(src, batches)
    ep = f"ipc://{tmp_path}/bus"
    with Subscriber(ep, [""], bind=True) as sub:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spikefuse",
                "replay",
                str(src),
                "--endpoint",
                ep,
                "--connect",
                "--rate",
                "4",
                "--wait-subscribers",
                "1",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(batches) + 1 and time.monotonic() < deadline:
            got += [(time.monotonic_ns(), m) for m in sub.recv_many(0.2)]
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    summary = json.loads(err.strip().splitlines()[-1])
    got = _without_ends(got, {"imu"})
    assert summary["n_sent"] == len(batches) == len(got) and summary["n_ends_announced"] == 1
    span_s = (got[-1][0] - got[0][0]) / 1e9
    log_span_s = (batches[-1].t_ns - batches[0].t_ns) / 1e9
    assert log_span_s / 4 * 0.8 < span_s < log_span_s / 4 + 0.15
    # the acquisition times are re-stamped at 1/rate spacing
    d = np.diff([m.t_ns for _, m in got])
    assert d.sum() == pytest.approx((batches[-1].t_ns - batches[0].t_ns) / 4, abs=len(d))


def test_replay_cli_errors(tmp_path: Path) -> None:
    src = tmp_path / "in.mcap"
    write_log(src, imu_batches(10, 10_000_000))
    cases = [
        (["replay", str(src), "--offline", "-o", str(tmp_path / "o.mcap")], "needs --graph"),
        (
            [
                "replay",
                str(src),
                "--offline",
                "--graph",
                str(GRAPH),
                "-o",
                str(tmp_path / "o.mcap"),
                "--map-input",
                "x",
            ],
            "old=new",
        ),
        (
            [
                "replay",
                str(tmp_path / "none.mcap"),
                "--offline",
                "--graph",
                str(GRAPH),
                "-o",
                str(tmp_path / "o.mcap"),
            ],
            "none.mcap: cannot open",
        ),
        (["replay", str(src)], "needs --endpoint"),
    ]
    for argv, text in cases:
        r = subprocess.run(
            [sys.executable, "-m", "spikefuse", *argv], capture_output=True, text=True, timeout=60
        )
        assert r.returncode in (1, 2) and text in r.stderr and "Traceback" not in r.stderr, (
            argv,
            r.stderr,
        )


def test_offline_push_many_byte_identical_to_batch_by_batch(tmp_path: Path) -> None:
    """push_many chunks vs one push per batch: same output file, byte for byte (ties in
    time, per-event offsets, re-scaled batches and status ticks included)."""
    batches = imu_batches(1200, 2_000_000, seed=3)
    rng = np.random.default_rng(5)
    mixed = []
    for b in batches:
        if b.seq % 7 == 3:  # a re-quantised batch now and then
            b = EventBatch(b.sensor, b.seq, b.t_ns, b.input, b.scale * 2.5, b.channels, b.counts)
        if b.seq % 5 == 1:  # per-event offsets: one push per distinct time
            dt = rng.integers(0, 1_500_000, b.channels.size).astype(np.int64)
            b = EventBatch(
                b.sensor, b.seq, b.t_ns, b.input, b.scale, b.channels, b.counts, dt_ns=dt
            )
        mixed.append(b)
    src = tmp_path / "in.mcap"
    write_log(src, mixed)
    a, b = tmp_path / "many.mcap", tmp_path / "one.mcap"
    ra = replay_offline(src, GRAPH, a, status_period_s=0.3)
    rb = replay_offline(src, GRAPH, b, status_period_s=0.3, batched=False)
    assert ra.n_motor_commands == rb.n_motor_commands > 200
    n_parts = sum(len(split_by_time(b)) for b in mixed)
    assert n_parts > len(mixed) + 200
    assert ra.n_rescaled_batches > 100 and ra.n_batches == len(mixed)
    assert ra.n_pushes == rb.n_pushes == n_parts
    assert a.read_bytes() == b.read_bytes()


def _replay_cli(src: Path, ep: str, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "spikefuse", "replay", str(src), "--endpoint", ep, "--connect"]
    return subprocess.Popen(
        [*argv, "--wait-subscribers", "1", *extra], stderr=subprocess.PIPE, text=True
    )


def _without_ends(got: list, sensors: set[str]) -> list:
    """What a live replay sent before it ended: ``got`` (messages, or (time, message) pairs)
    without the end announcement it adds last, one per replayed sensor (checked here)."""
    msgs = [m[1] if isinstance(m, tuple) else m for m in got]
    ends = [m for m in msgs if isinstance(m, Heartbeat) and m.state == "ended"]
    assert {m.sensor for m in ends} == sensors and len(ends) == len(sensors)
    assert msgs[-len(ends) :] == ends  # after everything else
    assert all(m.totals is None and "replay" in m.detail for m in ends)
    return got[: -len(ends)]


def _seq_runs(got: list[EventBatch]) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = {}
    for m in got:
        runs.setdefault(m.input, []).append(m.seq)
    return runs


def test_live_replay_cli_loop_continues_seq_and_clock(tmp_path: Path) -> None:
    batches = imu_batches(50, 10_000_000)  # 0.5 s of log time, gyro and accel streams
    src = tmp_path / "in.mcap"
    write_log(src, batches)
    ep = f"ipc://{tmp_path}/bus"
    got: list[EventBatch] = []
    with Subscriber(ep, [""], bind=True) as sub:
        proc = _replay_cli(src, ep, "--loop", "--rate", "10")  # 50 ms per loop
        deadline = time.monotonic() + 30
        while len(got) < 3 * len(batches) and time.monotonic() < deadline:
            got += sub.recv_many(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        got += sub.recv_many(0.3)
    assert proc.returncode == 0, err
    s = json.loads(err.strip().splitlines()[-1])
    got = _without_ends(got, {"imu"})  # stopped by a signal: the end is announced too
    assert s["n_loops"] >= 3 and s["n_sent"] == len(got)
    assert s["n_loops"] * len(batches) <= len(got) < (s["n_loops"] + 1) * len(batches)
    for inp, seqs in _seq_runs(got).items():  # every stream numbers on without a gap
        assert seqs == list(range(len(seqs))), inp
    n_first = {i: sum(b.input == i for b in batches) for i in ("gyro", "accel")}
    assert all(len(v) >= 3 * n_first[k] for k, v in _seq_runs(got).items())
    t = np.array([m.t_ns for m in got])
    assert np.all(np.diff(t) >= 0)  # the clock goes on across loops
    period = (batches[-1].t_ns - batches[0].t_ns) / 10
    k = len(batches)  # loop 2 repeats loop 1's spacing one loop period (+ one gap) later
    gap = 10_000_000 / 10
    assert np.array_equal(t[k : 2 * k] - t[:k], np.full(k, round(period + gap)))


def test_live_replay_cli_start_end_window(tmp_path: Path) -> None:
    batches = imu_batches(100, 10_000_000)  # 1 s
    src = tmp_path / "in.mcap"
    write_log(src, batches)
    t0 = batches[0].t_ns
    want = [b for b in batches if t0 + 200_000_000 <= b.t_ns <= t0 + 500_000_000]
    ep = f"ipc://{tmp_path}/bus"
    with Subscriber(ep, [""], bind=True) as sub:
        proc = _replay_cli(src, ep, "--start", "0.2", "--end", "0.5", "--keep-time")
        got: list[EventBatch] = []
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            got += sub.recv_many(0.1)
        _, err = proc.communicate(timeout=30)
        got += sub.recv_many(0.3)
    assert proc.returncode == 0, err
    got = _without_ends(got, {"imu"})
    assert json.loads(err.strip().splitlines()[-1])["n_sent"] == len(want) == len(got) > 50
    assert got == want  # stored bytes unchanged (--keep-time): the same batches, in order


def test_offline_replay_applies_heartbeat_totals_like_the_core(tmp_path):
    """A log that lost a batch on the way: the driver's heartbeat totals put the input
    right, offline exactly as the live core does (FusionCore._resync)."""
    from spikefuse.protocol import Heartbeat

    g = Graph("sum")
    g.input("x", 2, scale=1.0)
    g.output("y", "x", scale=1.0)
    path = tmp_path / "lossy.mcap"
    totals = np.zeros(2, np.int64)
    with LogWriter(path) as w:
        for i, (ch, co) in enumerate([([0], [3]), ([1], [5]), ([0], [-1])]):
            np.add.at(totals, ch, co)
            if i == 1:
                continue  # lost before the recorder
            b = EventBatch(
                "s", i, (i + 1) * 1000, "x", 1.0, np.array(ch, np.int32), np.array(co, np.int32)
            )
            w.write("sensor/s", encode(b), (i + 1) * 1000, b.t_ns, b.seq)
        hb = Heartbeat("s", 0, 5000, "ok", "", {"x": totals.copy()})
        w.write("sensor/s", encode(hb), 5000, 5000, 0)
    res = replay_offline(path, g, keep_motor=True)
    assert res.n_resyncs == 1
    assert res.motor[-1].values.tolist() == [2.0, 5.0]
