"""``spikefuse bench core``: engine throughput, redundancy savings, and a NEST peer.

1. Throughput: synaptic ops/s of the engine on a dense sigma-delta MLP (784-512-256-10)
   under random input spike streams, next to the raw C row-accumulate kernel over the same
   weights (roofline) and a numpy dense forward pass per step.
2. Redundancy: ops of the engine vs dense per-frame ops on a slowly drifting input stream,
   with the output error against the exact float network.
3. Peer: synaptic events per wall-second in NEST (via PyNN, dt 0.1 ms) on the same
   connectivity and input spike trains.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from spikefuse.benchmarks._common import BenchResult
from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.engine import Engine
from spikefuse.engine._kernels import row_accumulate
from spikefuse.graph import Graph

DESCRIPTION = "engine synaptic ops/s vs roofline and numpy; sigma-delta vs dense ops; NEST peer"
SIZES = (784, 512, 256, 10)
V_REST_MV = -65.0
"""resting and initial membrane of the NEST peer's neurons"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="smaller workload (a few seconds)")
    p.add_argument("--no-nest", action="store_true", help="skip the NEST comparison")
    p.add_argument("--seed", type=int, default=0, help="random seed of weights and inputs")
    p.add_argument("--repeat", type=int, default=0, help="best-of-N repeats (default 5, quick 3)")
    p.add_argument(
        "--nest-rate-hz", type=float, default=50.0, help="input Poisson rate per channel"
    )


def mlp_weights(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    layers = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:], strict=True):
        w = rng.normal(0.0, 1.0 / np.sqrt(n_in), (n_in, n_out))
        b = rng.normal(0.0, 0.05, n_out)
        layers.append((w, b))
    return layers


def mlp_graph(layers, k_in: float, k_hidden: float, k_out: float) -> Graph:
    g = Graph("mlp")
    g.input("x", SIZES[0], scale=k_in)
    src = "x"
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        name = f"l{i + 1}"
        g.dense(
            name,
            src,
            w,
            b,
            activation="identity" if last else "relu",
            scale=k_out if last else k_hidden,
        )
        src = name
    g.output("y", src, scale=k_out)
    return g


def dense_forward(layers, x: np.ndarray) -> np.ndarray:
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def _best_rate(fn, repeat: int) -> float:
    """Best of ``repeat`` runs of ``fn() -> (work, seconds)``: on a shared machine the fastest
    run is the one least disturbed by others (both sides of every ratio get the same rule)."""
    return max(w / t for w, t in (fn() for _ in range(repeat)))


