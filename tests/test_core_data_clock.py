"""``clock: data`` (the lock-stepped simulator's core): batches are held until a heartbeat
vouches for their time, then applied part by part in (time, arrival) order across streams,
each serviced at its own time. So how a driver batches its samples, and in which order its
streams' batches arrive, changes nothing: the MotorCommands (values, times, causes,
sequence numbers) and the engine are the same."""

from __future__ import annotations

import numpy as np
import pytest

from spikefuse.core import CoreConfig, FusionCore
from spikefuse.engine import Engine
from spikefuse.graph import Graph
from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, decode

MS = 1_000_000
T0 = 10**12
PHASE_NS = {"a": 0, "b": 100}  # stream b samples 100 ns after a within each step


def _graph(path):
    g = Graph("two")
    g.input("a", 2, scale=1.0)
    g.input("b", 2, scale=1.0)
    g.dense("h", ["a", "b"], 0.5 * np.ones((4, 2)), scale=2.0)
    g.integrator("i", "h", gain=1.0, tau_s=None, scale=10.0)
    g.output("y", "h", scale=2.0)
    g.output("yi", "i", scale=10.0)
    g.save(path)
    return Graph.load(path).resolve()


def _samples(seed: int) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
    """(stream, t_ns, channels, counts): a at 1 kHz, b at 500 Hz, 200 ms."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(200):
        for s in ("a", "b") if k % 2 == 0 else ("a",):
            n = int(rng.integers(1, 3))
            out.append(
                (s, T0 + k * MS + PHASE_NS[s], rng.integers(0, 2, n), rng.integers(-2, 3, n))
            )
    return out


def _messages(samples, per_sync: bool, b_first: bool) -> list:
    """Every 10 ms: the streams' samples as one batch per stream (``per_sync``) or one batch
    a sample, then a heartbeat at the end of the period."""
    msgs, seq = [], {"a": 0, "b": 0}
    for w in range(20):
        lo, hi = T0 + w * 10 * MS, T0 + (w + 1) * 10 * MS
        window = [s for s in samples if lo <= s[1] < hi]
        batches = []
        for stream in ("b", "a") if b_first else ("a", "b"):
            mine = [s for s in window if s[0] == stream]
            groups = [mine] if per_sync else [[s] for s in mine]
            for g in groups:
                t0 = g[0][1]
                ch = np.concatenate([c for *_, c, _ in g]).astype(np.int32)
                co = np.concatenate([n for *_, n in g]).astype(np.int32)
                dt = np.concatenate([np.full(c.size, t - t0, np.int64) for _, t, c, _ in g])
                dt = dt if dt.any() else None
                batches.append(EventBatch("sim", seq[stream], t0, stream, 1.0, ch, co, dt_ns=dt))
                seq[stream] += 1
        if not per_sync and not b_first:  # one sample a batch, in time order
            batches.sort(key=lambda b: b.t_ns)
        msgs += batches
        msgs.append(Heartbeat("sim", w, hi - 1, "ok", ""))
    return msgs


def _run(tmp_path, msgs, fast: bool) -> tuple[list, dict]:
    graph = _graph(tmp_path / "g.npz")
    cfg = CoreConfig(
        graph=tmp_path / "g.npz",
        inputs={"a": {"sensor": "sim"}, "b": {"sensor": "sim"}},
        actuators={"m": {"output": "y"}, "n": {"output": "yi"}},
        clock="data",
    )
    sent = []
    first_hb = next(i for i, m in enumerate(msgs) if isinstance(m, Heartbeat))
    t0 = min(m.t_ns for m in msgs[: first_hb + 1])  # as the daemon starts it
    core = FusionCore(cfg, graph, Engine(graph), t0, sent.append, data_clock=True, fast_path=fast)
    core.send_payload = lambda _topic, data: sent.append(decode(data)) or True
    for msg in msgs:
        core.on_data(msg, msg.t_ns)
    assert (core.n_compiled > 0) == fast
    cmds = [
        (m.actuator, m.seq, m.t_ns, m.cause_t_ns, m.values.tolist())
        for m in sent
        if isinstance(m, MotorCommand)
    ]
    return cmds, core.engine.counters


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("per_sync, b_first", [(True, False), (True, True), (False, True)])
def test_batching_and_arrival_order_change_nothing(tmp_path, per_sync, b_first, fast):
    """... on the Python path and on the compiled one (whose commands are the Python path's
    unbatched run's, byte for byte)."""
    samples = _samples(11)
    base_cmds, base_counters = _run(tmp_path, _messages(samples, False, False), False)
    cmds, counters = _run(tmp_path, _messages(samples, per_sync, b_first), fast)
    # one answer per motor and heartbeat (what the motors published in between is
    # superseded by it), numbered without gaps
    assert base_counters["n_crossings"] > 10 and len(base_cmds) == 2 * 20
    assert [c[1] for c in base_cmds if c[0] == "m"] == list(range(20))
    # the causes are the samples' own times (both streams' phases), not the batches' ends
    causes = {c for *_, c, _ in base_cmds} - {T0}
    assert {c % MS for c in causes} >= {0, 100}
    assert cmds == base_cmds
    assert counters == base_counters


def test_nothing_is_applied_before_a_heartbeat_vouches_for_it(tmp_path):
    msgs = _messages(_samples(12), True, False)
    first_hb = next(i for i, m in enumerate(msgs) if isinstance(m, Heartbeat))
    graph = _graph(tmp_path / "g.npz")
    cfg = CoreConfig(
        graph=tmp_path / "g.npz",
        inputs={"a": {"sensor": "sim"}, "b": {"sensor": "sim"}},
        actuators={"m": {"output": "y"}},
        clock="data",
    )
    sent = []
    core = FusionCore(cfg, graph, Engine(graph), msgs[0].t_ns, sent.append, data_clock=True)
    for msg in msgs[:first_hb]:
        core.on_data(msg, msg.t_ns)
    assert core.engine.counters["events_in"] == 0 and core.n_batches == first_hb
    core.on_data(msgs[first_hb], msgs[first_hb].t_ns)
    assert core.engine.counters["events_in"] == sum(b.n_events for b in msgs[:first_hb])
    answer = [m for m in sent if isinstance(m, MotorCommand)][-1]
    assert answer.t_ns == msgs[first_hb].t_ns
