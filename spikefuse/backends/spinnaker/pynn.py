"""Turn a :class:`~spikefuse.backends.spinnaker.plan.NetworkPlan` into PyNN objects.

The same function builds the network on ``pyNN.spiNNaker`` (the board, or a virtual one)
and on ``pyNN.nest`` (the functional check): only what the two simulators genuinely
differ in is switched here (how inputs are fed, the sign convention of inhibitory
weights, how the initial membrane is set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikefuse.backends.spinnaker.plan import TAU_M_MS, THRESHOLD, NetworkPlan, ProjSpec

V0 = 0.5
"""Initial membrane of both neurons of a pair: a residual of zero."""


@dataclass
class Network:
    sim: Any
    plan: NetworkPlan
    pops: dict[str, Any] = field(default_factory=dict)
    projections: list[tuple[ProjSpec, str, Any, np.ndarray]] = field(default_factory=list)
    """(spec, receptor, PyNN projection, the spec's rows it holds)"""


def _is_nest(sim: Any) -> bool:
    return sim.__name__.startswith("pyNN.nest")


def cell_params(v_reset: float) -> dict[str, float]:
    return {
        "tau_m": TAU_M_MS,
        "cm": 1.0,
        "v_rest": 0.0,
        "v_reset": float(v_reset),
        "v_thresh": THRESHOLD,
        "tau_refrac": 0.0,
        "i_offset": 0.0,
    }


def integrator_params() -> dict[str, float]:
    """Current-based neuron whose synaptic current holds its level (tau_syn 32768 ms)."""
    p = cell_params(0.0)
    p.update(tau_syn_E=TAU_M_MS, tau_syn_I=TAU_M_MS)
    return p


def build_network(
    sim: Any,
    plan: NetworkPlan,
    timestep_ms: float,
    input_times: dict[str, list[list[float]]] | None = None,
    live: bool = False,
    notify_port: int | None = None,
) -> Network:
    """Create every population and projection of ``plan`` on ``sim`` (after ``sim.setup``).

    Inputs are live ``SpikeInjector`` populations when ``live`` (sPyNNaker only), else
    ``SpikeSourceArray`` populations with ``input_times[label]`` (ms, per neuron); with
    ``live``, Output pairs also stream their spikes to the host (live output). The
    toolchain notifies ``notify_port`` (a live connection) when its database is ready; with
    None nothing is notified (a virtual board: no connection can follow)."""
    net = Network(sim, plan)
    nest = _is_nest(sim)
    for label, spec in plan.pops.items():
        if spec.kind == "input":
            if live:
                model = _injector(sim, notify_port)
            else:
                times = (input_times or {}).get(label) or [[] for _ in range(spec.size)]
                model = sim.SpikeSourceArray(spike_times=times)
        elif spec.kind == "bias":
            model = sim.SpikeSourceArray(
                spike_times=[[timestep_ms * (1 + t) for t in ts] for ts in spec.bias_times or []]
            )
        elif spec.kind == "integrator":
            model = sim.IF_curr_exp(**integrator_params())
        else:
            model = sim.IF_curr_delta(**cell_params(spec.v_reset))
        pop = sim.Population(spec.size, model, label=label)
        if spec.kind in ("neuron", "integrator"):
            if nest:  # pyNN.nest ignores initialize(v=...): NEST starts at -70 mV otherwise
                pop.node_collection.set(V_m=V0)
            else:
                pop.initialize(v=V0)
        net.pops[label] = pop
    for spec in plan.projs:
        _project(net, spec, timestep_ms, nest)
    if live:
        for name in plan.model.output_names:
            for label in plan.pair(name):
                _live_output(sim, net.pops[label], notify_port)
    return net


def _injector(sim: Any, notify_port: int | None):
    if notify_port is None:
        return sim.external_devices.SpikeInjector(notify=False)
    return sim.external_devices.SpikeInjector(database_notify_port_num=notify_port)


def _live_output(sim: Any, pop: Any, notify_port: int | None) -> None:
    if notify_port is None:
        sim.external_devices.activate_live_output_for(pop, notify=False)
    else:
        sim.external_devices.activate_live_output_for(pop, database_notify_port_num=notify_port)


def _project(net: Network, spec: ProjSpec, timestep_ms: float, nest: bool) -> None:
    sim = net.sim
    c = spec.conns
    for receptor, mask in (("excitatory", c[:, 2] > 0), ("inhibitory", c[:, 2] < 0)):
        if not mask.any():
            continue
        rows = c[mask]
        w = rows[:, 2] if nest else np.abs(rows[:, 2])  # sPyNNaker takes |w| + the receptor
        conn_list = np.column_stack([rows[:, 0], rows[:, 1], w, rows[:, 3] * timestep_ms])
        proj = sim.Projection(
            net.pops[spec.pre],
            net.pops[spec.post],
            sim.FromListConnector(conn_list, column_names=["weight", "delay"]),
            sim.StaticSynapse(),
            receptor_type=receptor,
        )
        net.projections.append((spec, receptor, proj, rows))


def stored_weights(net: Network) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per node: (wanted |w|, stored |w|) of every synapse, read back with
    ``Projection.get("weight")`` (sPyNNaker: the host-side fixed-point weights). Both
    sides are sorted by (pre, post, |w|): rounding is monotone within a projection, so
    split copies of one synapse line up."""
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for spec, _, proj, rows in net.projections:
        got = np.asarray(proj.get("weight", format="list", with_address=True), dtype=np.float64)
        got = got.reshape(-1, 3)
        if got.shape[0] != rows.shape[0]:
            raise RuntimeError(
                f"projection {spec.pre} -> {spec.post}: {got.shape[0]} synapses stored,"
                f" {rows.shape[0]} built"
            )
        want = _sorted_abs(rows[:, 0], rows[:, 1], rows[:, 2])
        have = _sorted_abs(got[:, 0], got[:, 1], got[:, 2])
        out.setdefault(spec.node, []).append((want, have))
    return {
        n: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
        for n, v in out.items()
    }


def _sorted_abs(pre: np.ndarray, post: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = np.abs(w)
    return a[np.lexsort((a, post, pre))]
