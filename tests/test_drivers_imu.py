"""The imu driver: a real child process (synthetic and IIO sysfs sources) received by a
real Subscriber; SIGTERM exits 0 within 1 s; read errors degrade, never crash; table replay
of the real logs (BROAD, VQF, x-io) with the file's own timestamps."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from _drivers_util import (
    STOP_WITHIN_S,
    Received,
    collect,
    drain,
    run_in_thread,
    start_driver,
    stop_driver,
)

from spikefuse.drivers.imu import IMU, ImuConfig
from spikefuse.drivers.motion import SyntheticMotion
from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.errors import ConfigError
from spikefuse.sdk import load_driver_config, run_driver
from spikefuse.tables import load_table
from spikefuse.transport.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "drivers"

SCALES = {g: float(v["scale"]) for g, v in ImuConfig.default_groups.items()}


def _run_threaded(cfg) -> tuple[Received, list[float]]:
    return run_in_thread(IMU, cfg)


def _table_cfg(tmp_path: Path, path: Path, *overrides: str):
    return load_driver_config(
        IMU,
        None,
        [
            f"endpoint=ipc://{tmp_path}/imu.sock",
            "wait_for_subscribers=1",
            "source.type=table",
            f"source.path={path}",
            *overrides,
        ],
    )


# --------------------------------------------------------------------------- child process


def test_synthetic_imu_process_publishes_multirate_and_exits_on_sigterm(tmp_path):
    ep = f"ipc://{tmp_path}/imu.sock"
    proc = start_driver(
        "imu",
        CONFIGS / "imu_synthetic.yaml",
        f"endpoint={ep}",
        "heartbeat_period_s=0.25",
        "wait_for_subscribers=1",
    )
    got = Received()
    with Subscriber(ep) as sub:
        try:
            ok = collect(sub, got, lambda r: len(r.statuses) >= 6 and len(r.of("mag")) >= 5, 30.0)
            assert ok, (len(got.statuses), len(got.of("mag")), proc.poll())
        finally:
            rc, took_s, err = stop_driver(proc, signal.SIGTERM)
        drain(sub, got)
    assert rc == 0, err
    assert took_s < STOP_WITHIN_S, took_s
    assert {"gyro", "accel", "mag"} <= {b.input for b in got.batches}
    assert got.heartbeats and got.heartbeats[-1].detail == "stopped by signal 15"
    assert got.heartbeats[-1].state == "ended"  # a deliberate stop closes the stream
    m = got.statuses[-1].metrics
    ticks = {
        g: m["groups"][g]["n_items"] + m["n_pacer_skips"].get(g, 0)
        for g in ("gyro", "accel", "mag")
    }
    # multi-rate: 1000 : 200 : 20 Hz (ticks include the ones skipped when the machine is busy)
    assert 30 <= ticks["gyro"] / ticks["mag"] <= 70, ticks
    assert 6 <= ticks["accel"] / ticks["mag"] <= 14, ticks
    assert m["groups"]["gyro"]["n_items"] >= 0.5 * ticks["gyro"]
    # batches carry the configured scales and consecutive sequence numbers per stream
    for name, k in SCALES.items():
        bs = got.of(name)
        assert all(b.scale == k for b in bs)
        seqs = [b.seq for b in bs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def _fake_iio(root: Path) -> Path:
    dev = root / "iio:device0"
    dev.mkdir(parents=True)
    files = {
        "in_anglvel_scale": "0.001064724",  # rad/s per LSB
        "in_accel_scale": "0.000598",  # m/s² per LSB
        "in_magn_x_scale": "0.000146",  # gauss per LSB, per axis
        "in_magn_y_scale": "0.000146",
        "in_magn_z_scale": "0.000150",
        "in_magn_offset": "10",
        "name": "fake-imu",
    }
    raws = {"anglvel": (100, -200, 300), "accel": (0, 0, 16400), "magn": (1400, -2000, -3000)}
    for ctype, vals in raws.items():
        for axis, v in zip("xyz", vals, strict=True):
            files[f"in_{ctype}_{axis}_raw"] = str(v)
    for name, text in files.items():
        (dev / name).write_text(text + "\n")
    return dev


def _expect(raw, scale, offset=0.0, unit=1.0):
    return (np.asarray(raw, float) + offset) * np.asarray(scale) * unit


def _near(got: Received, name: str, expected: np.ndarray, k: float) -> bool:
    return bool(np.all(np.abs(got.sums(name, 3) / k - expected) <= 0.5 / k + 1e-12))


def test_iio_sysfs_values_errors_degrade_and_recover(tmp_path):
    dev = _fake_iio(tmp_path / "sys")
    cfg = tmp_path / "iio.yaml"
    cfg.write_text(
        f"source: {{type: iio, device: {dev}}}\n"
        "groups: {gyro: {rate_hz: 200, scale: 500}, accel: {rate_hz: 100, scale: 50},"
        " mag: {rate_hz: 20, scale: 2}}\n"
        "heartbeat_period_s: 0.2\n"
        "retry: {initial_backoff_s: 0.02, max_backoff_s: 0.1, failed_after: 3}\n"
    )
    ep = f"ipc://{tmp_path}/iio.sock"
    proc = start_driver("imu", cfg, f"endpoint={ep}", "wait_for_subscribers=1")
    gyro = _expect((100, -200, 300), 0.001064724)
    accel = _expect((0, 0, 16400), 0.000598)
    mag = _expect((1400, -2000, -3000), (0.000146, 0.000146, 0.000150), 10, 100.0)  # µT
    got = Received()
    with Subscriber(ep) as sub:
        try:
            assert collect(
                sub,
                got,
                lambda r: (
                    _near(r, "gyro", gyro, 500)
                    and _near(r, "accel", accel, 50)
                    and _near(r, "mag", mag, 2)
                ),
                30.0,
            ), (got.sums("gyro", 3), got.sums("mag", 3), proc.poll())
            # a value change is followed
            (dev / "in_anglvel_x_raw").write_text("1000\n")
            gyro2 = _expect((1000, -200, 300), 0.001064724)
            assert collect(sub, got, lambda r: _near(r, "gyro", gyro2, 500), 10.0)
            # a vanished attribute: degraded, then failed; accel keeps running meanwhile
            (dev / "in_anglvel_y_raw").unlink()
            assert collect(sub, got, lambda r: r.heartbeats[-1].state == "degraded", 10.0)
            assert "in_anglvel_y_raw" in got.heartbeats[-1].detail
            assert collect(sub, got, lambda r: r.heartbeats[-1].state == "failed", 10.0)
            (dev / "in_accel_z_raw").write_text("8200\n")
            accel2 = _expect((0, 0, 8200), 0.000598)
            assert collect(sub, got, lambda r: _near(r, "accel", accel2, 50), 10.0)
            # garbage in a file is a read error too; then the device comes back
            (dev / "in_anglvel_y_raw").write_text("bogus\n")
            assert collect(sub, got, lambda r: "not a number" in r.heartbeats[-1].detail, 10.0)
            (dev / "in_anglvel_y_raw").write_text("-200\n")
            assert collect(sub, got, lambda r: r.heartbeats[-1].state == "ok", 10.0)
            assert proc.poll() is None  # never crashed
        finally:
            rc, took_s, err = stop_driver(proc)
        drain(sub, got)
    assert rc == 0, err
    assert took_s < STOP_WITHIN_S
    m = got.statuses[-1].metrics
    assert m["n_read_errors"] >= 3 and m["n_recoveries"] >= 1


def test_iio_device_missing_at_start_is_retried_until_it_appears(tmp_path):
    sysfs = tmp_path / "sys"
    ep = f"ipc://{tmp_path}/hp.sock"
    proc = start_driver(
        "imu",
        None,
        f"endpoint={ep}",
        "source.type=iio",
        f"source.device={sysfs / 'iio:device0'}",
        "heartbeat_period_s=0.2",
        "retry.initial_backoff_s=0.02",
        "retry.max_backoff_s=0.1",
        "groups.gyro.rate_hz=100",
        "groups.accel.rate_hz=50",
        "groups.mag.enabled=false",
    )
    got = Received()
    with Subscriber(ep) as sub:
        try:
            assert collect(sub, got, lambda r: r.heartbeats and r.heartbeats[-1].state != "ok", 20)
            assert "not found" in got.heartbeats[-1].detail
            _fake_iio(sysfs)
            assert collect(sub, got, lambda r: len(r.of("gyro")) > 0, 10.0)
            assert collect(sub, got, lambda r: r.heartbeats[-1].state == "ok", 10.0)
            assert not got.of("mag")  # disabled group
        finally:
            rc, _, err = stop_driver(proc, signal.SIGINT)
    assert rc == 0, err


def test_missing_table_file_is_a_config_error(tmp_path):
    cfg = _table_cfg(tmp_path, tmp_path / "nope.csv", "wait_for_subscribers=0")
    with pytest.raises(ConfigError, match="table file not found"):
        run_driver(IMU, cfg)


# --------------------------------------------------------------------------- table replay


def test_broad_replay_reconstructs_within_half_a_quantum(tmp_path, shared_data):
    path = shared_data / "broad" / "broad_02_undisturbed_slow_rotation.csv.gz"
    cfg = _table_cfg(
        tmp_path, path, "source.realtime=false", "duration_s=10", "max_batch_latency_ms=50"
    )
    got, _ = _run_threaded(cfg)
    table = load_table(path)
    n = int(np.searchsorted(table.t_ns - table.t_ns[0], 10 * 10**9))  # rows within 10 s
    m = got.statuses[-1].metrics
    assert m["n_send_dropped"] == 0
    for name, k in SCALES.items():
        assert m["groups"][name]["n_items"] == n
        # every batch spans < 50 ms of the file's time
        assert all(b.dt_ns is None or b.dt_ns.max() < 50_000_000 for b in got.of(name))
        last = table.groups[name][n - 1]
        assert np.all(np.abs(got.sums(name, 3) / k - last) <= 0.5 / k + 1e-9), name


def test_xio_replay_keeps_the_files_jittery_timestamps_exactly(tmp_path, shared_data):
    path = shared_data / "xio" / "sensor_data.csv"
    cfg = _table_cfg(
        tmp_path,
        path,
        f"source.mapping_file={REPO / 'configs' / 'tables' / 'xio.yaml'}",
        "source.realtime=false",
        "duration_s=10",
        "max_batch_latency_ms=0",
        "groups.gyro.scale=500",  # fine quanta: every jittery row sends something
        "groups.accel.scale=50",
    )
    got, _ = _run_threaded(cfg)
    table = load_table(path)
    t_rel = table.t_ns - table.t_ns[0]
    n = int(np.searchsorted(t_rel, 10 * 10**9))
    assert np.ptp(np.diff(t_rel[:n])) > 2e6  # the file really is jittery (intervals vary > 2 ms)
    for name, k in (("gyro", 500.0), ("accel", 50.0)):
        # an independent local encode of the same rows says which rows send what
        enc = SigmaDeltaEncoder(3, k)
        expected = []
        for i in range(n):
            ch, cnt = enc.encode(table.groups[name][i])
            if ch.size:
                expected.append((int(t_rel[i]), ch.tolist(), cnt.tolist()))
        batches = got.of(name)
        base = batches[0].t_ns - expected[0][0]
        received = [(b.t_ns - base, b.channels.tolist(), b.counts.tolist()) for b in batches]
        assert received == expected, name
    # x-io accelerometer is in g: converted to m/s² (|a| ~ 9.8 at rest)
    acc = got.sums("accel", 3) / 50.0
    assert 8.0 < np.linalg.norm(acc) < 11.5


def test_vqf_replay_in_realtime_follows_the_speed(tmp_path, shared_data):
    path = shared_data / "vqf" / "imu_data.npz"
    cfg = _table_cfg(tmp_path, path, "duration_s=1.0", "source.speed=2.0")
    got, recv_s = _run_threaded(cfg)
    span_s = recv_s[-1] - recv_s[0]
    # 1 s of data at 2x real time takes ~0.5 s (generous margins: a shared, noisy machine)
    assert 0.35 <= span_s <= 1.5, span_s
    assert got.statuses[-1].metrics["groups"]["gyro"]["n_items"] == 286


def test_table_decimation_gives_each_group_its_rate(tmp_path, shared_data):
    path = shared_data / "vqf" / "imu_data.npz"
    cfg = _table_cfg(
        tmp_path,
        path,
        "source.realtime=false",
        "source.decimate=true",
        "duration_s=5",
        "groups.accel.rate_hz=100",
        "groups.mag.rate_hz=10",
    )
    got, _ = _run_threaded(cfg)
    items = {g: got.statuses[-1].metrics["groups"][g]["n_items"] for g in ("gyro", "accel", "mag")}
    assert items["gyro"] == 1429  # 1000 Hz > the file's 285.714 Hz: every row
    assert abs(items["accel"] - 500) <= 2 and abs(items["mag"] - 50) <= 1, items


# --------------------------------------------------------------------------- synthetic


def test_synthetic_motion_is_consistent_and_deterministic():
    m = SyntheticMotion(seed=3, noise={})
    h = 1e-4
    for t in (0.0, 0.7, 2.3):
        r0 = m.rotation(m.euler(t)[0])
        r1 = m.rotation(m.euler(t + h)[0])
        w = m.truth("gyro", t + h / 2)
        skew = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        np.testing.assert_allclose((r0.T @ r1 - np.eye(3)) / h, skew, atol=1e-3)
        assert abs(np.linalg.norm(m.truth("accel", t)) - 9.80665) < 1e-9
    a, b = SyntheticMotion(seed=5), SyntheticMotion(seed=5)
    for t_ns in (0, 1_000_000, 2_000_000):
        np.testing.assert_array_equal(a.sample("gyro", t_ns), b.sample("gyro", t_ns))


def test_synthetic_noise_is_one_draw_per_sample_across_blocks():
    """The noise is drawn a block at a time, and is the same numbers as one
    ``normal(0, sigma, 3)`` per sample from the (seed, group) generator, past a block's end;
    the truth is the formula's (``euler``: two sinusoids per axis)."""
    import zlib

    from spikefuse.drivers.motion import NOISE_BLOCK

    m = SyntheticMotion(seed=4, noise={"gyro": 0.01, "accel": 0.1})
    ref = {g: np.random.default_rng([4, zlib.crc32(g.encode())]) for g in ("gyro", "accel")}
    w = 2 * np.pi * m.freq_hz
    for i in range(NOISE_BLOCK + 20):
        t_ns = i * 1_000_000 + (i * 7919) % 1000
        for g in ("gyro", "accel", "mag"):
            got = m.sample(g, t_ns)
            noise = ref[g].normal(0.0, m.noise[g], size=3) if g in ref else 0.0
            assert np.array_equal(got, m.truth(g, t_ns / 1e9) + noise)
        t_s = t_ns / 1e9
        angles, rates = m.euler(t_s)
        np.testing.assert_allclose(angles, (m.amp * np.sin(w * t_s + m.phase)).sum(1), atol=1e-15)
        np.testing.assert_allclose(
            rates, (m.amp * w * np.cos(w * t_s + m.phase)).sum(1), atol=1e-15
        )


