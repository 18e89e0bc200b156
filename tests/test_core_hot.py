"""The compiled per-message path against the Python path (the oracle): random sequences of
valid and invalid EventBatch payloads, heartbeats (ended ones too) and clock steps go to two
cores on the same graph, one with ``fast_path`` and one without; the MotorCommands (payload
bytes: values, times, causes, sequence numbers), the drops and every counter must be
identical."""

from __future__ import annotations

import numpy as np
import pytest
from _core_util import small_graph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikefuse.core import CoreConfig, FusionCore
from spikefuse.core.fusion import data_time_ns
from spikefuse.engine import Engine
from spikefuse.errors import ProtocolError
from spikefuse.graph import Graph
from spikefuse.protocol import (
    MAX_ABS_TIME_NS,
    MAX_CLOCK_SKEW_NS,
    Encoder,
    EventBatch,
    Heartbeat,
    MotorCommand,
    Status,
    decode,
    encode,
    topic_of,
)

MS = 1_000_000
T0 = 10**12
N = 4  # channels of the graph input

ACTUATORS = [
    {"m": {"output": "y"}},
    {"m": {"output": "y", "clamp": [-1.0, 1.5], "channels": [2, 0]}},
    {"m": {"output": "y", "min_interval_ms": 3.0}, "n": {"output": "yi", "clamp": [0, 0.5]}},
    {"a": {"output": "yi"}, "b": {"output": "y", "safe_values": 1.0}},
]


class Harness:
    """One core, fed the way the daemon feeds it (compiled first where enabled)."""

    def __init__(self, gpath, actuators: dict, fast: bool, timeout_s: float):
        cfg = CoreConfig(
            graph=gpath,
            inputs={"x": {"sensor": "s", "timeout_s": timeout_s}},
            actuators=actuators,
            refresh_hz=50.0,
        )
        graph = Graph.load(gpath).resolve()
        self.out: list[tuple[bytes, bytes]] = []
        enc = Encoder()
        self.now = T0
        self.core = FusionCore(cfg, graph, Engine(graph), T0, self._send(enc), fast_path=fast)
        self.core.clock = lambda: self.now
        self.core.send_payload = lambda topic, data: self.out.append((topic, data)) or True
        self.fast = fast
        self.n_compiled = 0
        self.rejected: list[str] = []

    def _send(self, enc):
        def send(msg) -> bool:
            if isinstance(msg, Status):  # the one counter that differs: which path it took
                metrics = {**msg.metrics, "totals": dict(msg.metrics["totals"])}
                del metrics["totals"]["n_compiled"]
                msg = Status(msg.source, msg.seq, msg.t_ns, metrics)
            self.out.append((topic_of(msg), enc.encode(msg)))
            return True

        return send

    def feed(self, topic: bytes, payload: bytes) -> None:
        core = self.core
        if self.fast and core.receive(topic, payload, self.now):
            self.n_compiled += 1
            if core.next_wake_ns() <= self.now:
                core.service(self.now)
            return
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            self.rejected.append(exc.reason)
            return
        if topic_of(msg) != topic:
            self.rejected.append("topic_mismatch")
            return
        core.handle(msg, self.now)
        core.service(self.now)

    def tick(self, now: int) -> None:
        self.now = now
        if self.core.next_wake_ns() <= now:
            self.core.service(now)

    def state(self) -> dict:
        core = self.core
        status = core.status_metrics(self.now)
        totals = status.pop("totals")
        del totals["n_compiled"]  # the one counter that differs: which path was taken
        return {
            "out": self.out,
            "rejected": self.rejected,
            "status": status,
            "totals": totals,
            "sent": {n: s.sent.tolist() for n, s in core.inputs.items()},
            "received": {n: s.received.tolist() for n, s in core.inputs.items()},
            "engine": (core.engine.now, core.engine.counters, core.engine.events_in),
            "motors": {
                n: (m.target.tolist(), m.commanded.tolist()) for n, m in core.motors.items()
            },
            "wake": core.next_wake_ns(),
        }


