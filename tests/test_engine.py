"""The event-driven engine (Cython) against the dense rounding network and the NumPy
reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikefuse.builder import build
from spikefuse.engine import Engine, ReferenceEngine
from spikefuse.engine.semantics import activate, round_half_away_array
from spikefuse.errors import GraphError
from spikefuse.graph import Graph
from tests._randgraph import random_dynamic_graph, random_static_graph, random_stream

INT32_MAX = 2**31 - 1

ENGINES = [Engine, ReferenceEngine]


def q(v: np.ndarray, k: float) -> np.ndarray:
    return round_half_away_array(k * v) / k


def dense_oracle(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """The frame-based rounding network computed with numpy: every node's sent/k."""
    rg = g.resolve()
    val: dict[str, np.ndarray] = {}  # quantized (received) values
    for name in rg.order:
        node = rg.nodes[name]
        if node.type == "input":
            val[name] = q(x, node.scale)
            continue
        if node.type == "product":
            a = np.concatenate([val[s] for s in ([node.a] if isinstance(node.a, str) else node.a)])
            b = np.concatenate([val[s] for s in ([node.b] if isinstance(node.b, str) else node.b)])
            v = a * b
        else:
            inp = np.concatenate([val[s] for s in node.sources])
            if node.type == "dense":
                z = inp @ node.weights + (node.bias if node.bias is not None else 0)
            elif node.type == "conv2d":
                z = conv2d_numpy(inp.reshape(node.in_shape), node)
            else:
                z = inp
            code = {"identity": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "abs": 4, "clip": 5}[
                getattr(node, "activation", "identity")
            ]
            lo, hi = getattr(node, "lo", None) or 0.0, getattr(node, "hi", None) or 0.0
            v = np.array([activate(code, float(zz), lo, hi) for zz in np.ravel(z)])
        val[name] = q(v, node.scale)
    return val


def conv2d_numpy(x: np.ndarray, node) -> np.ndarray:
    k = node.kernels
    (sy, sx), (py, px) = node.stride, node.padding
    xp = np.pad(x, ((0, 0), (py, py), (px, px)))
    co, ho, wo = node.out_shape
    out = np.zeros((co, ho, wo))
    for o in range(co):
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, i * sy : i * sy + k.shape[2], j * sx : j * sx + k.shape[3]]
                out[o, i, j] = np.sum(patch * k[o])
    if node.bias is not None:
        out += node.bias[:, None, None]
    return out.ravel()


def push_value_in_steps(eng, rng, x: np.ndarray, k: float, t0: int = 1000) -> None:
    """Reach total counts round(k*x) through several random partial batches."""
    target = round_half_away_array(k * x).astype(np.int64)
    sent = np.zeros_like(target)
    t = t0
    for _ in range(4):
        step = (rng.random(target.shape) * (target - sent)).astype(np.int64)
        idx = np.flatnonzero(step)
        eng.push(t, "x", idx.astype(np.int32), step[idx].astype(np.int32))
        sent += step
        t += 1000
    idx = np.flatnonzero(target - sent)
    eng.push(t, "x", idx.astype(np.int32), (target - sent)[idx].astype(np.int32))


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_static_graph_matches_dense_rounding_network(engine_cls):
    rng = np.random.default_rng(1)
    n_units = n_flipped = 0
    for trial in range(40 if engine_cls is Engine else 12):
        g = random_static_graph(rng, conv=trial % 2 == 0, product=trial % 3 != 0)
        eng = engine_cls(g)
        eng.start(0)
        x = rng.normal(0, 1.0, g.nodes["x"].size)
        push_value_in_steps(eng, rng, x, g.nodes["x"].scale)
        oracle = dense_oracle(g, x)
        for name, want in oracle.items():
            got = eng.node_value(name)
            k = g.nodes[name].scale
            diff = np.abs(got - want)
            assert np.all(diff <= 1.0 / k + 1e-9), (name, got, want)
            n_flipped += int(np.sum(diff > 1e-9))
            n_units += want.size
    assert n_units > 500
    assert n_flipped / n_units < 1e-3, f"{n_flipped} of {n_units} units differ by a rounding tie"


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_residual_within_half_after_every_event(engine_cls):
    rng = np.random.default_rng(2)
    for g in (random_static_graph(rng), random_dynamic_graph(rng), random_dynamic_graph(rng)):
        eng = engine_cls(g)
        eng.start(0)
        for t, ch, ct in random_stream(rng, g.nodes["x"].size, 60):
            eng.push(t, "x", ch, ct)
            _check_residuals(eng)
            nd = eng.next_deadline()
            if nd is not None and nd < t + 5_000_000:
                eng.advance(nd)
                _check_residuals(eng)