def test_synthetic_fast_runs_are_identical(tmp_path):
    def run_once(sub_dir: str) -> list[tuple]:
        d = tmp_path / sub_dir
        d.mkdir()
        cfg = load_driver_config(
            IMU,
            None,
            [
                f"endpoint=ipc://{d}/s.sock",
                "wait_for_subscribers=1",
                "source.realtime=false",
                "duration_s=0.5",
                "groups.gyro.scale=500",  # fine quanta: many batches to compare
                "groups.accel.scale=50",
            ],
        )
        got, _ = _run_threaded(cfg)
        t0 = min(b.t_ns for b in got.batches)
        rows = [
            (b.input, b.seq, b.t_ns - t0, b.channels.tolist(), b.counts.tolist())
            for b in got.batches
        ]
        return sorted(rows, key=lambda r: (r[0], r[1]))  # streams interleave freely

    first = run_once("a")
    assert len(first) > 300
    assert first == run_once("b")


def test_heartbeat_totals_equal_the_sum_of_every_count_sent(tmp_path):
    """The keyframe a receiver resyncs against: per input, the sum of all counts sent."""
    cfg = load_driver_config(
        IMU,
        None,
        [
            f"endpoint=ipc://{tmp_path}/s.sock",
            "wait_for_subscribers=1",
            "source.realtime=false",
            "duration_s=0.5",
            "groups.gyro.scale=500",
        ],
    )
    got, _ = _run_threaded(cfg)
    last = [h for h in got.heartbeats if h.totals][-1]
    for name in ("gyro", "accel", "mag"):
        want = got.sums(name, 3)
        tot = last.totals[name]
        assert np.array_equal(np.pad(tot, (0, 3 - tot.size)), want), name
    assert np.abs(last.totals["gyro"]).sum() > 0
