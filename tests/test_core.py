"""FusionCore and MotorChannel on the real engine (no sockets: time is passed in)."""

from __future__ import annotations

import numpy as np
import pytest
from _core_util import small_graph

from spikefuse.core import CoreConfig, FusionCore, LatencyHistogram, MotorChannel
from spikefuse.core.config import ActuatorMap
from spikefuse.engine import Engine
from spikefuse.errors import ConfigError
from spikefuse.graph import Graph
from spikefuse.protocol import (
    EventBatch,
    Heartbeat,
    MotorCommand,
    Status,
    decode,
    encode,
    topic_of,
)

MS = 1_000_000


@pytest.fixture(autouse=True, params=["python", "compiled"])
def path(request):
    """Every test here runs twice: messages on the Python path, and fed as the daemon feeds
    them (the compiled path first, as encoded payloads; the Python path where it declines)."""
    PATH[0] = request.param
    yield request.param
    PATH[0] = "python"


PATH = ["python"]


def make_core(tmp_path, inputs=None, actuators=None, integrator=False, **kw):
    gpath = small_graph(tmp_path / "g.npz", with_integrator=integrator)
    cfg = CoreConfig(
        graph=gpath,
        inputs=inputs or {"x": {"sensor": "s", "timeout_s": 0.2}},
        actuators=actuators or {"m": {"output": "y"}},
        **kw,
    )
    graph = Graph.load(gpath).resolve()
    sent = []
    compiled = PATH[0] == "compiled"
    core = FusionCore(
        cfg, graph, Engine(graph), 0, lambda msg: sent.append(msg) or True, fast_path=compiled
    )
    if compiled:
        _feed_like_the_daemon(core, sent)
    return core, sent


def _feed_like_the_daemon(core: FusionCore, sent: list) -> None:
    python_path = core.handle

    def handle(msg, now_ns: int) -> None:
        if isinstance(msg, EventBatch) and core.receive(topic_of(msg), encode(msg), now_ns):
            return
        python_path(msg, now_ns)

    core.handle = handle
    core.send_payload = lambda topic, data: sent.append(decode(data)) or True


def batch(seq, t_ns, channels, counts, scale=1.0, sensor="s", inp="x"):
    return EventBatch(
        sensor, seq, t_ns, inp, scale, np.array(channels, np.int32), np.array(counts, np.int32)
    )


def motors(sent):
    return [m for m in sent if isinstance(m, MotorCommand)]


def test_batch_becomes_motor_command_with_cause(tmp_path):
    core, sent = make_core(tmp_path)
    core.service(0)
    n0 = len(motors(sent))
    core.handle(batch(0, 5 * MS, [0, 2], [4, -2]), 5 * MS + 100)
    core.service(5 * MS + 200)
    cmds = motors(sent)[n0:]
    assert len(cmds) == 1
    assert cmds[0].cause_t_ns == 5 * MS
    np.testing.assert_array_equal(cmds[0].values, [2.0, 0.0, -1.0, 0.0])


def test_scale_conversion_keeps_integrated_value(tmp_path):
    core, sent = make_core(tmp_path)
    # scale 4 counts per unit -> graph input scale 1: 3 counts of 0.25 = 0.75 -> rounds to 1
    for i in range(8):
        core.handle(batch(i, (i + 1) * MS, [1], [1], scale=4.0), (i + 1) * MS)
    core.service(10 * MS)
    # 8 * 0.25 = 2.0 exactly -> y = 0.5 * 2 = 1.0
    assert motors(sent)[-1].values[1] == 1.0
    assert core.inputs["x"].sent[1] == 2