def _check_residuals(eng) -> None:
    """Herding nodes: |k*v - sent| <= 1/2. Integrators: <= 1/2 while moving one way, up to a
    whole quantum just after reversing (the hysteresis that prevents chattering)."""
    r = np.abs(eng.residuals())
    m = eng.model
    is_int = np.repeat(m.node_kind == 5, m.node_size)
    assert np.all(r[~is_int] <= 0.5 + 1e-9), r[~is_int].max()
    assert np.all(r[is_int] <= 1.0 + 1e-9), r[is_int].max()


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_op_counter_is_sum_of_spikes_times_fanout(engine_cls):
    rng = np.random.default_rng(3)
    g = Graph("ops")
    g.input("x", 6, 20.0)
    g.dense("h", "x", rng.normal(size=(6, 9)), activation="relu", scale=30.0)
    g.dense("z", "h", rng.normal(size=(9, 4)), scale=30.0)
    g.activation("a", "z", "tanh", scale=25.0)
    g.output("y", ["a", "z"], scale=50.0)
    eng = engine_cls(g)
    eng.start(0)
    for t, ch, ct in random_stream(rng, 6, 50):
        eng.push(t, "x", ch, ct)
    c = eng.counters
    sp = c["spikes"]
    expected = sp["x"] * 9 + sp["h"] * 4 + sp["z"] * (1 + 1) + sp["a"] * 1 + sp["y"] * 0
    assert c["syn_ops"] == expected > 0


def _analytic_crossings(segments, gain, inv_tau, k, y0, t_end):
    """Crossing times of k*y(t) through sent±1/2, found by bisection on the closed form
    (independent of the engine's formulas). segments: [(t_start_s, x)]."""
    from math import exp

    def y_at(y, x, dt):
        if inv_tau == 0:
            return y + gain * x * dt
        yinf = gain * x / inv_tau
        return yinf + (y - yinf) * exp(-dt * inv_tau)

    times = []
    sent = int(np.floor(abs(k * y0) + 0.5) * np.sign(y0))
    last = 0  # direction of the last spike: reversing needs a whole quantum (hysteresis)
    y, t = y0, segments[0][0]
    bounds = [s[0] for s in segments[1:]] + [t_end]
    for (t_seg, x), t_stop in zip(segments, bounds, strict=True):
        t = t_seg
        while True:
            # search the next crossing in (t, t_stop] on a fine grid then bisect
            grid = np.linspace(t, t_stop, 2001)
            ys = np.array([y_at(y, x, g - t) for g in grid])
            r = k * ys - sent
            up, down = (1.0 if last == -1 else 0.5), (1.0 if last == 1 else 0.5)
            hit = np.flatnonzero((r >= up) | (r <= -down))
            hit = hit[hit > 0]
            if hit.size == 0:
                y = y_at(y, x, t_stop - t)
                break
            i = hit[0]
            lo, hi = grid[i - 1], grid[i]
            d = 1 if r[i] >= up else -1
            for _ in range(80):
                mid = 0.5 * (lo + hi)
                rm = k * y_at(y, x, mid - t) - sent
                if rm >= up if d > 0 else rm <= -down:
                    hi = mid
                else:
                    lo = mid
            y = y_at(y, x, hi - t)
            t = hi
            sent += d
            last = d
            times.append(hi)
    return np.array(times)


@pytest.mark.parametrize("engine_cls", ENGINES)
@pytest.mark.parametrize("tau_s", [None, 0.3])
def test_integrator_crossings_within_1us_across_slope_changes(engine_cls, tau_s):
    k_in, k = 10.0, 20.0
    g = Graph("int")
    g.input("x", 1, k_in)
    g.integrator("i", "x", gain=1.5, tau_s=tau_s, y0=0.12, scale=k)
    g.output("y", "i", scale=k)
    eng = engine_cls(g)
    eng.start(0)
    # x = 0.7 from t=0, then -1.3 from 0.9 s, then 0.4 from 2.1 s
    plan = [(0, 7), (900_000_000, -20), (2_100_000_000, 17)]
    times, x = [], 0.0
    segments = []
    for t_ns, c in plan:
        ev = eng.push(t_ns, "x", [0], [c])
        times.extend(ev["t_ns"][ev["t_ns"] > 0].tolist())
        x += c / k_in
        segments.append((t_ns * 1e-9, x))
    ev = eng.advance(3_500_000_000)
    times.extend(ev["t_ns"].tolist())
    inv_tau = 0.0 if tau_s is None else 1 / tau_s
    want = _analytic_crossings(segments, 1.5, inv_tau, k, 0.12, 3.5)
    got = np.array(times) * 1e-9
    assert len(got) == len(want) > 20
    assert np.max(np.abs(got - want)) < 1e-6


