"""The driver SDK: pacing, config merging, batching, retries with backoff and degraded
heartbeats, NaN counting, source restarts, the CLI, and the documented example driver run
as a real process. Publishing always goes through a real Publisher/Subscriber on ipc."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _drivers_util import STOP_WITHIN_S, Received, collect, run_in_thread, start_driver, stop_driver

from spikefuse.errors import ConfigError, SensorError
from spikefuse.sdk import (
    DriverConfig,
    Events,
    Pacer,
    RetryConfig,
    Sample,
    driver,
    load_driver_config,
    resolve_kind,
)
from spikefuse.transport.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a test driver


class RampConfig(DriverConfig):
    """A real (tiny) driver: channel 0 ramps k*slope, channel 1 is its negative."""

    default_groups = {"a": {"scale": 10.0, "rate_hz": 200.0}}
    name: str = "ramp"
    realtime: bool = True
    slope: float = 0.01
    fail_reads: list[int] = []
    nan_reads: list[int] = []


@driver("ramp", RampConfig)
def RAMP(cfg: RampConfig, ctx):
    """Ramp test driver."""
    k = 0

    def read(t_ns: int):
        nonlocal k
        k += 1
        if k in cfg.fail_reads:
            raise SensorError(f"read {k} failed (simulated EIO)")
        v = k * cfg.slope
        return [np.nan, -v] if k in cfg.nan_reads else [v, -v]

    yield from ctx.poll({"a": read}, realtime=cfg.realtime)


def _cfg(tmp_path: Path, *overrides: str) -> RampConfig:
    ep = f"ipc://{tmp_path}/r.sock"
    return load_driver_config(RAMP, None, [f"endpoint={ep}", "wait_for_subscribers=1", *overrides])


def _run_threaded(spec, cfg) -> Received:
    return run_in_thread(spec, cfg)[0]


# --------------------------------------------------------------------------- pacing


def test_pacer_deadlines_never_drift_and_skips_are_counted():
    p = Pacer(1_000_000, start_ns=10)
    assert p.deadline_ns == 10
    assert [p.advance() for _ in range(3)] == [1_000_010, 2_000_010, 3_000_010]
    # late by 2.5 periods at the next tick: two ticks skipped, back on the grid
    p.advance(now_ns=6_500_010)
    assert p.deadline_ns == 6_000_010 and p.n_skipped == 2
    p.defer(20_000_000)
    assert p.deadline_ns == 20_000_000
    p.resync(20_000_000)
    assert p.deadline_ns == 20_000_010 and p.n_skipped == 2
    with pytest.raises(ValueError):
        Pacer(0, 0)


def test_retry_backoff_is_exponential_and_capped():
    r = RetryConfig(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    assert [r.backoff_s(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    with pytest.raises(ValueError):
        RetryConfig(initial_backoff_s=2.0, max_backoff_s=1.0)


# --------------------------------------------------------------------------- config


def test_group_overrides_merge_with_defaults_and_errors_name_the_place(tmp_path):
    cfg = load_driver_config(RAMP, None, ["groups.a.rate_hz=50"])
    assert cfg.groups["a"].rate_hz == 50 and cfg.groups["a"].scale == 10.0
    assert cfg.input_of("a") == "a"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ramp\ngroups:\n  a:\n    scale: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4: groups.a.scale"):
        load_driver_config(RAMP, bad)
    bad.write_text("groups:\n  b: {scale: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown channel group\(s\) \['b'\]"):
        load_driver_config(RAMP, bad)
    with pytest.raises(ConfigError, match="unknown field"):
        load_driver_config(RAMP, None, ["colour=red"])
    with pytest.raises(ConfigError, match="sensor name"):
        load_driver_config(RAMP, None, ["name=a/b"])
    rel = tmp_path / "sub" / "c.yaml"
    rel.parent.mkdir()
    rel.write_text("run_dir: runs\n")
    cfg = load_driver_config(RAMP, rel)
    assert cfg.resolved_endpoint() == f"ipc://{tmp_path}/sub/runs/ramp.sock"


# --------------------------------------------------------------------------- batching


def test_latency_zero_sends_every_sample_and_receiver_reconstructs(tmp_path):
    cfg = _cfg(tmp_path, "realtime=false", "duration_s=0.25", "max_batch_latency_ms=0")
    got = _run_threaded(RAMP, cfg)
    batches = got.of("a")
    n_samples = 50  # 0.25 s at 200 Hz, virtual time
    assert [b.seq for b in batches] == list(range(len(batches)))
    assert all(b.dt_ns is None for b in batches)  # one sample per batch
    assert len({b.t_ns for b in batches}) == len(batches)
    # receiver integral == scale * last value (|error| <= 1/2 quantum)
    total = got.sums("a", 2)
    assert (
        abs(total[0] - 10 * n_samples / 100) <= 0.5 and abs(total[1] + 10 * n_samples / 100) <= 0.5
    )
    final = got.statuses[-1].metrics["groups"]["a"]
    assert final["n_items"] == n_samples and final["n_batches"] == len(batches)
    last = got.heartbeats[-1]  # the end of the stream: once, last, with the final totals
    assert last.detail == "stopped" and last.state == "ended"
    assert [h.state for h in got.heartbeats].count("ended") == 1


def test_batches_span_at_most_the_latency_with_exact_event_times(tmp_path):
    cfg = _cfg(tmp_path, "realtime=false", "duration_s=0.5", "max_batch_latency_ms=20", "slope=0.1")
    got = _run_threaded(RAMP, cfg)
    batches = got.of("a")
    period_ns = 5_000_000
    # one count per channel per sample; 4 samples (0, 5, 10, 15 ms) per 20 ms batch
    assert len(batches) == 100 // 4
    times = []
    for b in batches:
        assert b.dt_ns is not None and sorted(set(b.dt_ns.tolist())) == [
            0,
            5_000_000,
            10_000_000,
            15_000_000,
        ]
        times.extend((b.t_ns + b.dt_ns).tolist())
    t0 = min(times)
    assert sorted(set(times)) == [t0 + k * period_ns for k in range(100)]  # exact event times
    assert got.sums("a", 2).tolist() == [100, -100]


def _stepped(data_clock: bool):
    """40 samples 1 ms of data time apart, 3 ms of wall time apart; channel 0 steps by one
    count a sample (count k at sample k), channel 1 by minus one."""

    @driver("stepped", RampConfig)
    def stepped(cfg, ctx):
        t0 = 1_000_000_000
        clock = [t0]
        if data_clock:
            ctx.stamp_heartbeats(lambda: clock[0])
        for i in range(40):
            clock[0] = t0 + i * 1_000_000
            yield Sample("a", clock[0], np.array([0.1 * i, -0.1 * i]))
            if not ctx.wait_until(time.monotonic_ns() + 3_000_000):
                return

    return stepped


@pytest.mark.parametrize("data_clock", [False, True])
def test_a_data_clock_driver_batches_on_data_time_only(tmp_path, data_clock):
    """A lock-stepped driver's samples come faster or slower than wall time; on a data
    clock (``stamp_heartbeats``) what is batched together follows from the data alone, so
    two runs send the same batches. On the wall clock, a slow producer's batches are cut
    by the wall-clock deadline instead."""
    cfg = _cfg(tmp_path, "max_batch_latency_ms=5", "heartbeat_period_s=60")
    got = _run_threaded(_stepped(data_clock), cfg)
    batches = got.of("a")
    starts_ms = [(b.t_ns - 1_000_000_000) // 1_000_000 for b in batches]
    if data_clock:  # sample 0 carries no count; then 5 ms of data a batch
        assert starts_ms == [1, 6, 11, 16, 21, 26, 31, 36], starts_ms
    else:  # every sample waited 3 ms of wall time: the 5 ms deadline cut them short
        assert len(batches) > 9, starts_ms
    assert got.sums("a", 2).tolist() == [39, -39]


def test_a_data_clock_heartbeat_follows_everything_up_to_its_time(tmp_path):
    """On a data clock a periodic heartbeat flushes what is pending first: its totals are
    every count up to its data time (a ``clock: data`` core releases up to there)."""
    cfg = _cfg(tmp_path, "max_batch_latency_ms=20", "heartbeat_period_s=0.005")
    got = _run_threaded(_stepped(True), cfg)
    checked = 0
    for hb in got.heartbeats:
        k = (hb.t_ns - 1_000_000_000) // 1_000_000
        if hb.totals is not None:
            assert hb.totals["a"].tolist() == [k, -k], (k, hb.totals)
            checked += 1
    assert checked >= 5 and len(got.of("a")) > 5


def test_max_batch_events_splits_batches(tmp_path):
    cfg = _cfg(
        tmp_path,
        "realtime=false",
        "duration_s=0.5",
        "max_batch_latency_ms=100",
        "max_batch_events=1",
    )
    got = _run_threaded(RAMP, cfg)
    assert got.of("a") and all(b.n_events == 1 for b in got.of("a"))


# --------------------------------------------------------------------------- health


def test_nan_samples_are_skipped_and_counted(tmp_path):
    cfg = _cfg(tmp_path, "realtime=false", "duration_s=0.2", "nan_reads=[10,11,12]")
    got = _run_threaded(RAMP, cfg)
    final = got.statuses[-1].metrics
    assert final["groups"]["a"]["n_skipped_nonfinite"] == 3
    assert final["groups"]["a"]["n_items"] == 40
    total = got.sums("a", 2)
    assert total.tolist() == [4, -4]  # 40 samples: 0.40 * 10 on both channels, nothing lost
    assert [h.state for h in got.heartbeats] == ["ok"] * (len(got.heartbeats) - 1) + ["ended"]


def test_read_errors_retry_with_backoff_and_degrade_then_recover(tmp_path):
    cfg = _cfg(
        tmp_path,
        "duration_s=1.0",
        "heartbeat_period_s=0.25",
        "fail_reads=[20,21,22,23,24,25]",
        "retry.initial_backoff_s=0.02",
        "retry.max_backoff_s=0.05",
        "retry.failed_after=4",
    )
    got = _run_threaded(RAMP, cfg)
    states = [h.state for h in got.heartbeats]
    first_deg = states.index("degraded")
    first_fail = states.index("failed")
    assert first_deg < first_fail
    assert "ok" in states[first_fail:]  # recovered after the sensor came back
    deg = got.heartbeats[first_deg]
    assert "read 20 failed (simulated EIO)" in deg.detail and "1 consecutive" in deg.detail
    assert "4 consecutive" in got.heartbeats[first_fail].detail
    # backoffs after failures 1, 2, 3: 0.02 + 0.04 + 0.05 s (capped) >= 0.11 s
    gap_s = (got.heartbeats[first_fail].t_ns - deg.t_ns) / 1e9
    assert 0.10 <= gap_s < 1.0, gap_s
    final = got.statuses[-1].metrics
    assert final["n_read_errors"] == 6 and final["n_recoveries"] == 1
    assert final["state"] == "ok"
    assert final["groups"]["a"]["n_items"] > 100  # kept running: ~200 Hz for 1 s


def test_source_errors_restart_the_source_after_backoff(tmp_path):
    attempts: list[float] = []

    @driver("opener", RampConfig)
    def opener(cfg, ctx):
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise OSError(5, "device not ready")
        yield Sample("a", ctx.now_ns(), np.array([1.0, 2.0]))

    cfg = _cfg(tmp_path, "retry.initial_backoff_s=0.05")
    got = _run_threaded(opener, cfg)
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.045 and attempts[2] - attempts[1] >= 0.095
    assert got.sums("a", 2).tolist() == [10, 20]
    assert "degraded" in [h.state for h in got.heartbeats]
    assert "device not ready" in " ".join(h.detail for h in got.heartbeats)
    assert got.statuses[-1].metrics["n_source_restarts"] == 2


def test_heartbeats_follow_their_own_deadline(tmp_path):
    cfg = _cfg(tmp_path, "duration_s=0.8", "heartbeat_period_s=0.1", "groups.a.rate_hz=20")
    got = _run_threaded(RAMP, cfg)
    periodic = [h for h in got.heartbeats if h.detail != "stopped"]
    assert 4 <= len(periodic) <= 10
    gaps = np.diff([h.t_ns for h in periodic]) / 1e9
    # on a 0.1 s grid of their own (not the 0.05 s sample period): a late heartbeat (a busy
    # machine) shortens the next gap but never shifts the grid, so the median gap stays at
    # the period; single gaps only get the margin of a loaded machine
    assert 0.08 <= float(np.median(gaps)) <= 0.12, gaps
    assert np.all((gaps > 0.0) & (gaps < 0.45)), gaps
    assert [h.seq for h in got.heartbeats] == list(range(len(got.heartbeats)))


# --------------------------------------------------------------------------- CLI + process


def test_cli_errors_exit_2_with_a_clear_message(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "spikefuse", "driver", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = run("nosuchkind")
    assert r.returncode == 2 and "unknown driver kind 'nosuchkind'" in r.stderr
    bad = tmp_path / "imu.yaml"
    bad.write_text("groups:\n  gyro:\n    scale: -1\n")
    r = run("imu", "--config", str(bad))
    assert r.returncode == 2 and f"{bad}:3: groups.gyro.scale" in r.stderr
    r = run("imu", "--set", "groups.gyro.rate_hz=2", "--print-config")
    assert r.returncode == 0 and "rate_hz: 2" in r.stdout


def _doc_example(tmp_path: Path) -> tuple[Path, Path]:
    text = (REPO / "docs" / "writing-a-driver.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = next(b for b in blocks if "@driver(" in b)
    n_lines = len([ln for ln in code.splitlines() if ln.strip()])
    assert 20 <= n_lines <= 40, n_lines
    yaml_block = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)[0]
    src = tmp_path / "thermal_zone.py"
    src.write_text(code)
    cfg = tmp_path / "thermal_zone.yaml"
    cfg.write_text(yaml_block)
    return src, cfg


def test_documented_example_driver_runs_as_a_real_process(tmp_path):
    src, cfg = _doc_example(tmp_path)
    zone = tmp_path / "temp"
    zone.write_text("41000\n")  # millidegrees, like /sys/class/thermal/thermal_zone0/temp
    ep = f"ipc://{tmp_path}/t.sock"
    overrides = [
        f"endpoint={ep}",
        f"path={zone}",
        "heartbeat_period_s=0.2",
        "wait_for_subscribers=1",
    ]
    got = Received()
    with Subscriber(ep) as sub:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(src),
                "--config",
                str(cfg),
                *sum((["--set", o] for o in overrides), []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert collect(sub, got, lambda r: len(r.of("temperature")) >= 1, 20.0), "no batch"
            zone.write_text("43500\n")
            assert collect(sub, got, lambda r: r.sums("temperature", 1)[0] == 435, 10.0), got.sums(
                "temperature", 1
            )
            zone.write_text("garbage\n")  # a bad reading: retried, degraded, no crash
            assert collect(
                sub, got, lambda r: r.heartbeats and r.heartbeats[-1].state != "ok", 10.0
            )
            assert "not a number" in got.heartbeats[-1].detail
            zone.write_text("42000\n")
            assert collect(sub, got, lambda r: r.heartbeats[-1].state == "ok", 10.0)
        finally:
            rc, took_s, err = stop_driver(proc, signal.SIGINT)
        assert rc == 0, err
        assert took_s < STOP_WITHIN_S, took_s
    # the same file also runs through the CLI as file.py:attr
    got2 = Received()
    ep2 = f"ipc://{tmp_path}/t2.sock"
    with Subscriber(ep2) as sub:
        proc = start_driver(
            f"{src}:THERMAL_ZONE", cfg, f"endpoint={ep2}", f"path={zone}", "wait_for_subscribers=1"
        )
        try:
            assert collect(sub, got2, lambda r: len(r.of("temperature")) >= 1, 20.0)
        finally:
            rc, _, err = stop_driver(proc)
        assert rc == 0, err
    assert got2.sums("temperature", 1)[0] == 420


def test_builtin_kinds_resolve():
    from spikefuse.drivers import KINDS

    for kind in KINDS:
        spec = resolve_kind(kind)
        assert spec.kind == kind and issubclass(spec.config, DriverConfig)


def test_example_configs_validate():
    """Every configs/drivers/<kind>_*.yaml loads into its driver's config model."""
    from spikefuse.drivers import KINDS

    files = sorted((REPO / "configs" / "drivers").glob("*.yaml"))
    assert len(files) >= 9
    for f in files:
        kind = max((k for k in KINDS if f.stem.startswith(k + "_")), key=len)
        cfg = load_driver_config(resolve_kind(kind), f)
        src = getattr(cfg, "source", None)
        path = getattr(src, "path", None)
        if path is not None and "/path/to/" not in str(path):
            assert cfg.resolve_path(path).is_file(), f  # the shared recordings, in place