def test_unknown_input_bad_channel_duplicate_counted(tmp_path):
    core, sent = make_core(tmp_path)
    core.handle(batch(0, MS, [0], [2], inp="nope"), MS)
    core.handle(batch(0, MS, [0, 99], [2, 5]), MS)
    core.handle(batch(0, MS, [0], [2]), MS)  # duplicate seq
    core.handle(batch(5, 2 * MS, [0], [2]), 2 * MS)
    core.handle(batch(3, 2 * MS, [0], [2]), 2 * MS)  # seq back: counted, input reset
    assert core.drops == {"unknown_input": 1, "bad_channel": 1, "duplicate": 1}
    st = core.inputs["x"]
    assert st.n_out_of_order == 1 and st.n_duplicate == 1
    assert st.n_resets == 1 and st.sent[0] == 2
    core.handle(Status("x", 0, 0, {}), 3 * MS)
    assert core.drops["unexpected_kind"] == 1


def test_sensor_restart_resets_input(tmp_path):
    core, sent = make_core(tmp_path)
    core.handle(batch(0, MS, [0], [4]), MS)
    core.handle(batch(1, 2 * MS, [0], [2]), 2 * MS)
    core.handle(batch(0, 3 * MS, [0], [1]), 3 * MS)  # the driver restarted (encoder from 0)
    assert core.inputs["x"].n_resets == 1
    core.service(4 * MS)
    assert motors(sent)[-1].values[0] == 0.5


def test_reorder_window_processes_in_timestamp_order(tmp_path):
    core, sent = make_core(tmp_path, inputs={"x": {"sensor": "s", "reorder_window_ms": 5}})
    core.handle(batch(0, 10 * MS, [0], [2]), 11 * MS)
    core.handle(batch(1, 8 * MS, [1], [2]), 11 * MS)
    core.service(12 * MS)
    assert core.engine.counters["events_in"] == 0  # still held
    assert core.next_wake_ns() <= 13 * MS
    core.service(13 * MS)  # releases t=8
    assert core.engine.now == 8 * MS
    core.service(15 * MS)  # releases t=10
    assert core.engine.now == 10 * MS
    core.handle(batch(2, 1 * MS, [2], [2]), 16 * MS)  # later than the window: at once
    assert core.inputs["x"].n_late == 1
    assert core.inputs["x"].n_clamped == 1  # engine time never goes back
    assert core.engine.now == 10 * MS


def test_stale_input_forces_safe_values_and_recovers(tmp_path):
    core, sent = make_core(
        tmp_path, actuators={"m": {"output": "y", "safe_values": [9, 9, 9, 9], "clamp": [-10, 10]}}
    )
    core.handle(batch(0, MS, [0], [4]), MS)
    core.service(MS)
    assert core.next_wake_ns() <= MS + 200 * MS + 1
    core.service(MS + 201 * MS)
    assert core.degraded
    assert list(motors(sent)[-1].values) == [9, 9, 9, 9]
    assert core.status_metrics(MS + 202 * MS)["state"] == "degraded"
    core.handle(Heartbeat("s", 0, 0, "ok"), 300 * MS)
    core.service(300 * MS)
    assert not core.degraded
    assert list(motors(sent)[-1].values) == [2, 0, 0, 0]


def test_integrator_crossings_wake_the_core(tmp_path):
    core, sent = make_core(tmp_path, actuators={"m": {"output": "yi"}}, integrator=True)
    core.handle(batch(0, MS, [0], [5]), MS)  # slope 5/s: a 0.1 step every 20 ms
    dl = core.engine.next_deadline()
    assert dl is not None and MS < dl <= 25 * MS
    assert core.next_wake_ns() <= dl
    core.service(dl)
    cmd = motors(sent)[-1]
    assert cmd.values[0] == pytest.approx(0.1)
    assert cmd.cause_t_ns == dl


