"""Compile a built :class:`~spikefuse.builder.Model` into a spiking network plan.

The plan is simulator-free (NumPy only): populations and connection lists that
:mod:`spikefuse.backends.spinnaker.pynn` turns into PyNN objects on sPyNNaker (the board)
or on NEST (the functional check without a board). The rules:

* **Signed counts -> a +/- pair.** Every unit of a node is two integrate-and-fire neurons,
  ``<node>+`` and ``<node>-``. A spike of ``<node>+`` is a count of +1, of ``<node>-`` a
  count of -1; a receiver decodes ``(n+ - n-) / k``.
* **One quantum = one threshold.** The ``+`` membrane holds ``r + 1/2`` and the ``-``
  membrane ``-r + 1/2``, where ``r = k*v - sent`` is the engine's herding residual; both
  fire at ``1 + eps`` (the engine sends only when ``|r| > 1/2``). A synapse from a unit of
  scale ``k_s`` with weight ``w`` into a unit of scale ``k`` steps the membrane by
  ``w * k / k_s`` thresholds (the opposite sign into the ``-`` neuron).
* **Cross-coupling.** A ``+`` spike lowers ``r`` by one quantum, so it raises the ``-``
  membrane by one threshold (and vice versa): weight 1 from each neuron of a pair to its
  partner.
* **Reset.** IF neurons reset to ``v_reset`` instead of subtracting the threshold, so the
  part of a step above the threshold (the overshoot) would be lost at every spike. The
  reset is set to the expected overshoot of the node's synaptic steps (renewal theory:
  ``E[X^2] / 2E[X]``), which makes the loss zero-mean; synapses whose step exceeds
  ``max_step_quanta`` are split into copies with consecutive delays, which bounds it.
* **Time.** Every synapse has a delay of at least one time step: a node ``d`` hops from
  an input answers ``d`` steps later than the engine, which answers at once.

* **Integrator** (approximate): a current-based pair whose synaptic current holds the
  input level between spikes (see :func:`_add_integrator`).
* **relu** (approximate): mapped as identity; the node's report says so.
* **AvgPool2d**: a convolution whose kernel is the pool weight on the channel diagonal.

Nodes that have no such form (Product; tanh, sigmoid, abs, clip) raise
:class:`MappingError` naming the node and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikefuse.builder.model import (
    ACT_CODES,
    E_CONV,
    E_DENSE,
    E_ELEM,
    E_POOL,
    K_ACT,
    K_CONV,
    K_DENSE,
    K_INPUT,
    K_INTEGRATOR,
    K_PRODUCT,
    KIND_NAMES,
    Model,
)
from spikefuse.errors import GraphError
from spikefuse.graph.graph import Graph

ACT_NAMES = {v: k for k, v in ACT_CODES.items()}
THRESHOLD = 1.0 + 2.0**-14
"""A hair above one: a residual of exactly 1/2 does not fire (the engine's strict > 1/2),
and 2^-14 is exact in sPyNNaker's S16.15 membrane."""
TAU_M_MS = 32768.0
"""The slowest leak sPyNNaker represents exactly: decay 1 - 2^-15 per ms (about 33 s)."""


class MappingError(GraphError):
    """A node cannot be compiled to spiking neurons; names the node and the reason."""


@dataclass
class PopSpec:
    label: str
    node: str
    sign: int  # +1 / -1; 0 for a bias source
    size: int
    kind: str  # "input" (live injection / array), "bias" (array), "neuron", "integrator"
    v_reset: float = 0.0
    bias_times: list[list[int]] | None = None  # per neuron, in time steps (bias sources)


@dataclass
class ProjSpec:
    pre: str
    post: str
    node: str  # the node that owns the weights (for the per-node report)
    conns: np.ndarray  # float64 (n, 4): pre index, post index, signed weight, delay in steps


@dataclass
class NodePlan:
    name: str
    kind: str
    size: int
    hops: int  # time steps from an input to this node's spikes
    max_step_quanta: float = 0.0
    n_synapses: int = 0
    approximation: str = ""


@dataclass
class NetworkPlan:
    model: Model
    pops: dict[str, PopSpec] = field(default_factory=dict)
    projs: list[ProjSpec] = field(default_factory=list)
    nodes: dict[str, NodePlan] = field(default_factory=dict)

    def pair(self, node: str) -> tuple[str, str]:
        return f"{node}+", f"{node}-"

    @property
    def n_synapses(self) -> int:
        return int(sum(p.conns.shape[0] for p in self.projs))

    @property
    def n_neurons(self) -> int:
        return int(sum(p.size for p in self.pops.values()))


def compile_model(model: Model, max_step_quanta: float = 0.5) -> NetworkPlan:
    """The spiking network of ``model``; :class:`MappingError` listing every node that
    cannot map, each with its reason."""
    refused = refusals(model)
    if refused:
        names = ", ".join(f"'{n}'" for n in refused)
        detail = "; ".join(f"node '{n}': {why}" for n, why in refused.items())
        raise MappingError(f"{len(refused)} node(s) cannot map to SpiNNaker ({names}): {detail}")
    plan = NetworkPlan(model)
    incoming = _incoming_edges(model)
    for i, name in enumerate(model.node_names):
        kind = int(model.node_kind[i])
        size = int(model.node_size[i])
        node = NodePlan(name, KIND_NAMES[kind], size, hops=0)
        plan.nodes[name] = node
        if kind == K_INPUT:
            for sign, label in zip((1, -1), plan.pair(name), strict=True):
                plan.pops[label] = PopSpec(label, name, sign, size, "input")
            continue
        done = [plan.nodes[model.node_names[s]].hops for s, _, _ in incoming[i] if s < i]
        node.hops = 1 + max(done, default=0)  # an Integrator's input may come later (a cycle)
        n_in = sum(int(model.node_size[s]) for s, _, _ in incoming[i])
        rows = [(s, *_edge_rows(model, s, i, e, off, n_in)) for s, e, off in incoming[i]]
        if kind == K_INTEGRATOR:
            _add_integrator(plan, model, i, node, rows, max_step_quanta)
        else:
            _add_node(plan, model, i, node, rows, max_step_quanta)
        if ACT_NAMES.get(int(model.node_act[i])) == "relu" and kind in (K_DENSE, K_CONV, K_ACT):
            node.approximation = "relu as identity (exact while the pre-activation is >= 0)"
    return plan


# --------------------------------------------------------------------------- checks


def _refusal(model: Model, i: int) -> tuple[str, str] | None:
    name = model.node_names[i]
    kind = int(model.node_kind[i])
    act = ACT_NAMES.get(int(model.node_act[i]), "identity")
    if kind == K_PRODUCT:
        return name, (
            "Product multiplies two spike-coded values; IF neurons only add weighted spikes"
        )
    if kind in (K_DENSE, K_CONV, K_ACT) and act not in ("identity", "relu"):
        return name, (
            f"activation '{act}' is not piecewise linear through zero; an IF pair"
            " represents identity (and relu approximately) only"
        )
    return None


def _incoming_edges(model: Model) -> list[list[tuple[int, int, int]]]:
    inc: list[list[tuple[int, int, int]]] = [[] for _ in range(model.n_nodes)]
    for s in range(model.n_nodes):
        for e in range(int(model.edge_ptr[s]), int(model.edge_ptr[s + 1])):
            t = int(model.edge_target[e])
            inc[t].append((s, int(model.edge_kind[e]), int(model.edge_in_off[e])))
    return inc


# --------------------------------------------------------------------------- weights


def _edge_rows(
    model: Model, s: int, t: int, ekind: int, in_off: int, n_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pre index, post index, weight in value units) of the edge s -> t."""
    n_s, n_t = int(model.node_size[s]), int(model.node_size[t])
    if ekind == E_DENSE:
        wp = int(model.node_wptr[t])
        w = model.weights[wp : wp + n_in * n_t].reshape(n_in, n_t)[in_off : in_off + n_s]
        pre, post = np.nonzero(w)
        return pre, post, w[pre, post]
    if ekind == E_CONV:
        return _conv_rows(model, t, in_off, n_s)
    if ekind == E_POOL:
        return _conv_rows(model, t, in_off, n_s, pool=True)
    if ekind == E_ELEM:
        idx = np.arange(n_s)
        return idx, idx + in_off, np.ones(n_s)
    raise MappingError("edge kind has no synaptic form", model.node_names[t])  # pragma: no cover


def _conv_rows(model: Model, t: int, in_off: int, n_s: int, pool: bool = False):
    """Synapses of a convolution; an average pool is the convolution whose kernel is its
    one weight (1/(kh·kw)) on the channel diagonal."""
    co, ci, kh, kw, h, w, ho, wo, sy, sx, py, px = (int(v) for v in model.node_conv[t])
    wp = int(model.node_wptr[t])
    if pool:
        k = np.zeros((co, ci, kh, kw))
        k[np.arange(co), np.arange(ci)] = model.weights[wp]
    else:
        k = model.weights[wp : wp + co * ci * kh * kw].reshape(co, ci, kh, kw)
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    pres, posts, ws = [], [], []
    for o in range(co):
        for c in range(ci):
            for ky in range(kh):
                for kx in range(kw):
                    if k[o, c, ky, kx] == 0.0:
                        continue
                    y = oy * sy + ky - py
                    x = ox * sx + kx - px
                    ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                    r = c * h * w + y[ok] * w + x[ok] - in_off
                    inside = (r >= 0) & (r < n_s)
                    pres.append(r[inside])
                    posts.append(((o * ho + oy[ok]) * wo + ox[ok])[inside])
                    ws.append(np.full(int(inside.sum()), k[o, c, ky, kx]))
    cat = np.concatenate
    return (cat(pres), cat(posts), cat(ws)) if pres else (np.zeros(0, int),) * 2 + (np.zeros(0),)


def split_steps(pre, post, step, max_step: float) -> np.ndarray:
    """Connection rows (pre, post, step, delay): a step above ``max_step`` thresholds
    becomes m = ceil(|step|/max_step) copies of step/m at delays 1..m."""
    m = np.maximum(1, np.ceil(np.abs(step) / max_step - 1e-12)).astype(np.int64)
    rep = np.repeat(np.arange(step.size), m)
    delay = np.arange(rep.size) - np.repeat(np.cumsum(m) - m, m) + 1
    return np.column_stack([pre[rep], post[rep], (step / m)[rep], delay]).astype(np.float64)


def expected_overshoot(steps: np.ndarray) -> float:
    """Mean overshoot of a threshold crossed by positive steps X: E[X^2] / (2 E[X])."""
    a = np.abs(steps[steps != 0.0])
    return float((a**2).mean() / (2.0 * a.mean())) if a.size else 0.0


def _add_node(plan: NetworkPlan, model: Model, i: int, node: NodePlan, rows, max_step: float):
    name = node.name
    k_t = float(model.unit_scale[int(model.node_off[i])])
    pos, neg = plan.pair(name)
    all_steps = []
    for s, pre, post, w in rows:
        k_s = float(model.unit_scale[int(model.node_off[s])])
        conns = split_steps(pre, post, w * k_t / k_s, max_step)
        all_steps.append(conns[:, 2])
        node.max_step_quanta = max(
            node.max_step_quanta, float(np.abs(w).max(initial=0)) * k_t / k_s
        )
        spos, sneg = plan.pair(model.node_names[s])
        flip = conns * np.array([1.0, 1.0, -1.0, 1.0])
        # +: +r from src+, -r from src-; -: the mirror image
        plan.projs += [
            ProjSpec(spos, pos, name, conns),
            ProjSpec(sneg, pos, name, flip),
            ProjSpec(spos, neg, name, flip),
            ProjSpec(sneg, neg, name, conns),
        ]
        node.n_synapses += 4 * conns.shape[0]
    _add_bias(plan, model, i, name, k_t, max_step, all_steps)
    rho = expected_overshoot(np.concatenate(all_steps)) if all_steps else 0.0
    for sign, label in ((1, pos), (-1, neg)):
        plan.pops[label] = PopSpec(label, name, sign, node.size, "neuron", v_reset=min(rho, 0.5))
    one = np.arange(node.size, dtype=np.float64)
    couple = np.column_stack([one, one, np.ones(node.size), np.ones(node.size)])
    plan.projs += [ProjSpec(pos, neg, name, couple), ProjSpec(neg, pos, name, couple.copy())]


def _add_integrator(plan, model, i, node: NodePlan, rows, max_step: float) -> None:
    """``dy/dt = g*x - y/tau`` on a pair of current-based neurons (``IF_curr_exp``) whose
    synaptic current, with tau_syn = 32768 ms, holds ``I = k*(g*x - y/tau)`` thresholds per
    ms between spikes: a source spike steps it by ``k*g/k_s``, the pair's own spikes by
    ``-+1/tau`` (the leak, as feedback), and the membrane integrates it. Jumps (the partner's
    quantum, ``y0``) are current pulses: +c at one delay and -c one step later."""
    name = node.name
    off = int(model.node_off[i])
    units = np.arange(node.size)
    k = float(model.unit_scale[off])
    g = model.int_gain[off : off + node.size]
    inv_tau = model.int_inv_tau[off : off + node.size]
    pos, neg = plan.pair(name)
    for s, pre, post, w in rows:
        k_s = float(model.unit_scale[int(model.node_off[s])])
        cur = w * g[post] * k / k_s / 1000.0  # thresholds per ms per source quantum
        node.max_step_quanta = max(node.max_step_quanta, float(np.abs(cur).max(initial=0.0)))
        conns = np.column_stack([pre, post, cur, np.ones(pre.size)])
        spos, sneg = plan.pair(model.node_names[s])
        flip = conns * np.array([1.0, 1.0, -1.0, 1.0])
        plan.projs += [
            ProjSpec(spos, pos, name, conns),
            ProjSpec(sneg, pos, name, flip),
            ProjSpec(spos, neg, name, flip),
            ProjSpec(sneg, neg, name, conns),
        ]
        node.n_synapses += 4 * pre.size
    u = units.astype(np.float64)
    leaky = inv_tau > 0
    if leaky.any():
        lk = np.column_stack([u[leaky], u[leaky], inv_tau[leaky] / 1000.0, np.ones(leaky.sum())])
        neg_lk = lk * np.array([1.0, 1.0, -1.0, 1.0])
        plan.projs += [
            ProjSpec(pos, pos, name, neg_lk),
            ProjSpec(pos, neg, name, lk),
            ProjSpec(neg, neg, name, neg_lk),
            ProjSpec(neg, pos, name, lk),
        ]
        node.n_synapses += 4 * int(leaky.sum())
    for a, b in ((pos, neg), (neg, pos)):
        plan.projs += [ProjSpec(a, b, name, p) for p in pulse(u, u, np.ones(node.size))]
    y0 = model.int_y0[off : off + node.size] * k
    _add_start_pulses(plan, name, y0, max_step)
    for label in (pos, neg):
        plan.pops[label] = PopSpec(label, name, 1 if label == pos else -1, node.size, "integrator")
    node.approximation = (
        "held input current decays with tau_syn 32768 ms; reset loses the overshoot"
        " (rate error up to k*g*|x|*dt/2 quanta per quantum)"
    )


def pulse(pre: np.ndarray, post: np.ndarray, step: np.ndarray, delay: int = 1) -> list:
    """Rows of a membrane jump of ``step`` thresholds on a current-based neuron: a current
    of ``step`` per ms switched on at ``delay`` and off one step later (dt = 1 step)."""
    on = np.column_stack([pre, post, step, np.full(pre.size, float(delay))])
    off = np.column_stack([pre, post, -step, np.full(pre.size, float(delay + 1))])
    return [on, off]


def _add_start_pulses(plan, name, amount: np.ndarray, max_step: float) -> None:
    units = np.flatnonzero(amount)
    if not units.size:
        return
    n = np.maximum(1, np.ceil(np.abs(amount[units]) / max_step - 1e-12)).astype(np.int64)
    label = f"{name}:y0"
    plan.pops[label] = PopSpec(
        label, name, 0, units.size, "bias", bias_times=[list(range(1, int(m) + 1)) for m in n]
    )
    idx = np.arange(units.size, dtype=np.float64)
    step = amount[units] / n
    pos, neg = plan.pair(name)
    for target, sign in ((pos, 1.0), (neg, -1.0)):
        plan.projs += [ProjSpec(label, target, name, p) for p in pulse(idx, units, sign * step)]
    plan.nodes[name].n_synapses += 4 * units.size


def _add_bias(plan, model, i, name, k_t, max_step, all_steps) -> None:
    """A bias b is k*b thresholds delivered once at start, as spikes of a source over the
    first steps (each below ``max_step``)."""
    sl = slice(int(model.node_off[i]), int(model.node_off[i] + model.node_size[i]))
    b = model.unit_bias[sl] * k_t
    units = np.flatnonzero(b)
    if not units.size:
        return
    n = np.maximum(1, np.ceil(np.abs(b[units]) / max_step - 1e-12)).astype(np.int64)
    label = f"{name}:bias"
    times = [list(range(1, int(m) + 1)) for m in n]
    plan.pops[label] = PopSpec(label, name, 0, units.size, "bias", bias_times=times)
    idx = np.arange(units.size, dtype=np.float64)
    step = b[units] / n
    conns = np.column_stack([idx, units, step, np.ones(units.size)])
    pos, neg = plan.pair(name)
    plan.projs += [
        ProjSpec(label, pos, name, conns),
        ProjSpec(label, neg, name, conns * np.array([1.0, 1.0, -1.0, 1.0])),
    ]
    all_steps.append(step)
    plan.nodes[name].n_synapses += 2 * units.size


def refusals(model: Model) -> dict[str, str]:
    """Every node that cannot map, with the reason; a node fed by one that cannot map
    cannot map either."""
    out: dict[str, str] = {}
    inc = _incoming_edges(model)
    changed = True
    while changed:  # index order is topological except for the edges into Integrators
        changed = False
        for i, name in enumerate(model.node_names):
            if name in out:
                continue
            r = _refusal(model, i)
            blocked = [model.node_names[s] for s, _, _ in inc[i] if model.node_names[s] in out]
            if r is not None or blocked:
                out[name] = r[1] if r is not None else f"fed by '{blocked[0]}', which cannot map"
                changed = True
    return out


def mappable_part(graph: Graph) -> tuple[Graph, dict[str, str]]:
    """The sub-graph of ``graph`` that maps, and the refusal of every other node."""
    from spikefuse.builder import build

    rg = graph.resolve()
    refused = refusals(build(rg))
    kept = [rg.nodes[n] for n in rg.order if n not in refused]
    return Graph(f"{graph.name}-mappable", kept), refused


def with_probes(part: Graph, refused: dict[str, str]) -> Graph:
    """``part`` plus an Output ``<node>_probe`` (at the node's scale) on every node whose
    consumers were all refused: what the function check and the live output can observe."""
    rg = part.resolve()
    fed = {s for n in rg.nodes.values() for s in n.sources}
    g = Graph(part.name, list(part.nodes.values()))
    for name in rg.order:
        node = rg.nodes[name]
        if name not in fed and node.type not in ("output", "input"):
            g.output(f"{name}_probe", name, scale=node.scale)
    return g


def describe(plan: NetworkPlan) -> str:
    lines = []
    for n in plan.nodes.values():
        extra = f" ({n.approximation})" if n.approximation else ""
        lines.append(
            f"{n.name}: {n.kind} x{n.size}, {n.n_synapses} synapses, "
            f"max step {n.max_step_quanta:.3g} thresholds, {n.hops} hop(s){extra}"
        )
    return "\n".join(lines)


def hops_latency_us(plan: NetworkPlan, timestep_us: float) -> dict[str, float]:
    return {n.name: n.hops * timestep_us for n in plan.nodes.values()}


__all__ = [
    "THRESHOLD",
    "TAU_M_MS",
    "MappingError",
    "NetworkPlan",
    "NodePlan",
    "PopSpec",
    "ProjSpec",
    "compile_model",
    "mappable_part",
    "with_probes",
    "refusals",
    "describe",
    "expected_overshoot",
    "hops_latency_us",
    "split_steps",
]