def _run(engine_cls, g, stream, advance_to):
    eng = engine_cls(g)
    chunks = [eng.start(0)]
    for t, ch, ct in stream:
        chunks.append(eng.push(t, "x", ch, ct))
    chunks.append(eng.advance(advance_to))
    return np.concatenate(chunks), eng


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    dynamic=st.booleans(),
    pool=st.booleans(),
    limited=st.booleans(),
    max_count=st.sampled_from([5, INT32_MAX]),
)
def test_cython_agrees_with_reference(seed, dynamic, pool, limited, max_count):
    rng = np.random.default_rng(seed)
    if dynamic:
        g = random_dynamic_graph(rng, rate_limited=limited)
    else:
        g = random_static_graph(rng, pool=pool)
    n_batches = int(rng.integers(1, 40))
    stream = random_stream(rng, g.nodes["x"].size, n_batches, max_count=max_count)
    end = stream[-1][0] + 200_000_000
    a, ea = _run(Engine, g, stream, end)
    b, eb = _run(ReferenceEngine, g, stream, end)
    assert a.tobytes() == b.tobytes()
    assert ea.counters == eb.counters
    assert ea.next_deadline() == eb.next_deadline()


def test_deterministic_bit_identical():
    rng = np.random.default_rng(7)
    g = random_dynamic_graph(rng)
    stream = random_stream(rng, g.nodes["x"].size, 300)
    a, _ = _run(Engine, g, stream, stream[-1][0] + 10**9)
    b, _ = _run(Engine, g, stream, stream[-1][0] + 10**9)
    assert a.size > 50 and a.tobytes() == b.tobytes()


def test_idle_graph_costs_nothing():
    rng = np.random.default_rng(8)
    g = random_static_graph(rng)
    eng = Engine(g)
    eng.start(0)
    eng.push(10, "x", [0, 1], [3, -2])
    before = eng.counters
    assert eng.next_deadline() is None
    assert eng.advance(10**12).size == 0
    assert eng.push(10**12 + 1, "x", [], []).size == 0
    after = eng.counters
    assert after["syn_ops"] == before["syn_ops"]
    assert after["spikes"] == before["spikes"]


def test_dense_input_spike_touches_only_its_row():
    g = Graph("row")
    g.input("x", 3, 1.0)
    w = np.arange(12, dtype=float).reshape(3, 4)
    g.dense("h", "x", w, scale=1.0)
    g.output("y", "h", scale=1.0)
    eng = Engine(g)
    eng.start(0)
    eng.push(1, "x", [1], [1])
    np.testing.assert_array_equal(eng.node_value("h"), w[1])
    assert eng.counters["syn_ops"] == 4 + 4 * 1 * 0 + int(np.abs(w[1]).sum())


# --------------------------------------------------------------------------- bad input
def _bad(fn, match_node, match_field):
    with pytest.raises(ValueError) as ei:
        fn()
    msg = str(ei.value)
    assert match_node in msg and match_field in msg, msg


def test_bad_graphs_raise_naming_node_and_field():
    def nan_weights():
        g = Graph()
        g.input("x", 2)
        g.dense("d", "x", [[1.0, np.nan], [0, 1]])

    def inf_bias():
        g = Graph()
        g.input("x", 2)
        g.dense("d", "x", np.eye(2), bias=[0, np.inf])

    def shape_mismatch():
        g = Graph()
        g.input("x", 3)
        g.dense("d", "x", np.eye(2))
        build(g)

    def unknown_source():
        g = Graph()
        g.input("x", 3)
        g.activation("a", "nope")
        build(g)

    def cycle():
        g = Graph()
        g.input("x", 2)
        g.dense("d", ["x", "e"], np.ones((4, 2)))
        g.activation("e", "d")
        build(g)

    def bad_scale():
        g = Graph()
        g.input("x", 2, scale=0.0)

    def product_mismatch():
        g = Graph()
        g.input("x", 2)
        g.input("z", 3)
        g.product("p", "x", "z")
        build(g)

    _bad(nan_weights, "'d'", "weights")
    _bad(inf_bias, "'d'", "bias")
    _bad(shape_mismatch, "'d'", "weights")
    _bad(unknown_source, "'a'", "source")
    _bad(cycle, "'d'", "source")
    _bad(bad_scale, "'x'", "scale")
    _bad(product_mismatch, "'p'", "b")