def throughput(layers, rng, n_batches: int, batch: int, repeat: int) -> dict[str, float]:
    """Random ±1 input spikes in batches of ``batch``, pushed one batch per call as the
    daemon does; engine syn_ops/s vs the raw row-accumulate kernel over W1."""
    chans = rng.integers(0, SIZES[0], (n_batches, batch)).astype(np.int32)
    counts = rng.choice(np.array([-1, 1], np.int32), (n_batches, batch))
    graph = mlp_graph(layers, k_in=4.0, k_hidden=4.0, k_out=20.0)
    warm = max(1, n_batches // 10)

    def engine_run() -> tuple[float, float]:
        eng = Engine(graph)
        eng.start(0)
        for i in range(warm):
            eng.push(i * 1000, "x", chans[i], counts[i])
        ops0 = eng.counters["syn_ops"]
        t0 = time.perf_counter()
        for i in range(warm, n_batches):
            eng.push(i * 1000, "x", chans[i], counts[i])
        wall = time.perf_counter() - t0
        return eng.counters["syn_ops"] - ops0, wall

    w1 = np.ascontiguousarray(layers[0][0])
    n_rows = 200_000
    rows = rng.integers(0, w1.shape[0], n_rows).astype(np.int32)
    d = rng.choice(np.array([-0.25, 0.25]), n_rows)
    acc = np.zeros(w1.shape[1])
    row_accumulate(w1, rows[:1000], d[:1000], acc)

    def roofline_run() -> tuple[float, float]:
        t0 = time.perf_counter()
        row_accumulate(w1, rows, d, acc)
        return n_rows * w1.shape[1], time.perf_counter() - t0

    x = rng.normal(0, 1, SIZES[0])
    macs = sum(w.size for w, _ in layers)
    dense_forward(layers, x)

    def numpy_run() -> tuple[float, float]:
        t0 = time.perf_counter()
        for _ in range(300):
            dense_forward(layers, x)
        return macs * 300, time.perf_counter() - t0

    eng_rate = roof_rate = np_rate = 0.0
    for _ in range(repeat):  # interleaved, so a disturbance hits both sides alike
        eng_rate = max(eng_rate, _best_rate(engine_run, 1))
        roof_rate = max(roof_rate, _best_rate(roofline_run, 1))
        np_rate = max(np_rate, _best_rate(numpy_run, 1))
    return {
        "syn_ops_per_s": eng_rate,
        "roofline_syn_ops_per_s": roof_rate,
        "numpy_dense_macs_per_s": np_rate,
    }


def drifting_stream(rng, n_frames: int) -> np.ndarray:
    """Slowly drifting inputs in [0, 1]: a smooth random walk per pixel (frames x 784)."""
    base = rng.uniform(0.2, 0.8, SIZES[0])
    vel = rng.normal(0.0, 1.0, SIZES[0])
    t = np.arange(n_frames)[:, None]
    freq = rng.uniform(0.2, 1.0, SIZES[0]) * 2 * np.pi / n_frames
    return np.clip(base + 0.15 * np.sin(freq * t + vel), 0.0, 1.0)


def redundancy(layers, rng, n_frames: int) -> dict[str, float]:
    frames = drifting_stream(rng, n_frames)
    k_in, k_hidden, k_out = 60.0, 60.0, 300.0
    eng = Engine(mlp_graph(layers, k_in, k_hidden, k_out))
    eng.start(0)
    enc = SigmaDeltaEncoder(SIZES[0], k_in)
    ys_true = np.array([dense_forward(layers, f) for f in frames])
    err = []
    for i, f in enumerate(frames):
        ch, ct = enc.encode(f)
        eng.push(i * 1_000_000, "x", ch, ct)
        err.append(eng.output_value("y") - ys_true[i])
    err = np.array(err)[n_frames // 10 :]  # after the initial fill-in
    sd_ops = eng.counters["syn_ops"]
    dense_ops = n_frames * sum(w.size for w, _ in layers)
    out_range = float(ys_true.max() - ys_true.min())
    rmse = float(np.sqrt(np.mean(err**2)))
    return {
        "sd_ops": sd_ops,
        "dense_ops": dense_ops,
        "sd_vs_dense_ops_ratio": sd_ops / dense_ops,
        "sd_output_rmse": rmse,
        "output_range": out_range,
        "sd_output_rmse_fraction_of_range": rmse / out_range,
    }


def nest_peer(
    layers, rng, duration_ms: float, rate_hz: float, repeat: int
) -> dict[str, float] | None:
    """Same connectivity and input spike trains in NEST via PyNN (dt = 0.1 ms)."""
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("pyNN") is None or importlib.util.find_spec("nest") is None:
        return None

    n_in = SIZES[0]
    # Poisson input trains: the same trains drive our engine below
    trains = []
    for _ in range(n_in):
        n = rng.poisson(rate_hz * duration_ms / 1000.0)
        trains.append(np.sort(np.round(rng.uniform(1.0, duration_ms, n), 1)))
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    sys.stdout.flush()
    os.dup2(devnull, 1)  # NEST prints its banner and progress on fd 1
    try:
        import warnings

        warnings.filterwarnings("ignore", module="nest")
        import pyNN.nest as sim

        wall = float("inf")
        for _ in range(repeat):  # best of `repeat` fresh builds (NEST has no full reset)
            sim.setup(timestep=0.1, min_delay=0.1, threads=1, verbosity="error")
            src = sim.Population(n_in, sim.SpikeSourceArray(spike_times=[list(t) for t in trains]))
            pops = [src]
            for w, _ in layers:
                cell = sim.IF_curr_exp(tau_refrac=0.1, v_rest=V_REST_MV, v_thresh=-50.0)
                pop = sim.Population(w.shape[1], cell)
                # pyNN.nest ignores initialize(v=...); V_m is set natively. (Checked: for
                # IF_curr_exp it already equals v_rest; NEST's -70 mV default shows with
                # IF_curr_delta. Set explicitly so the start does not depend on the model.)
                pop.node_collection.set(V_m=V_REST_MV)
                pops.append(pop)
            for i, (w, _) in enumerate(layers):
                sim.Projection(
                    pops[i],
                    pops[i + 1],
                    sim.ArrayConnector(np.ones(w.shape, bool)),
                    sim.StaticSynapse(weight=np.abs(w) * 2.0, delay=0.1),
                    receptor_type="excitatory",
                )
            for p in pops:
                p.record("spikes")
            t0 = time.perf_counter()
            sim.run(duration_ms)
            wall = min(wall, time.perf_counter() - t0)
            n_spikes = [
                int(sum(len(st) for st in p.get_data().segments[0].spiketrains)) for p in pops
            ]
            sim.end()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    fanout = list(SIZES[1:]) + [0]
    syn_events = sum(n * f for n, f in zip(n_spikes, fanout, strict=True))
    # our engine on the very same input trains, one batch per 0.1 ms step with spikes
    steps = {}
    for ch, tr in enumerate(trains):
        for t in tr:
            steps.setdefault(int(round(t * 10)), []).append(ch)
    keys = sorted(steps)
    t_ns = np.array(keys, np.int64) * 100_000
    ptr = np.concatenate([[0], np.cumsum([len(steps[k]) for k in keys])])
    chans = np.concatenate([np.array(steps[k], np.int32) for k in keys])
    # the whole train is handed over up front, as NEST gets its SpikeSourceArray
    ours_wall = float("inf")
    for _ in range(repeat):
        eng = Engine(mlp_graph(layers, k_in=4.0, k_hidden=4.0, k_out=20.0))
        eng.start(0)
        t0 = time.perf_counter()
        eng.push_many(t_ns, "x", ptr, chans, np.ones(chans.size, np.int32))
        ours_wall = min(ours_wall, time.perf_counter() - t0)
    ours_ops = eng.counters["syn_ops"]
    return {
        "nest_syn_events_per_s": syn_events / wall,
        "nest_wall_s": wall,
        "nest_syn_events": syn_events,
        "same_trains_syn_ops_per_s": ours_ops / ours_wall,
    }


def run(args: argparse.Namespace) -> BenchResult:
    rng = np.random.default_rng(args.seed)
    layers = mlp_weights(rng)
    q = args.quick
    repeat = args.repeat or (3 if q else 5)
    tp = throughput(layers, rng, n_batches=300 if q else 3000, batch=64, repeat=repeat)
    rd = redundancy(layers, rng, n_frames=500 if q else 2000)
    nest = (
        None
        if args.no_nest
        else nest_peer(
            layers,
            rng,
            duration_ms=200.0 if q else 1000.0,
            rate_hz=args.nest_rate_hz,
            repeat=repeat,
        )
    )
    speedup = None
    if nest is not None:
        speedup = nest["same_trains_syn_ops_per_s"] / nest["nest_syn_events_per_s"]
    res = BenchResult("spikefuse bench core" + (" --quick" if q else ""))
    res.add(
        "engine syn ops/s (784-512-256-10, random ±1 spikes)",
        tp["syn_ops_per_s"],
        tp["roofline_syn_ops_per_s"],
        tp["syn_ops_per_s"] / tp["roofline_syn_ops_per_s"],
    )
    res.add("numpy dense forward MACs/s (batch 1)", tp["numpy_dense_macs_per_s"], "-", "-")
    res.add(
        "sigma-delta ops vs dense per-frame ops (drifting input)",
        rd["sd_ops"],
        rd["dense_ops"],
        rd["sd_vs_dense_ops_ratio"],
    )
    res.add(
        "sigma-delta output RMSE / output range",
        rd["sd_output_rmse"],
        rd["output_range"],
        rd["sd_output_rmse_fraction_of_range"],
    )
    if nest is None:
        res.add(
            "NEST syn events/s (PyNN, dt 0.1 ms)", "skipped (pyNN.nest not installed)", "-", "-"
        )
    else:
        res.add(
            "engine syn ops/s vs NEST syn events/s (same trains)",
            nest["same_trains_syn_ops_per_s"],
            nest["nest_syn_events_per_s"],
            speedup,
        )
    res.notes.append(
        "baseline column: roofline = raw C row-accumulate over W1; dense = per-frame MACs; NEST = same trains"
    )
    res.fields = {
        "syn_ops_per_s": tp["syn_ops_per_s"],
        "roofline_syn_ops_per_s": tp["roofline_syn_ops_per_s"],
        "roofline_fraction": tp["syn_ops_per_s"] / tp["roofline_syn_ops_per_s"],
        "numpy_dense_macs_per_s": tp["numpy_dense_macs_per_s"],
        "sd_vs_dense_ops_ratio": rd["sd_vs_dense_ops_ratio"],
        "sd_output_rmse": rd["sd_output_rmse"],
        "sd_output_rmse_fraction_of_range": rd["sd_output_rmse_fraction_of_range"],
        "nest_syn_events_per_s": None if nest is None else nest["nest_syn_events_per_s"],
        "speedup_vs_nest": speedup,
    }
    return res