def test_motor_clamp_slew_and_min_interval():
    cfg = ActuatorMap(
        output="y", clamp=(-1.0, 1.0), max_rate_per_s=10.0, slew_step_ms=10, min_interval_ms=0
    )
    m = MotorChannel("m", cfg, 2, refresh_hz=20, now_ns=0)
    assert m.poll(0) is not None  # initial safe values
    m.set_output(np.array([5.0, -0.5]), 0, 0)
    assert m.n_clamped == 1
    assert m.due_ns() == 10 * MS
    v = m.poll(10 * MS)
    np.testing.assert_allclose(v, [0.1, -0.1])  # 10/s * 10 ms
    v = None
    t = 10 * MS
    while not m.at_rest:
        t = m.due_ns()
        v = m.poll(t)
    np.testing.assert_allclose(v, [1.0, -0.5])
    assert 95 * MS <= t <= 110 * MS  # 1.0 at 10/s
    cfg2 = ActuatorMap(output="y", min_interval_ms=10)
    m2 = MotorChannel("m", cfg2, 1, refresh_hz=20, now_ns=0)
    m2.poll(0)
    m2.set_output(np.array([1.0]), 0, 1 * MS)
    m2.set_output(np.array([2.0]), 0, 2 * MS)
    assert m2.poll(5 * MS) is None
    assert m2.poll(10 * MS)[0] == 2.0
    assert m2.n_coalesced == 1
    assert m2.poll(20 * MS) is None and m2.poll(60 * MS) is not None  # 20 Hz refresh


def test_bad_actuator_config_names_field(tmp_path):
    with pytest.raises(ConfigError, match="actuators.m.output"):
        make_core(tmp_path, actuators={"m": {"output": "nope"}})
    with pytest.raises(ConfigError, match="inputs.q"):
        make_core(tmp_path, inputs={"q": {"sensor": "s"}})
    with pytest.raises(ConfigError, match="safe_values"):
        make_core(tmp_path, actuators={"m": {"output": "y", "safe_values": [1, 2]}})


def test_latency_histogram_percentiles():
    h = LatencyHistogram()
    for us in range(1, 1001):
        h.add(us * 1000)
    assert h.n == 1000 and h.max_us == 1000.0
    assert 500 <= h.percentile_us(50) <= 500 * 1.1
    assert 990 <= h.percentile_us(99) <= 1000
    s = h.summary()
    assert s["mean_us"] == pytest.approx(500.5)


def test_status_has_rates_drops_latency(tmp_path):
    core, sent = make_core(tmp_path)
    for i in range(10):
        core.handle(batch(i, i * MS + MS, [i % 4], [2]), i * MS + MS)
        core.service(i * MS + MS)
    st = core.publish_status(1000 * MS)
    m = st.metrics
    assert m["totals"]["n_batches"] == 10
    assert m["rates"]["batches_per_s"] == pytest.approx(10.0, rel=0.01)
    assert m["latency_us"]["n"] >= 1
    assert "spikes_per_s" in m and m["engine_ops_per_s"] > 0
    assert isinstance(sent[-1], Status) and sent[-1].source == "core"


def test_histogram_bucket_matches_searchsorted():
    from spikefuse.core.stats import EDGES_US, bucket_of

    rng = np.random.default_rng(3)
    us = np.concatenate(
        [
            EDGES_US,
            np.nextafter(EDGES_US, 0),
            np.nextafter(EDGES_US, np.inf),
            10 ** rng.uniform(-3, 8, 20_000),
            [0.0, 0.5, 1e12],
        ]
    )
    expected = np.searchsorted(EDGES_US, us, side="right")
    got = np.array([bucket_of(float(u)) for u in us])
    assert np.array_equal(got, expected)


def test_histogram_merge_and_negative_latency():
    a, b = LatencyHistogram(), LatencyHistogram()
    for us in range(1, 501):
        a.add(us * 1000)
    for us in range(501, 1001):
        b.add(us * 1000)
    b.add(-5)  # a clock oddity counts as 0 us, never as a crash
    a.merge(b)
    assert a.n == 1001 and a.max_us == 1000.0
    assert 500 <= a.percentile_us(50) <= 550