def test_cycle_through_integrator_is_allowed():
    g = Graph()
    g.input("x", 1)
    g.dense("d", ["x", "i"], [[1.0], [-1.0]])
    g.integrator("i", "d", gain=2.0)
    g.output("y", "i")
    eng = Engine(g)
    eng.start(0)
    eng.push(0, "x", [0], [100])  # x = 1: y -> 1 with time constant 0.5 s
    eng.advance(5_000_000_000)
    assert abs(eng.output_value("y")[0] - 1.0) <= 0.01


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_bad_pushes_raise_value_error_and_change_nothing(engine_cls):
    g = Graph()
    g.input("x", 2, 10.0)
    g.output("y", "x", 10.0)
    eng = engine_cls(g)
    eng.start(0)
    with pytest.raises(ValueError, match="unknown input 'nope'"):
        eng.push(1, "nope", [0], [1])
    with pytest.raises(ValueError, match="channel 2 out of range"):
        eng.push(1, "x", [2], [1])
    with pytest.raises(ValueError, match="channel -1 out of range"):
        eng.push(1, "x", [-1], [1])
    with pytest.raises(ValueError, match="differ in length"):
        eng.push(1, "x", [0, 1], [1])
    with pytest.raises(ValueError, match="integers"):
        eng.push(1, "x", [0.5], [1])
    eng.push(5, "x", [0], [1])
    with pytest.raises(ValueError, match="before the engine clock"):
        eng.push(4, "x", [0], [1])
    assert eng.counters["n_saturated"] == 0
    np.testing.assert_array_equal(eng.output_value("y"), [0.1, 0.0])


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_overflowing_counts_saturate_and_are_counted(engine_cls):
    g = Graph()
    g.input("x", 1, 1.0)
    g.output("y", "x", 1.0)
    eng = engine_cls(g)
    eng.start(0)
    big = np.iinfo(np.int32).max
    eng.push(1, "x", [0, 0], [big, big])
    assert eng.counters["n_saturated"] == 1
    assert eng.output_value("y")[0] == big
    eng.push(2, "x", [0], [-5])
    assert eng.output_value("y")[0] == big - 5


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_push_many_equals_push_one_by_one(engine_cls):
    rng = np.random.default_rng(11)
    g = random_dynamic_graph(rng)
    stream = random_stream(rng, g.nodes["x"].size, 80)
    a, ea = _run(engine_cls, g, stream, stream[-1][0])
    eng = engine_cls(g)
    first = eng.start(0)
    t = np.array([s[0] for s in stream], np.int64)
    ptr = np.concatenate([[0], np.cumsum([s[1].size for s in stream])])
    ch = np.concatenate([s[1] for s in stream])
    ct = np.concatenate([s[2] for s in stream])
    b = np.concatenate([first, eng.push_many(t, "x", ptr, ch, ct), eng.advance(stream[-1][0])])
    assert a.tobytes() == b.tobytes()
    assert eng.counters == ea.counters


def test_push_many_validates_everything_first():
    g = Graph()
    g.input("x", 2, 10.0)
    g.output("y", "x", 10.0)
    eng = Engine(g)
    eng.start(0)
    with pytest.raises(ValueError, match="batch 1: channel 5 out of range"):
        eng.push_many([1, 2], "x", [0, 1, 2], [0, 5], [1, 1])
    with pytest.raises(ValueError, match="non-decreasing"):
        eng.push_many([2, 1], "x", [0, 1, 2], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="batch 0: unknown input"):
        eng.push_many([1], ["q"], [0, 1], [0], [1])
    np.testing.assert_array_equal(eng.output_value("y"), [0.0, 0.0])


def _huge_integrator_start():
    """Integrator with k = 1 starting at y0 = 9.3e18 (> 2^63 after rounding)."""
    g = Graph()
    g.input("x", 1, 1.0)
    g.integrator("i", "x", gain=1.0, tau_s=None, y0=9.3e18, scale=1.0)
    g.output("y", "i", scale=1.0)
    return g, [], 10, "i", 1


