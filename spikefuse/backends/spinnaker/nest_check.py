"""Functional check without a board: the compiled network on NEST against the engine.

The network that :func:`~spikefuse.backends.spinnaker.pynn.build_network` puts on the
board is built on ``pyNN.nest`` (``spike_precision="on_grid"``, the grid-aligned
``iaf_psc_delta`` that accepts ``tau_refrac = 0``) and driven by the same input stream as
the Cython engine. Outputs are decoded from the output pairs' spikes, ``(n+ - n-)/k``,
sampled every time step, and compared with the engine's outputs ``hops`` steps earlier
(every hop costs one time step on the network and nothing in the engine).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from spikefuse.backends.spinnaker.plan import NetworkPlan
from spikefuse.backends.spinnaker.pynn import build_network
from spikefuse.builder import Model
from spikefuse.engine import Engine


@dataclass
class Batch:
    step: int  # time step of the batch (>= 2: NEST needs spike times above min_delay)
    input: str
    channels: np.ndarray
    counts: np.ndarray


@dataclass
class Comparison:
    rmse_quanta: dict[str, float]
    max_abs_quanta: dict[str, float]
    lag_steps: dict[str, int]
    engine: dict[str, np.ndarray]
    nest: dict[str, np.ndarray]

    @property
    def worst_rmse_quanta(self) -> float:
        return max(self.rmse_quanta.values(), default=0.0)


def input_spike_times(
    plan: NetworkPlan, stream: Sequence[Batch], dt_ms: float
) -> dict[str, list[list[float]]]:
    """Spike times (ms) per input neuron: a count n is |n| spikes of the + or - neuron,
    on consecutive steps from the batch's step (one spike per neuron per step)."""
    times: dict[str, list[list[float]]] = {}
    busy: dict[tuple[str, int], int] = {}
    for b in stream:
        pos, neg = plan.pair(b.input)
        for ch, c in zip(b.channels.tolist(), b.counts.tolist(), strict=True):
            label = pos if c > 0 else neg
            if label not in times:
                times[label] = [[] for _ in range(plan.pops[label].size)]
            step = max(b.step, busy.get((label, ch), 0))
            for _ in range(abs(c)):
                times[label][ch].append(step * dt_ms)
                step += 1
            busy[(label, ch)] = step
    return times


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """NEST prints its banner and progress on fd 1; pyNN.nest warns on every IF_curr_delta
    population that it ignores the initial v (set through the node collection instead)."""
    pynn_log = logging.getLogger("PyNN")
    level = pynn_log.level
    pynn_log.setLevel(logging.ERROR)
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        pynn_log.setLevel(level)
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def run_nest(
    plan: NetworkPlan, stream: Sequence[Batch], n_steps: int, dt_ms: float = 1.0
) -> dict[str, np.ndarray]:
    """Decoded output values after every step, ``(n_steps, size)`` per Output node."""
    with _quiet_stdout():
        import pyNN.nest as sim

        sim.setup(
            timestep=dt_ms, min_delay=dt_ms, threads=1, verbosity="error", spike_precision="on_grid"
        )
        try:
            net = build_network(sim, plan, dt_ms, input_spike_times(plan, stream, dt_ms))
            outs = plan.model.output_names
            for name in outs:
                for label in plan.pair(name):
                    net.pops[label].record("spikes")
            sim.run(n_steps * dt_ms + dt_ms)
            trains = {
                label: net.pops[label].get_data("spikes").segments[0].spiketrains
                for name in outs
                for label in plan.pair(name)
            }
        finally:
            sim.end()
    result = {}
    m = plan.model
    for name in outs:
        k = float(m.unit_scale[m.units_of(name)][0])
        pos, neg = plan.pair(name)
        size = plan.pops[pos].size
        counts = np.zeros((n_steps, size))
        for label, sign in ((pos, 1.0), (neg, -1.0)):
            for ch, st in enumerate(trains[label]):
                steps = np.rint(np.asarray(st.magnitude) / dt_ms).astype(np.int64)
                steps = steps[steps < n_steps]
                np.add.at(counts[:, ch], steps, sign)
        result[name] = np.cumsum(counts, axis=0) / k
    return result


def run_engine(model: Model, stream: Sequence[Batch], n_steps: int, dt_ms: float = 1.0):
    """The Cython engine's output values after every step, ``(n_steps, size)``."""
    eng = Engine(model)
    eng.start(0)
    dt_ns = round(dt_ms * 1e6)
    out = {n: np.zeros((n_steps, eng.output_value(n).size)) for n in model.output_names}
    by_step: dict[int, list[Batch]] = {}
    for b in stream:
        by_step.setdefault(b.step, []).append(b)
    for step in range(n_steps):
        for b in by_step.get(step, []):
            eng.push(step * dt_ns, b.input, b.channels, b.counts)
        eng.advance(step * dt_ns)
        for n in model.output_names:
            out[n][step] = eng.output_value(n)
    return out


def compare(
    plan: NetworkPlan, stream: Sequence[Batch], n_steps: int, dt_ms: float = 1.0
) -> Comparison:
    """RMSE and max error (in output quanta) of NEST's decoded outputs against the
    engine's, NEST shifted by the output's hop count."""
    m = plan.model
    ours = run_engine(m, stream, n_steps, dt_ms)
    theirs = run_nest(plan, stream, n_steps, dt_ms)
    rmse, worst, lags = {}, {}, {}
    for name in m.output_names:
        k = float(m.unit_scale[m.units_of(name)][0])
        lag = plan.nodes[name].hops
        err = (theirs[name][lag:] - ours[name][: n_steps - lag]) * k
        rmse[name] = float(np.sqrt(np.mean(err**2))) if err.size else 0.0
        worst[name] = float(np.abs(err).max(initial=0.0))
        lags[name] = lag
    return Comparison(rmse, worst, lags, ours, theirs)


def smooth_stream(
    model: Model,
    n_steps: int,
    rng: np.random.Generator,
    period_steps: float = 400.0,
    amplitude_quanta: float = 20.0,
    random_phase: bool = False,
) -> list[Batch]:
    """Counts of slow sinusoids on every input channel (from zero, or from random phases:
    a sensor already away from zero when the stream starts), at most one count
    per channel and step (herding: a count only when the residual passes 1/2), as a
    driver's encoder sends them for a smoothly moving sensor."""
    sent = {n: np.zeros(int(model.node_size[model.index(n)])) for n in model.input_names}
    phase = {n: rng.uniform(0, 2 * np.pi, s.size) * random_phase for n, s in sent.items()}
    freq = {n: rng.uniform(0.5, 1.0, s.size) for n, s in sent.items()}
    stream = []
    for step in range(2, n_steps):
        for name, s in sent.items():
            x = (
                amplitude_quanta
                * np.sin(2 * np.pi * freq[name] * step / period_steps + phase[name])
                - s
            )
            ch = np.flatnonzero(np.abs(x) > 0.5)
            if ch.size:
                ct = np.sign(x[ch])
                s[ch] += ct
                stream.append(Batch(step, name, ch.astype(np.int32), ct.astype(np.int32)))
    return stream