def test_input_counts_tracked_across_folds_and_reset(tmp_path):
    """Same-scale batches are folded into ``sent`` lazily: the totals stay exact across
    many folds, and a sender restart still brings the engine's input back to zero."""
    core, sent = make_core(tmp_path)
    st = core.inputs["x"]
    rng = np.random.default_rng(0)
    total = np.zeros(st.size, np.int64)
    n = 3 * st.FOLD_EVERY + 7
    for i in range(n):
        ch = rng.integers(0, st.size, 5)
        co = rng.choice([-1, 1, 2], 5)
        np.add.at(total, ch, co)
        core.handle(batch(i, (i + 1) * MS, ch, co), (i + 1) * MS)
    assert np.array_equal(st.sent, total)
    assert np.array_equal(np.rint(core.engine.node_value("x")).astype(np.int64), total)
    core.handle(batch(0, (n + 1) * MS, [0], [1]), (n + 1) * MS)  # seq back: restart
    assert st.n_resets == 1
    assert core.engine.node_value("x").tolist() == [1.0] + [0.0] * (st.size - 1)


def test_same_values_semantics():
    from spikefuse.core.motor import same_values

    a = np.array([0.0, 1.5, -2.0])
    assert same_values(a, a.copy()) and same_values(np.array([-0.0]), np.array([0.0]))
    assert not same_values(a, np.array([0.0, 1.5, -2.5]))
    assert not same_values(np.array([np.nan]), np.array([np.nan]))  # as np.array_equal
    big = np.arange(1000.0)
    other = big.copy()
    other[-1] = -1
    assert same_values(big, big.copy()) and not same_values(big, other)


def test_two_outputs_routed_to_their_own_motors(tmp_path):
    core, sent = make_core(
        tmp_path, actuators={"a": {"output": "y"}, "b": {"output": "yi"}}, integrator=True
    )
    core.service(0)
    n0 = len(motors(sent))
    core.handle(batch(0, MS, [0], [4]), MS)  # y changes at once; yi only ramps later
    core.service(MS + 10)
    new = motors(sent)[n0:]
    assert [m.actuator for m in new] == ["a"] and new[0].cause_t_ns == MS
    assert new[0].values[0] == 2.0
    dl = core.engine.next_deadline()
    core.service(dl)
    last = motors(sent)[-1]
    assert last.actuator == "b" and last.cause_t_ns == dl and last.values[0] > 0


def test_heartbeat_totals_restore_counts_lost_on_the_way(tmp_path):
    """Change-events integrate: a lost batch would bias the input for good. The driver's
    running totals in its heartbeat let the core apply exactly what it missed."""
    core, sent = make_core(tmp_path)
    core.service(0)
    stream = [([0, 1], [4, 2]), ([0], [-2]), ([2, 3], [6, -4]), ([1], [8])]
    totals = np.zeros(4, np.int64)
    for i, (ch, co) in enumerate(stream):
        np.add.at(totals, ch, co)
        if i != 2:  # batch 2 is lost (full queue, reconnect, ...)
            core.handle(batch(i, (i + 1) * MS, ch, co), (i + 1) * MS)
    assert np.array_equal(core.engine.output_value("y"), [1.0, 5.0, 0.0, 0.0])
    hb = Heartbeat("s", 0, 6 * MS, "ok", "", {"x": totals.copy()})
    core.handle(hb, 6 * MS)
    core.service(6 * MS + 1)
    # y = 0.5 * x with x = totals: the lost (+6, -4) on channels 2, 3 is back
    assert np.array_equal(core.engine.output_value("y"), 0.5 * totals)
    assert motors(sent)[-1].values.tolist() == (0.5 * totals).tolist()
    st = core.inputs["x"]
    assert (st.n_resyncs, st.n_resync_counts) == (1, 10)
    assert st.n_gaps == 1 and st.n_startup_resyncs == 0  # a loss, not start-up catch-up
    core.handle(Heartbeat("s", 1, 7 * MS, "ok", "", {"x": totals.copy()}), 7 * MS)
    assert st.n_resyncs == 1  # in agreement: nothing to do


