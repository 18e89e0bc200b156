"""Pieces of ``spikefuse bench latency``: the per-batch latency rule, the thread CPU
accounting, and the fixed-rate loop baseline as a real child process on ipc."""

from __future__ import annotations

import os
import time

import numpy as np

from spikefuse.benchmarks import bench_latency as bl


def test_per_batch_latency_first_command_at_or_after_batch():
    sent = np.array([100, 200, 300, 400, 500])
    # commands in receipt order; the refresh at 260 repeats cause 100
    t = np.array([150, 260, 330, 640])
    cause = np.array([100, 100, 300, 450])
    lat, n_unreflected = bl.per_batch_latency_us(sent, t, cause)
    # 100 -> 150; 200 and 300 -> 330 (cause 300); 400 -> 640 (cause 450); 500 never
    assert lat.tolist() == [0.05, 0.13, 0.03, 0.24]
    assert n_unreflected == 1
    lat, n = bl.per_batch_latency_us(sent, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert lat.size == 0 and n == 5


def test_cpu_ns_counts_threads_at_ns_resolution():
    # spin for 50 ms of this thread's own CPU time (wall time would depend on the load)
    c0 = bl.cpu_ns(os.getpid())
    t_end = time.thread_time_ns() + 50_000_000
    while time.thread_time_ns() < t_end:
        pass
    used = bl.cpu_ns(os.getpid()) - c0
    assert 0.045e9 < used < 2e9


def test_stream_is_reproducible_and_sized():
    a = bl.make_stream(10_000, 0.05, seed=1)
    b = bl.make_stream(10_000, 0.05, seed=1)
    assert len(a) == 50 and a[0][0].size == 10
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )
    assert not np.array_equal(a[0][0], bl.make_stream(10_000, 0.05, seed=2)[0][0])


def test_fixed_rate_loop_child_ticks_and_reflects_every_batch(tmp_path):
    """The 100 Hz loop child, fed 0.5 s of the 10k events/s stream, publishes a command per
    tick to a real console actuator; every batch is reflected within about one period."""
    r = bl.measure_loop(tmp_path, 100.0, 0.5, seed=0)
    st = r.extra
    assert st["ops_per_tick"] == bl.N_IN * bl.N_OUT + bl.N_OUT  # dense (relu in it) + output
    assert st["n_ticks"] >= 30 and st["n_batches"] == 500
    assert r.n_unreflected == 0 and r.batch_lat_us.size == 500
    # a batch waits for the next tick (<= 10 ms) plus transport; generous for a loaded host
    assert 1_000 < float(np.mean(r.batch_lat_us)) < 60_000
    assert r.ops_per_s > 0.5 * 100 * st["ops_per_tick"]


def test_round_ratios_are_taken_within_each_round():
    """A load change between rounds moves every chain of that round together: the median of
    per-round ratios keeps the ratio, pooling the p50s across rounds would not."""
    from spikefuse.benchmarks._common import BenchResult

    rounds = [
        {"floor": 100.0, "core": 120.0, "sdk": 150.0, "zenoh": 80.0},
        {"floor": 400.0, "core": 480.0, "sdk": 600.0, "zenoh": 320.0},  # a loaded round
        {"floor": 100.0, "core": 130.0, "sdk": 140.0, "zenoh": 100.0},
    ]
    res = BenchResult("t", header=("a",))
    bl._report_rounds(res, rounds)
    assert res.fields["rounds"] == 3
    assert res.fields["p50_ratio_vs_floor_10k_median"] == 1.2
    assert res.fields["sdk_p50_ratio_vs_floor_median"] == 1.5
    assert res.fields["sdk_p50_ratio_vs_zenoh_median"] == 1.875
    assert res.fields["zenoh_p50_ratio_vs_floor_median"] == 0.8
    no_zenoh = BenchResult("t", header=("a",))
    bl._report_rounds(no_zenoh, [{"floor": 1.0, "core": 2.0, "sdk": 3.0}])
    assert "sdk_p50_ratio_vs_zenoh_median" not in no_zenoh.fields  # zenoh not installed
    assert no_zenoh.fields["sdk_p50_ratio_vs_floor_median"] == 3.0


def test_round_ratios_of_the_sdk_chain_over_unix():
    """The SDK chain and the floor over unix:// get their own median ratios, within each
    round, against the floor, the same chain over ipc and zenoh; the ipc fields stay."""
    from spikefuse.benchmarks._common import BenchResult

    rounds = [
        {"floor": 100.0, "sdk": 150.0, "sdk_unix": 75.0, "floor_unix": 50.0, "zenoh": 80.0},
        {"floor": 400.0, "sdk": 600.0, "sdk_unix": 360.0, "floor_unix": 240.0, "zenoh": 320.0},
        {"floor": 100.0, "sdk": 140.0, "sdk_unix": 70.0, "floor_unix": 60.0, "zenoh": 100.0},
    ]
    res = BenchResult("t", header=("a",))
    bl._report_rounds(res, rounds)
    assert res.fields["sdk_p50_ratio_vs_floor_median"] == 1.5
    assert res.fields["sdk_unix_p50_ratio_vs_floor_median"] == 0.75
    assert res.fields["sdk_unix_p50_ratio_vs_sdk_median"] == 0.5
    assert res.fields["sdk_unix_p50_ratio_vs_zenoh_median"] == 0.938  # 75/80, 360/320, 70/100
    assert res.fields["sdk_unix_p50_us_median"] == 75.0
    assert res.fields["floor_unix_p50_ratio_vs_floor_median"] == 0.6
    assert res.fields["floor_unix_p50_ratio_vs_zenoh_median"] == 0.625  # 50/80, 240/320, 60/100
    assert "p50_ratio_vs_floor_10k_median" not in res.fields  # no core chain in these rounds
    assert "SDK unix" in res.notes[-1]


def test_sdk_chain_endpoints_per_scheme(tmp_path):
    """ipc: the configs' defaults (no endpoint written); unix: every hop named."""
    import yaml

    d, c = bl._write_sdk_configs(tmp_path, 1.0, "ipc")
    assert "endpoint" not in yaml.safe_load(d.read_text())
    d, c = bl._write_sdk_configs(tmp_path, 1.0, "unix")
    drv, core = yaml.safe_load(d.read_text()), yaml.safe_load(c.read_text())
    assert drv["endpoint"] == core["inputs"]["gyro"]["endpoint"] == f"unix://{tmp_path}/u-imu.sock"
    assert core["endpoint"] == f"unix://{tmp_path}/u-sdkcore.sock"