class FramesConfig(DriverConfig):
    """Events the driver encoded itself from 4x5 frames (a simulated camera)."""

    default_groups = {"cam": {"scale": 1.0}, "ev": {"scale": 1.0}}
    name: str = "frames"


@driver("frames_pre", FramesConfig)
def FRAMES(cfg: FramesConfig, ctx):
    """Pre-encoded events: a camera with frames, an event camera without."""
    t0 = ctx.now_ns()
    for k in range(10):
        t = t0 + k * 1_000_000
        ch, co = np.array([k % 20], np.int32), np.array([1], np.int32)
        yield Events("cam", t, ch, co, n_values=20)
        yield Events("ev", t, ch, co)
    yield Events("cam", t + 1, ch, co, n_values=-3)  # counted as a bad item, not sent


def test_pre_encoded_events_report_the_values_they_encode(tmp_path):
    """The driver's Status says how many values pre-encoded events stand for (a simulated
    camera's pixels), so the core's summary can set events against values; an event
    camera's events stand for none (0, as before)."""
    from spikefuse.core.report import stream_rates

    cfg = load_driver_config(
        FRAMES, None, [f"endpoint=ipc://{tmp_path}/f.sock", "wait_for_subscribers=1"]
    )
    got = _run_threaded(FRAMES, cfg)
    assert len(got.of("cam")) == 10 and len(got.of("ev")) == 10
    groups = got.statuses[-1].metrics["groups"]
    assert groups["cam"]["values_per_item"] == 20 and groups["cam"]["n_items"] == 11
    assert groups["cam"]["n_bad_items"] == 1
    assert groups["ev"]["values_per_item"] == 0
    first = got.statuses[-1]
    zero = {g: {**m, "n_items": 0, "n_events": 0} for g, m in groups.items()}
    rates = stream_rates(type(first)(first.source, 0, first.t_ns - 10**9, {"groups": zero}), first)
    assert rates["cam"] == (11.0, 220.0, 10.0)
    assert "ev" not in rates