def _payload(kind: str, seq: int, now: int, draw) -> tuple[bytes, bytes]:
    """One message of the given kind (valid or not), encoded as a driver would."""
    n = draw(st.integers(0, 6))
    ch = np.array(draw(st.lists(st.integers(0, N - 1), min_size=n, max_size=n)), np.int32)
    co = np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), np.int32)
    t = now - draw(st.integers(0, 3 * MS))
    scale, sensor, inp, dt = 1.0, "s", "x", None
    if kind == "bad_channel" and n:
        ch[-1] = N + draw(st.integers(0, 3))
    elif kind == "time":
        t = draw(
            st.sampled_from(
                [now + MAX_CLOCK_SKEW_NS + 1, now - MAX_CLOCK_SKEW_NS - 5, MAX_ABS_TIME_NS, 0]
            )
        )
    elif kind == "scale":
        scale = draw(st.sampled_from([2.0, 4.0, 0.5]))
    elif kind == "dt" and n:  # offsets in any order: the Python path sorts them
        dt = np.array(draw(st.lists(st.integers(0, 2 * MS), min_size=n, max_size=n)), np.int64)
    elif kind == "parts" and n:  # in time order, some equal: one push per distinct time
        steps = draw(st.lists(st.sampled_from([0, 0, 1, 1000, MS // 2]), min_size=n, max_size=n))
        dt = np.cumsum(np.array(steps, np.int64))
    elif kind == "unknown":
        sensor, inp = draw(st.sampled_from([("s", "z"), ("q", "x")]))
    if kind in ("heartbeat", "end"):  # "end": the driver closed its stream (state ended)
        totals = np.array(draw(st.lists(st.integers(-20, 20), min_size=N, max_size=N)), np.int64)
        state = "ok" if kind == "heartbeat" else "ended"
        hb = Heartbeat("s", seq, t, state, "", {"x": totals} if draw(st.booleans()) else None)
        return b"sensor/s", encode(hb)
    b = EventBatch(sensor, seq, t, inp, scale, ch, co, dt_ns=dt)
    payload = encode(b)
    topic = b"sensor/" + sensor.encode()
    if kind == "corrupt":
        cut = draw(st.integers(0, len(payload) - 1))
        payload = payload[:cut] + bytes([draw(st.integers(0, 255))]) + payload[cut + 1 :]
    elif kind == "topic":
        topic = b"sensor/other"
    return topic, payload


KINDS = [
    "valid",
    "valid",
    "valid",
    "valid",
    "duplicate",
    "back",
    "gap",
    "bad_channel",
    "time",
    "scale",
    "dt",
    "parts",
    "parts",
    "unknown",
    "heartbeat",
    "end",
    "end",
    "corrupt",
    "topic",
]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_compiled_path_equals_python_path(tmp_path, data):
    gpath = tmp_path / "g.npz"
    if not gpath.exists():
        small_graph(gpath, n=N, with_integrator=True)
    actuators = data.draw(st.sampled_from(ACTUATORS))
    timeout_s = data.draw(st.sampled_from([0.005, 0.2]))
    py = Harness(gpath, actuators, False, timeout_s)
    hot = Harness(gpath, actuators, True, timeout_s)
    assert hot.core.hot is not None and py.core.hot is None
    now, seq = T0, -1
    for _ in range(data.draw(st.integers(1, 60))):
        now += data.draw(st.sampled_from([0, 1, 1000, MS // 2, MS, 4 * MS, 30 * MS]))
        py.tick(now)
        hot.tick(now)
        kind = data.draw(st.sampled_from(KINDS))
        if kind == "duplicate":
            s = max(seq, 0)
        elif kind == "back":
            s = data.draw(st.integers(0, max(seq, 0)))
        elif kind == "gap":
            s = seq + data.draw(st.integers(2, 5))
        else:
            s = seq + 1
        topic, payload = _payload(kind, s, now, data.draw)
        if kind not in ("heartbeat", "end"):
            seq = max(seq, s) if kind != "back" else s
        py.feed(topic, payload)
        hot.feed(topic, payload)
        assert hot.out == py.out
    now += 100 * MS
    py.tick(now)
    hot.tick(now)
    assert hot.state() == py.state()


def test_compiled_path_takes_the_steady_stream_and_is_deterministic(tmp_path):
    """A steady stream is handled compiled after its first batch (no integrator: nothing
    moves the engine's clock past a batch's time, which the Python path would clamp), and
    two runs of the same inputs give the same bytes."""
    gpath = small_graph(tmp_path / "g.npz", n=N)
    runs = []
    for _ in range(2):
        h = Harness(gpath, ACTUATORS[1], True, 0.2)
        rng = np.random.default_rng(7)
        now = T0
        for seq in range(300):
            now += MS
            h.tick(now)
            ch = rng.integers(0, N, 5).astype(np.int32)
            co = rng.integers(-3, 4, 5).astype(np.int32)
            h.feed(b"sensor/s", encode(EventBatch("s", seq, now - 50_000, "x", 1.0, ch, co)))
        assert h.n_compiled == 299
        runs.append(h.state())
    assert runs[0] == runs[1] and len(runs[0]["out"]) > 50


@pytest.mark.parametrize(
    "over, reason",
    [
        ({"inputs": {"x": {"sensor": "s", "reorder_window_ms": 2}}}, "reorder_window_ms"),
        ({"actuators": {"m": {"output": "y", "max_rate_per_s": 5}}}, "max_rate_per_s"),
    ],
)
def test_compiled_path_stands_aside_where_it_does_not_apply(tmp_path, over, reason):
    from spikefuse.core.hot import unavailable

    gpath = small_graph(tmp_path / "g.npz")
    kw = {"inputs": {"x": {"sensor": "s"}}, "actuators": {"m": {"output": "y"}}, **over}
    cfg = CoreConfig(graph=gpath, **kw)
    graph = Graph.load(gpath).resolve()
    core = FusionCore(cfg, graph, Engine(graph), T0, lambda m: True, data_clock=cfg.clock == "data")
    assert core.hot is None and reason in unavailable(core)


def _feed_samples(h: Harness, samples, per: int) -> int:
    """Samples ``(t_ns, channels, counts)`` in batches of ``per`` (one batch: ``t_ns`` of
    its first sample, ``dt_ns`` the others' offsets), each fed 50 us after its last sample."""
    n_batches = 0
    for seq, k in enumerate(range(0, len(samples), per)):
        group = samples[k : k + per]
        t0 = group[0][0]
        ch = np.concatenate([c for _, c, _ in group]).astype(np.int32)
        co = np.concatenate([n for _, _, n in group]).astype(np.int32)
        dt = np.concatenate([np.full(c.size, t - t0, np.int64) for t, c, _ in group])
        h.now = group[-1][0] + 50_000  # (serviced after the batch, as the daemon does)
        b = EventBatch("s", seq, t0, "x", 1.0, ch, co, dt_ns=dt if dt.any() else None)
        h.feed(b"sensor/s", encode(b))
        n_batches += 1
    return n_batches


@pytest.mark.parametrize("fast", [True, False])
def test_a_batch_acts_as_its_samples_one_by_one(tmp_path, fast):
    """Ten samples in one batch (per-event ``dt_ns``) leave the engine exactly as ten
    one-sample batches do (each event pushed at its own time: the integrator's crossings
    fall at the same times), on the compiled path and on the Python path."""
    gpath = small_graph(tmp_path / "g.npz", n=N, with_integrator=True)
    rng = np.random.default_rng(3)
    samples = []
    for k in range(400):
        n = int(rng.integers(1, 3))
        t = T0 + MS + k * 250_000 + (k // 3) * 7  # some 3 events share a time
        samples.append((t, rng.integers(0, N, n), rng.integers(-3, 4, n)))
    states = []
    for per in (10, 1):
        h = Harness(gpath, ACTUATORS[2], fast, 0.2)
        n = _feed_samples(h, samples, per)
        assert h.n_compiled == (n - 1 if fast else 0)  # all but the first (no seq before it)
        h.tick(samples[-1][0] + 100 * MS)
        eng = h.core.engine
        states.append(
            (eng.counters, eng.now, eng.integrator_state("i").tolist(), h.state()["sent"])
        )
    assert states[0][0]["n_crossings"] > 20
    assert states[0] == states[1]


class DataHarness(Harness):
    """One ``clock: data`` core fed the way the daemon feeds it (compiled first where
    enabled, else ``on_data`` at each message's data time): batches are held until a
    heartbeat vouches for them, then applied part by part (compiled where enabled)."""

    def __init__(self, gpath, actuators: dict, fast: bool, timeout_s: float, t0: int):
        cfg = CoreConfig(
            graph=gpath,
            inputs={"x": {"sensor": "s", "timeout_s": timeout_s}},
            actuators=actuators,
            refresh_hz=50.0,
            status_period_s=0.01,
            clock="data",
        )
        graph = Graph.load(gpath).resolve()
        self.out = []
        self.rejected = []
        self.now = t0
        self.fast = fast
        self.n_compiled = 0
        send = self._send(Encoder())
        self.core = FusionCore(cfg, graph, Engine(graph), t0, send, data_clock=True, fast_path=fast)
        self.core.send_payload = lambda topic, data: self.out.append((topic, data)) or True

    def feed(self, topic: bytes, payload: bytes) -> None:
        if self.fast and self.core.receive(topic, payload, 0):  # held compiled
            self.n_compiled += 1
            return
        try:
            msg = decode(payload)  # each core decodes its own (the input path edits batches)
        except ProtocolError as exc:
            self.rejected.append(exc.reason)
            return
        if topic_of(msg) != topic:
            self.rejected.append("topic_mismatch")
            return
        self.core.on_data(msg, data_time_ns(msg))
        self.now = self.core.data_now_ns


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_compiled_path_equals_python_path_on_a_data_clock(tmp_path, data):
    """``clock: data``: batches held compiled (``_Hot.on_payload_held``) and the held parts
    applied compiled (``_Hot.on_part``) give the same commands (bytes: values, times,
    causes, seq), statuses, drops and counters as the Python path, whatever arrives: batches of several times, out of order across batches,
    resets, gaps, duplicates, other scales, bad channels, bad times, corrupt payloads,
    wrong topics, heartbeats with and without totals (keyframe corrections), heartbeats
    going back, inputs going stale, ending (an ended heartbeat) and coming back."""
    gpath = tmp_path / "g.npz"
    if not gpath.exists():
        small_graph(gpath, n=N, with_integrator=True)
    actuators = data.draw(st.sampled_from(ACTUATORS))
    timeout_s = data.draw(st.sampled_from([0.005, 0.2]))
    py = DataHarness(gpath, actuators, False, timeout_s, T0)
    hot = DataHarness(gpath, actuators, True, timeout_s, T0)
    assert hot.core.hot is not None and py.core.hot is None
    sync, seq = T0, -1
    kinds = KINDS + ["heartbeat"] * 3
    for _ in range(data.draw(st.integers(1, 80))):
        kind = data.draw(st.sampled_from(kinds))
        if kind in ("heartbeat", "end"):  # usually forward (a sync), now and then late or far
            sync += data.draw(st.sampled_from([-MS, 0, 1, MS, 5 * MS, 10 * MS, 300 * MS]))
        if kind == "duplicate":
            s = max(seq, 0)
        elif kind == "back":
            s = data.draw(st.integers(0, max(seq, 0)))
        elif kind == "gap":
            s = seq + data.draw(st.integers(2, 5))
        else:
            s = seq + 1
        # batches of the coming sync period (data time: up to 10 ms after the last sync)
        heartbeat = kind in ("heartbeat", "end")
        now = sync if heartbeat else sync + 3 * MS + data.draw(st.integers(0, 7 * MS))
        topic, payload = _payload(kind, s, now, data.draw)
        if not heartbeat:
            seq = max(seq, s) if kind != "back" else s
        py.feed(topic, payload)
        hot.feed(topic, payload)
        assert hot.out == py.out
    for h in (py, hot):
        h.core.release_data(sync + 100 * MS)
        h.now = max(h.core.data_now_ns, sync + 100 * MS)
    assert hot.out == py.out
    assert hot.state() == py.state()
    assert hot.core.n_compiled >= hot.n_compiled


def test_compiled_path_takes_the_held_parts_of_a_data_clock(tmp_path):
    """A steady lock-step stream (one batch of 10 samples per 10 ms, then the heartbeat) is
    applied part by part on the compiled path, with the Python path's bytes."""
    gpath = small_graph(tmp_path / "g.npz", n=N, with_integrator=True)
    outs = []
    for fast in (True, False):
        h = DataHarness(gpath, ACTUATORS[2], fast, 0.2, T0)
        rng = np.random.default_rng(5)
        for k in range(100):
            t0 = T0 + k * 10 * MS
            ch = rng.integers(0, N, 20).astype(np.int32)
            co = rng.integers(-3, 4, 20).astype(np.int32)
            dt = np.repeat(np.arange(10, dtype=np.int64) * MS, 2)
            h.feed(b"sensor/s", encode(EventBatch("s", k, t0, "x", 1.0, ch, co, dt_ns=dt)))
            h.feed(b"sensor/s", encode(Heartbeat("s", k, t0 + 10 * MS - 1, "ok", "")))
        # every batch held compiled but the first (no seq before it), every part applied
        assert h.n_compiled == (99 if fast else 0)
        assert h.core.n_compiled == (99 + 1000 if fast else 0)
        outs.append(h.state())
    assert outs[0] == outs[1] and len(outs[0]["out"]) > 100


# ------------------------------------------------------------------ MotorCommand reader
def _motor_payload(data) -> tuple[bytes, bytes]:
    """A random ``[topic, payload]``: valid commands of this and other actuators (every
    msgpack int width), and invalid ones (bounds, NaN/inf, a wrong kind, cut or padded
    bytes, a bin of a length no float64 array has, another field type)."""
    import msgpack

    name = data.draw(st.sampled_from(["motors", "motors2", "m", "ü" * 3, "motors"]))
    t_max = MAX_ABS_TIME_NS
    ints = st.one_of(
        st.integers(-40, 300), st.integers(-t_max - 2, t_max + 2), st.integers(-(2**63), 2**64 - 1)
    )
    values = data.draw(
        st.lists(
            st.floats(allow_nan=True, allow_infinity=True)
            | st.floats(allow_nan=False, allow_infinity=False),
            max_size=6,
        )
    )
    raw = np.array(values, "<f8").tobytes()
    if data.draw(st.integers(0, 4)) == 0:
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    fields = [1, 3, name, data.draw(ints), data.draw(ints), data.draw(ints), raw]
    if data.draw(st.integers(0, 9)) == 0:  # a field of another type, or another envelope
        i = data.draw(st.integers(0, len(fields) - 1))
        fields[i] = data.draw(st.sampled_from([None, 1.5, "x", b"x", 2, 4, [1]]))
    payload = msgpack.packb(fields, use_bin_type=True)
    if data.draw(st.integers(0, 4)) == 0:  # cut or padded
        cut = data.draw(st.integers(1, 3))
        payload = payload[:-cut] if data.draw(st.booleans()) else payload + b"\0" * cut
    topic = data.draw(st.sampled_from([b"motor/" + name.encode(), b"motor/motors", b"motor/x"]))
    return topic, payload


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_motor_reader_reads_what_the_decoder_reads(data):
    """The actuator's compiled reader of its own commands reads exactly the payloads on its
    topic that ``protocol.decode`` accepts as its commands, as the same MotorCommand;
    everything else (None) is left to the decoder, which accepts or counts it."""
    from spikefuse.core.hot import motor_reader

    reader = motor_reader("motors")
    topic, payload = _motor_payload(data)
    got = reader.read(topic, payload)
    try:
        want = decode(payload)
    except ProtocolError:
        want = None
    if want is not None and topic == topic_of(want) == b"motor/motors":
        assert got == want  # every command of its own the decoder accepts
        assert got.values.dtype == want.values.dtype and not got.values.flags.writeable
    else:
        assert got is None


def test_motor_reader_reads_every_valid_command_of_its_actuator():
    from spikefuse.core.hot import motor_reader

    reader = motor_reader("motors")
    enc = Encoder()
    for seq, t, values in [
        (0, 0, []),
        (2**63 - 1, MAX_ABS_TIME_NS, [1e308, -0.0]),
        (5, -MAX_ABS_TIME_NS, [0.5] * 100),
        (70_000, 1, [-1.0, 2.0, 3.0]),
    ]:
        msg = MotorCommand("motors", seq, t, -t, np.array(values, np.float64))
        got = reader.read(b"motor/motors", enc.encode(msg))
        assert got == msg
    assert reader.read(b"motor/motors2", enc.encode(msg)) is None


def test_an_empty_batch_keeps_the_herding_residual_on_both_paths(tmp_path):
    """A batch of another scale leaves a fractional residual in the input's target; an
    empty batch of the input's own scale sends nothing and must not drop it (hypothesis
    found the compiled and the Python path disagreeing here: one dropped it, one kept it)."""
    gpath = small_graph(tmp_path / "g.npz", n=N, with_integrator=True)
    t = T0 + 3 * MS
    other = EventBatch("s", 2, t - 1, "x", 0.4, np.zeros(1, np.int32), np.ones(1, np.int32))
    msgs = [
        EventBatch("s", 0, t, "x", 1.0, np.zeros(0, np.int32), np.zeros(0, np.int32)),
        EventBatch("s", 1, t - 1, "x", 1.0, np.zeros(1, np.int32), np.ones(1, np.int32)),
        other,
        Heartbeat("s", 3, T0 + 5 * MS, "ok", "", {"x": np.zeros(N, np.int64)}),
    ]
    states = []
    for fast in (False, True):
        h = DataHarness(gpath, ACTUATORS[0], fast, 0.005, T0)
        for m in msgs:
            h.feed(topic_of(m), encode(m))
        states.append(h.state())
        # 1 + 2.5 units (4 sent), the keyframe takes the 2 counts back at the last scale
        # (-5 units): -1.5, of which -2 sent; with the residual dropped it was -1 (-1 sent)
        st = h.core.inputs["x"]
        assert st.target[0] == -1.5 and st.sent[0] == -2
    assert states[0] == states[1]