def _huge_output_scale():
    """Input -> Output with Output scale 9.3e15 and 1000 counts: k*v = 9.3e18."""
    g = Graph()
    g.input("x", 1, 1.0)
    g.output("y", "x", scale=9.3e15)
    return g, [(5, [0], [1000])], 10, "y", 1


def _integrator_crossing_at_1e20():
    """k*y goes from 0 to 1e20 within the nanosecond of its first crossing."""
    g = Graph()
    g.input("x", 1, 1.0)
    g.integrator("i", "x", gain=1e29, tau_s=None, scale=1.0, max_crossing_rate_hz=1e9)
    g.output("y", "i", scale=1e-9)
    return g, [(5, [0], [1])], 7, "i", 2


@pytest.mark.parametrize(
    "case", [_huge_integrator_start, _huge_output_scale, _integrator_crossing_at_1e20]
)
def test_send_beyond_int64_clips_to_int32_max_in_both_engines(case):
    """A send whose k*v is beyond 2^63 (a huge scale, y0, or k*y) is the documented clip
    to +(2^31 - 1) with one counted saturation per send, identically in the compiled
    engine and the reference (no sign flip from an overflowing float -> int64)."""
    g, stream, end, node, n_sends = case()
    results = []
    for cls in ENGINES:
        eng = cls(g)
        chunks = [eng.start(0)]
        for t, ch, co in stream:
            chunks.append(eng.push(t, "x", ch, co))
        chunks.append(eng.advance(end))
        results.append((np.concatenate(chunks), eng))
    (a, ea), (b, eb) = results
    assert a.tobytes() == b.tobytes()
    assert ea.counters == eb.counters
    assert ea.next_deadline() == eb.next_deadline()
    k = g.nodes[node].scale
    for eng in (ea, eb):
        assert eng.node_value(node)[0] * k == n_sends * INT32_MAX
        assert eng.counters["n_saturated"] >= n_sends
    assert a.size and (a["value"] > 0).all(), a


def _hostile_integrator_graph(rate_hz: float = 1e6) -> Graph:
    """Issue 9: a protocol-valid maximal input (2^31 - 1 counts at scale 100) into an
    Integrator with k = 100 asks for ~2.1e9 crossings per second of engine time."""
    g = Graph("hostile")
    g.input("x", 1, 100.0)
    g.integrator("i", "x", gain=1.0, tau_s=None, scale=100.0, max_crossing_rate_hz=rate_hz)
    g.output("y", "i", scale=100.0)
    return g


def test_hostile_integrator_rate_is_bounded_and_counted():
    """The compiled engine over 1 s of engine time: at most max_crossing_rate_hz (1e6)
    crossings, every deferred one counted as saturation, the value still tracked."""
    eng = Engine(_hostile_integrator_graph())
    eng.start(0)
    ev = [eng.push(0, "x", [0], [INT32_MAX])]
    ev.append(eng.advance(1_000_000_000))
    out = np.concatenate(ev)
    c = eng.counters
    assert c["n_crossings"] <= 1_000_001
    assert out.size <= 1_000_002
    assert c["n_crossings"] > 900_000  # the gap is the bound, not a stall
    assert c["n_saturated"] >= c["n_crossings"] - 1
    # k*slope = 2.147e9 levels/s, sent every 1 us: the residual stays under 2148 levels
    y = eng.integrator_state("i")[0]
    assert abs(100.0 * y - eng.node_value("i")[0] * 100.0) <= 2148.0
    assert np.all(np.diff(out["t_ns"][out["t_ns"] > 0]) >= 1000)


@pytest.mark.parametrize(("rate_hz", "end_ns"), [(1e6, 20_000_000), (1e4, 1_000_000_000)])
def test_hostile_integrator_same_in_both_engines(rate_hz, end_ns):
    """The same hostile case (the default rate for 20 ms, a 1e4/s rate for the whole
    second: the reference is slow), bit-identical in Engine and ReferenceEngine."""
    runs = []
    for cls in ENGINES:
        eng = cls(_hostile_integrator_graph(rate_hz))
        chunks = [eng.start(0), eng.push(0, "x", [0], [INT32_MAX])]
        chunks.append(eng.push(7_000_000, "x", [0], [-5]))
        chunks.append(eng.advance(end_ns))
        runs.append((np.concatenate(chunks), eng))
    (a, ea), (b, eb) = runs
    assert a.tobytes() == b.tobytes()
    assert ea.counters == eb.counters
    assert ea.next_deadline() == eb.next_deadline()
    n_max = rate_hz * end_ns / 1e9 + 1
    assert 0.75 * n_max <= ea.counters["n_crossings"] <= n_max
    assert a.size <= n_max + 1
    assert ea.counters["n_saturated"] >= ea.counters["n_crossings"] - 2