def test_heartbeat_totals_recover_a_restart_whose_first_batches_were_missed(tmp_path):
    """A restarted driver's encoder starts from zero; if the core missed its first batches
    (slow joiner) the seq need not go back, but the totals still put the input right."""
    core, _ = make_core(tmp_path)
    core.service(0)
    for i in range(3):
        core.handle(batch(i, (i + 1) * MS, [0], [2]), (i + 1) * MS)  # old driver: x0 = 6
    # new driver: batches 0..4 lost; it sent +4 then +4 on channel 0 and +2 on channel 1
    core.handle(batch(5, 10 * MS, [1], [2]), 10 * MS)
    new_totals = np.array([8, 2, 0, 0], np.int64)
    core.handle(Heartbeat("s", 0, 11 * MS, "ok", "", {"x": new_totals}), 11 * MS)
    assert np.array_equal(core.engine.output_value("y"), 0.5 * new_totals)
    # the old driver died before its first keyframe: this first keyframe is still news
    st = core.inputs["x"]
    assert (st.n_gaps, st.n_resyncs, st.n_startup_resyncs) == (1, 1, 0)


def test_first_keyframe_after_a_late_subscription_is_start_up(tmp_path):
    core, _ = make_core(tmp_path)
    core.service(0)
    for i in range(4, 7):  # batches 0..3 went out before this subscription was complete
        core.handle(batch(i, (i + 1) * MS, [0], [2]), (i + 1) * MS)
    core.handle(Heartbeat("s", 0, 8 * MS, "ok", "", {"x": np.array([14, 0, 0, 0])}), 8 * MS)
    st = core.inputs["x"]
    assert (st.n_gaps, st.n_resyncs, st.n_startup_resyncs, st.n_startup_resync_counts) == (
        0,
        1,
        1,
        8,
    )


def test_bad_heartbeat_totals_are_counted_not_applied(tmp_path):
    core, _ = make_core(tmp_path)
    core.service(0)
    core.handle(batch(0, MS, [0], [2]), MS)
    core.handle(Heartbeat("s", 0, 2 * MS, "ok", "", {"x": np.ones(9, np.int64)}), 2 * MS)
    core.handle(Heartbeat("s", 1, 2 * MS, "ok", "", {"nope": np.ones(2, np.int64)}), 2 * MS)
    assert core.drops.get("bad_totals") == 1
    assert np.array_equal(core.engine.output_value("y"), [1.0, 0.0, 0.0, 0.0])


def test_latency_report_is_the_bucket_that_holds_each_percentile():
    rng = np.random.default_rng(3)
    lat_ns = (rng.lognormal(7.5, 0.7, 5000) * 1000).astype(np.int64)
    h = LatencyHistogram()
    for v in lat_ns:
        h.add(int(v))
    for q in (50, 99):
        lo, hi = h.range_us(q)
        exact_us = np.percentile(lat_ns / 1000.0, q, method="inverted_cdf")
        assert lo <= exact_us <= hi and hi / lo < 1.1, (q, lo, exact_us, hi)
    text = h.describe()
    assert text.startswith("p50 ") and ", p99 " in text and text.endswith("(n 5000)")
    assert not any(
        len(tok.split(".")[-1]) > 2 for tok in text.replace("-", " ").split() if "." in tok
    )
    assert LatencyHistogram().describe() == "no samples"


def test_stream_rates_read_driver_counters_and_skip_anything_else():
    from spikefuse.core.report import stream_rates

    def st(t_s, groups):
        return Status("imu", 0, int(t_s * 1e9), {"groups": groups})

    g = {"input": "gyro", "values_per_item": 3, "n_items": 100, "n_events": 30}
    g2 = {**g, "n_items": 1100, "n_events": 330}
    bad = {"input": "x", "values_per_item": "3", "n_items": 1, "n_events": 1}
    rates = stream_rates(st(1.0, {"gyro": g, "b": bad}), st(2.0, {"gyro": g2, "b": bad}))
    assert rates == {"gyro": (1000.0, 3000.0, 300.0)}
    assert stream_rates(st(2.0, {"gyro": g}), st(2.0, {"gyro": g2})) == {}
    assert stream_rates(Status("imu", 0, 0, {}), Status("imu", 1, 5, {"groups": 7})) == {}
