"""Run an attitude estimator over a recorded table: the event-driven graph on an engine,
the same graph frame by frame (:class:`~spikefuse.engine.dense.DenseExecutor`), VQF and
plain gyro integration. Each runner returns the body-frame "up" (or a quaternion) at
every sample time plus its work count."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from spikefuse.attitude.quat import integrate_gyro, quat_from_up
from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.engine import Engine
from spikefuse.engine.base import EngineBase
from spikefuse.engine.dense import DenseExecutor
from spikefuse.graph import Graph, Input


@dataclass
class Stream:
    """One sensor input of the graph: ``values`` (N, size) at the table's sample times,
    ``due`` (N,) bool: whether sample i is delivered (multi-rate decimation), ``encoder``:
    options of its :class:`SigmaDeltaEncoder` (e.g. the gyro's auto-zero)."""

    values: np.ndarray
    due: np.ndarray
    encoder: dict[str, float] = field(default_factory=dict)  # SigmaDeltaEncoder options


@dataclass
class EventRun:
    outputs: dict[str, np.ndarray]  # name -> (N, size) value seen by a consumer at t_i
    syn_ops: np.ndarray  # int64[N] cumulative synaptic ops after sample i
    n_events_in: int
    n_spikes_in: int
    n_events_out: int
    counters: dict
    encoder_skipped: dict[str, int] = field(default_factory=dict)


def decimate(t_ns: np.ndarray, rate_hz: float | None) -> np.ndarray:
    """Mask of the samples a sensor running at ``rate_hz`` would deliver: the first sample
    of every ``1/rate_hz`` period (all samples when ``rate_hz`` is None)."""
    if rate_hz is None:
        return np.ones(t_ns.shape[0], dtype=bool)
    period_ns = 1e9 / rate_hz
    bins = np.floor((t_ns - t_ns[0]) / period_ns).astype(np.int64)
    due = np.ones(t_ns.shape[0], dtype=bool)
    due[1:] = bins[1:] != bins[:-1]
    return due


def hold_nonfinite(
    values: np.ndarray, fallback: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Replace rows with a NaN/Inf by the last good row (``fallback`` before the first);
    return (held copy, number of rows replaced)."""
    v = np.array(values, dtype=np.float64, copy=True)
    bad = ~np.all(np.isfinite(v), axis=1)
    n_bad = int(bad.sum())
    if not n_bad:
        return v, 0
    good = np.flatnonzero(~bad)
    idx = np.maximum.accumulate(np.where(~bad, np.arange(v.shape[0]), -1))
    first = fallback if fallback is not None else np.zeros(v.shape[1])
    out = np.where((idx >= 0)[:, None], v[np.maximum(idx, 0)], first)
    del good
    return out, n_bad


def _input_scales(graph: Graph) -> dict[str, float]:
    return {n: nd.scale for n, nd in graph.nodes.items() if isinstance(nd, Input)}


def run_events(
    graph: Graph,
    t_ns: np.ndarray,
    streams: Mapping[str, Stream],
    engine_factory: Callable[[Graph], EngineBase] = Engine,
) -> EventRun:
    """Encode every stream with a :class:`SigmaDeltaEncoder` at its input's scale, push the
    nonzero counts into the engine in time order, and sample the output events at the
    table's times (what a consumer of the output events would hold at t_i)."""
    scales = _input_scales(graph)
    unknown = set(streams) - set(scales)
    if unknown:
        raise ValueError(f"streams {sorted(unknown)} are not inputs of graph '{graph.name}'")
    eng = engine_factory(graph)
    encs = {
        n: SigmaDeltaEncoder(s.values.shape[1], scales[n], **s.encoder) for n, s in streams.items()
    }
    chunks = [eng.start(int(t_ns[0]))]
    syn_ops = np.empty(t_ns.shape[0], dtype=np.int64)
    ops = 0
    names = list(streams)
    vals = [streams[n].values for n in names]
    dues = [streams[n].due for n in names]
    for i in range(t_ns.shape[0]):
        t = int(t_ns[i])
        pushed = False
        for j, n in enumerate(names):
            if dues[j][i]:
                ch, ct = encs[n].encode(vals[j][i])
                if ch.size:
                    ev = eng.push(t, n, ch, ct)
                    pushed = True
                    if ev.size:
                        chunks.append(ev)
        deadline = eng.next_deadline()
        if not pushed and deadline is not None and deadline <= t:
            ev = eng.advance(t)  # crossings due without input: their work belongs here
            pushed = True
            if ev.size:
                chunks.append(ev)
        if pushed:  # work happens only inside push/advance
            ops = eng.counters["syn_ops"]
        syn_ops[i] = ops
    ev = eng.advance(int(t_ns[-1]))
    if ev.size:
        chunks.append(ev)
    events = np.concatenate(chunks)
    outputs = sample_outputs(eng, events, t_ns)
    c = eng.counters
    return EventRun(
        outputs=outputs,
        syn_ops=syn_ops,
        n_events_in=c["events_in"],
        n_spikes_in=c["spikes_in"],
        n_events_out=c["events_out"],
        counters=c,
        encoder_skipped={
            n: e.n_skipped_nonfinite + e.n_skipped_out_of_range for n, e in encs.items()
        },
    )


def sample_outputs(eng: EngineBase, events: np.ndarray, t_ns: np.ndarray) -> dict[str, np.ndarray]:
    """Piecewise-constant output values at ``t_ns`` (after every event with t <= t_i)."""
    out: dict[str, np.ndarray] = {}
    for oi, name in enumerate(eng.output_names):
        size = int(eng.output_value(name).shape[0])
        arr = np.zeros((t_ns.shape[0], size))
        sel = events[events["output"] == oi]
        for ch in range(size):
            e = sel[sel["channel"] == ch]
            if not e.size:
                continue
            k = np.searchsorted(e["t_ns"], t_ns, side="right") - 1
            col = np.where(k >= 0, e["value"][np.maximum(k, 0)], 0.0)
            arr[:, ch] = col
        out[name] = arr
    return out


def run_dense(
    graph: Graph, t_ns: np.ndarray, streams: Mapping[str, Stream], read: list[str]
) -> tuple[dict[str, np.ndarray], int]:
    """Every node updated at every sample (inputs held between their deliveries)."""
    ex = DenseExecutor(graph)
    n = t_ns.shape[0]
    out = {name: np.empty((n, ex.nodes[name].size)) for name in read}
    dt_s = np.diff(t_ns, prepend=t_ns[0]) * 1e-9
    names = list(streams)
    for i in range(n):
        ex.step(float(dt_s[i]), {nm: streams[nm].values[i] for nm in names if streams[nm].due[i]})
        for name in read:
            out[name][i] = ex.values[name]
    return out, ex.syn_ops


def run_vqf(
    t_ns: np.ndarray,
    gyr: np.ndarray,
    acc: np.ndarray,
    acc_due: np.ndarray | None = None,
    mag: np.ndarray | None = None,
    mag_due: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Causal VQF; returns quat6D (N,4), or (quat6D, quat9D) when ``mag`` is given. With
    ``acc_due`` / ``mag_due`` those sensors are given only on the marked samples
    (multi-rate)."""
    from vqf import VQF

    ts = float(np.median(np.diff(t_ns))) * 1e-9
    gyr = np.ascontiguousarray(gyr, dtype=np.float64)
    acc = np.ascontiguousarray(acc, dtype=np.float64)
    n = gyr.shape[0]
    acc_due = np.ones(n, dtype=bool) if acc_due is None else acc_due
    if mag is None:
        if acc_due.all():
            return VQF(ts).updateBatch(gyr, acc)["quat6D"]
        mag_due = np.zeros(n, dtype=bool)
    else:
        mag = np.ascontiguousarray(mag, dtype=np.float64)
        mag_due = np.ones(n, dtype=bool) if mag_due is None else mag_due
        if acc_due.all() and mag_due.all():
            r = VQF(ts).updateBatch(gyr, acc, mag)
            return r["quat6D"], r["quat9D"]

    def _sub_ts(due: np.ndarray) -> float:
        idx = np.flatnonzero(due)
        return float(np.median(np.diff(t_ns[idx]))) * 1e-9 if idx.size > 1 else ts

    v = VQF(ts, _sub_ts(acc_due), _sub_ts(mag_due))
    q6 = np.empty((n, 4))
    q9 = np.empty((n, 4))
    for i in range(n):
        v.updateGyr(gyr[i])
        if acc_due[i]:
            v.updateAcc(acc[i])
        if mag_due[i]:
            v.updateMag(mag[i])
        q6[i] = v.getQuat6D()
        q9[i] = v.getQuat9D()
    return q6 if mag is None else (q6, q9)


def vqf_rest_detected(t_ns: np.ndarray, gyr: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Per sample, whether VQF's rest detection (its default thresholds: the low-passed
    gyro within 2 deg/s and the accelerometer within 0.5 m/s^2 of its low-pass, for 1.5 s)
    holds: a sensor-side test of stillness, independent of the graph under test."""
    from vqf import VQF

    ts = float(np.median(np.diff(t_ns))) * 1e-9
    gyr = np.ascontiguousarray(gyr, dtype=np.float64)
    acc = np.ascontiguousarray(acc, dtype=np.float64)
    return np.asarray(VQF(ts).updateBatch(gyr, acc)["restDetected"], dtype=bool)


def run_gyro_only(t_ns: np.ndarray, gyr: np.ndarray, acc0: np.ndarray) -> np.ndarray:
    """Strapdown gyro integration from the inclination of the first accelerometer sample."""
    dt_s = np.diff(t_ns) * 1e-9
    return integrate_gyro(quat_from_up(acc0), gyr, dt_s)


__all__ = [
    "EventRun",
    "Stream",
    "decimate",
    "hold_nonfinite",
    "run_dense",
    "run_events",
    "run_gyro_only",
    "run_vqf",
    "sample_outputs",
    "vqf_rest_detected",
]
