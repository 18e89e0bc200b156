"""Frame-based executor: every node of a graph updated at every sample, no quantization.

This is "the frame-based way" that the event-driven engines are compared against. Each
:meth:`DenseExecutor.step` holds the inputs of the previous step over ``dt_s`` while the
integrators advance exactly (linear ramp without leak, exponential with one), then sets the
new input values and recomputes every non-integrator node in topological order.

Each node computes its own frame-based value (:meth:`spikefuse.graph.nodes.Node.dense`). Ops
are counted as the weights/elements evaluated per step (:meth:`Node.dense_ops`): Dense
``n_in*n_out``, Conv2d ``C_out*H_out*W_out*C_in*kh*kw``, AvgPool2d ``C*H_out*W_out*kh*kw``,
Activation/Product/Integrator/Output ``n``; Input nodes cost nothing (the sample is given). ``ops_per_step`` is fixed for a graph, ``counters``
accumulates it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from spikefuse.graph.graph import Graph, ResolvedGraph
from spikefuse.graph.nodes import Input, Integrator, Node, Output, apply_activation


def _per_unit(v: float | list[float] | None, n: int, default: float) -> np.ndarray:
    if v is None:
        return np.full(n, default)
    return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()


def node_ops(node: Node) -> int:
    """Weights/elements evaluated when ``node`` is recomputed once (see module doc)."""
    return node.dense_ops()


class DenseExecutor:
    """Run ``graph`` frame by frame: ``step(dt_s, {"gyro": w, "accel": a})``.

    Inputs not given in a step keep their last value (sample-and-hold), so a slower sensor
    is simply given less often."""

    def __init__(self, graph: Graph | ResolvedGraph):
        self.graph: ResolvedGraph = graph.resolve() if isinstance(graph, Graph) else graph
        self.nodes = self.graph.nodes
        self.order = [n for n in self.graph.order if not isinstance(self.nodes[n], Integrator)]
        self.integrators = [n for n in self.graph.order if isinstance(self.nodes[n], Integrator)]
        self.input_names = [n for n, nd in self.nodes.items() if isinstance(nd, Input)]
        self.output_names = [n for n, nd in self.nodes.items() if isinstance(nd, Output)]
        self.ops_per_step = sum(node_ops(nd) for nd in self.nodes.values())
        self._gain = {}
        self._inv_tau = {}
        for n in self.integrators:
            nd = self.nodes[n]
            self._gain[n] = _per_unit(nd.gain, nd.size, 1.0)
            tau = _per_unit(nd.tau_s, nd.size, math.inf)
            self._inv_tau[n] = 1.0 / tau
        self.reset()

    def reset(self) -> None:
        """Inputs to zero, integrators to y0, everything else recomputed."""
        self.values: dict[str, np.ndarray] = {}
        for n, nd in self.nodes.items():
            if isinstance(nd, Integrator):
                self.values[n] = _per_unit(nd.y0, nd.size, 0.0)
            else:
                self.values[n] = np.zeros(nd.size)
        self.n_steps = 0
        self.syn_ops = 0
        self._evaluate()
        self._x_int = {n: self._gather(self.nodes[n].sources) for n in self.integrators}

    # -- stepping -------------------------------------------------------------------------
    def step(self, dt_s: float, inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """Advance integrators by ``dt_s`` (inputs held), then apply ``inputs`` and
        recompute every node."""
        if not dt_s >= 0.0:
            raise ValueError(f"dt_s must be >= 0, found {dt_s}")
        for n in self.integrators:
            y, x = self.values[n], self._x_int[n]
            g, inv_tau = self._gain[n], self._inv_tau[n]
            leaky = inv_tau > 0.0
            y_new = y + g * x * dt_s
            if leaky.any():
                y_inf = g[leaky] * x[leaky] / inv_tau[leaky]
                y_new[leaky] = y_inf + (y[leaky] - y_inf) * np.exp(-dt_s * inv_tau[leaky])
            self.values[n] = y_new
        for name, v in (inputs or {}).items():
            node = self.nodes.get(name)
            if not isinstance(node, Input):
                raise ValueError(f"unknown input '{name}'; the graph has inputs {self.input_names}")
            a = np.asarray(v, dtype=np.float64)
            if a.shape != (node.size,):
                raise ValueError(f"input '{name}' expects shape ({node.size},), found {a.shape}")
            self.values[name] = a.copy()
        self._evaluate()
        for n in self.integrators:
            self._x_int[n] = self._gather(self.nodes[n].sources)
        self.n_steps += 1
        self.syn_ops += self.ops_per_step

    def _gather(self, sources: list[str]) -> np.ndarray:
        if len(sources) == 1:
            return self.values[sources[0]]
        return np.concatenate([self.values[s] for s in sources])

    def _evaluate(self) -> None:
        for n in self.order:
            nd = self.nodes[n]
            if isinstance(nd, Input):
                continue
            ports = {f: self._gather(srcs) for f, srcs in nd.source_fields().items()}
            self.values[n] = nd.dense(ports)

    # -- reading --------------------------------------------------------------------------
    def node_value(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise ValueError(f"unknown node '{name}'")
        return self.values[name].copy()

    def output_value(self, name: str) -> np.ndarray:
        if name not in self.output_names:
            raise ValueError(f"unknown output '{name}'; outputs are {self.output_names}")
        return self.values[name].copy()

    @property
    def counters(self) -> dict[str, int]:
        return {"syn_ops": self.syn_ops, "n_steps": self.n_steps, "ops_per_step": self.ops_per_step}


__all__ = ["DenseExecutor", "apply_activation", "node_ops"]