@pytest.mark.parametrize("rate", [0.0, -1.0, 2e9, float("inf"), float("nan")])
def test_bad_max_crossing_rate_names_the_field(rate):
    g = Graph()
    g.input("x", 1, 1.0)
    with pytest.raises(GraphError, match="max_crossing_rate_hz"):
        g.integrator("i", "x", max_crossing_rate_hz=rate)


def _last_of_each_output(ev: np.ndarray) -> np.ndarray:
    """The oracle of ``latest_only``: the last event of each output, in time order."""
    keep = [j for j in range(ev.size) if not (ev["output"][j + 1 :] == ev["output"][j]).any()]
    return ev[keep]


def _two_output_flood_graph() -> Graph:
    """A hostile Integrator (1e6 crossings/s) and a slower one on their own Outputs, and a
    dense path on a third: one call fills the output buffer many times over."""
    g = Graph("flood2")
    g.input("x", 2, 100.0)
    g.integrator("i", "x", gain=1.0, tau_s=None, scale=100.0)
    g.output("yi", "i", scale=100.0)
    g.integrator("j", "x", gain=0.5, tau_s=0.01, scale=10.0, max_crossing_rate_hz=3e3)
    g.output("yj", "j", scale=10.0)
    g.dense("h", "x", np.array([[1.0, -1.0], [0.5, 0.5]]), scale=1.0)
    g.output("yh", "h", scale=1.0)
    return g


def _calls(eng, steps):
    out = [eng.start(0)]
    for kind, t, ch, co in steps:
        out.append(eng.push(t, "x", ch, co) if kind == "push" else eng.advance(t))
    return out


def _state(eng):
    names = [n for n in eng.model.node_names if n != "x"]
    return [eng.node_value(n).tobytes() for n in names], eng.residuals().tobytes()


@pytest.mark.parametrize("engine_cls", ENGINES)
def test_latest_only_returns_the_last_event_of_each_output_same_state(engine_cls):
    """``latest_only``: every call returns exactly the last event of each output of the
    full run's same call; state, counters (``events_out`` included) and the next deadline
    are the full run's. The compiled engine folds while its buffer fills (20 ms of a
    flooded Integrator: ~20000 crossings in one call), so its buffer stays small."""
    steps = [
        ("push", 0, [0, 1], [INT32_MAX, 300]),
        ("advance", 3_000_000 if engine_cls is ReferenceEngine else 20_000_000, None, None),
        ("push", 20_000_000, [1, 0], [-7, -(2**30)]),
        ("push", 20_000_000, [0], [5]),
        ("advance", 20_500_000, None, None),
        ("advance", 20_500_000, None, None),
        ("push", 21_000_123, [1], [1]),
        ("advance", 25_000_000, None, None),
    ]
    full, folded = engine_cls(_two_output_flood_graph()), engine_cls(_two_output_flood_graph())
    folded.latest_only = True
    a, b = _calls(full, steps), _calls(folded, steps)
    assert sum(x.size for x in a) > 5000
    for got, want in zip(b, a, strict=True):
        assert got.tobytes() == _last_of_each_output(want).tobytes()
    assert _state(folded) == _state(full)
    assert folded.counters == full.counters
    assert folded.next_deadline() == full.next_deadline()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), limited=st.booleans())
def test_latest_only_agrees_across_engines(seed, limited):
    """Random dynamic graphs: compiled and reference engines in ``latest_only`` return the
    same bytes on every call, with the same counters and state."""
    rng = np.random.default_rng(seed)
    g = random_dynamic_graph(rng, rate_limited=limited)
    stream = random_stream(rng, g.nodes["x"].size, int(rng.integers(1, 30)))
    steps = [("push", t, ch, ct) for t, ch, ct in stream]
    steps.append(("advance", stream[-1][0] + 200_000_000, None, None))
    runs = []
    for cls in ENGINES:
        eng = cls(g)
        eng.latest_only = True
        runs.append((_calls(eng, steps), eng))
    (a, ea), (b, eb) = runs
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert ea.counters == eb.counters
    assert _state(ea) == _state(eb)
