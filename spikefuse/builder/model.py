"""The lowered model: flat arrays that any runner (Cython engine, NumPy reference,
SpiNNaker backend) executes. Nodes are numbered in topological order of the
instantaneous sub-graph, so one pass in index order settles the graph."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikefuse.graph.kinds import ACTIVATIONS, NODE_KINDS, edge_kind, node_kind
from spikefuse.graph.nodes import Node

# the numbering lives in spikefuse.graph.kinds (the compiled engine's enums are generated
# from it); these names are the builder's and the reference engine's view of it
KIND_NAMES = NODE_KINDS
K_INPUT = node_kind("input")
K_DENSE = node_kind("dense")
K_CONV = node_kind("conv2d")
K_ACT = node_kind("activation")
K_PRODUCT = node_kind("product")
K_INTEGRATOR = node_kind("integrator")
K_OUTPUT = node_kind("output")
K_POOL = node_kind("avgpool2d")
E_DENSE = edge_kind("dense")
E_CONV = edge_kind("conv")
E_ELEM = edge_kind("elem")
E_PROD_A = edge_kind("prod_a")
E_PROD_B = edge_kind("prod_b")
E_POOL = edge_kind("pool")
ACT_CODES = {name: i for i, name in enumerate(ACTIVATIONS)}

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31 - 1)  # symmetric saturation range


@dataclass
class Model:
    """Flat arrays of a built graph (all C-contiguous)."""

    name: str
    node_names: list[str]
    node_kind: np.ndarray  # int32[n_nodes]
    node_off: np.ndarray  # int64[n_nodes]  first unit
    node_size: np.ndarray  # int64[n_nodes]
    node_act: np.ndarray  # int32[n_nodes]
    node_lo: np.ndarray  # float64[n_nodes]
    node_hi: np.ndarray  # float64[n_nodes]
    node_wptr: np.ndarray  # int64[n_nodes]  offset into `weights` (dense/conv), -1 otherwise
    node_conv: np.ndarray  # int64[n_nodes, 11]: Co, Ci, kh, kw, H, W, Ho, Wo, sy, sx, py, px -> 12
    edge_ptr: np.ndarray  # int64[n_nodes+1]  edges of sending node s: [edge_ptr[s], edge_ptr[s+1])
    edge_kind: np.ndarray  # int32[n_edges]
    edge_target: np.ndarray  # int32[n_edges]
    edge_in_off: np.ndarray  # int64[n_edges]  offset of this source inside the target's input
    weights: np.ndarray  # float64[...]  dense W (input-major rows) and conv kernels, concatenated
    unit_scale: np.ndarray  # float64[n_units]
    unit_bias: np.ndarray  # float64[n_units] (dense/conv bias; else 0)
    unit_fanout: np.ndarray  # int64[n_units] synaptic ops per spike of this unit
    int_gain: np.ndarray  # float64[n_units] (integrators only; else 0)
    int_inv_tau: np.ndarray  # float64[n_units] 1/tau, 0 for no leak
    int_y0: np.ndarray  # float64[n_units]
    int_min_gap_ns: np.ndarray  # int64[n_units] least time between two crossings of a unit
    input_names: list[str] = field(default_factory=list)
    input_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    output_names: list[str] = field(default_factory=list)
    output_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def n_units(self) -> int:
        return int(self.unit_scale.shape[0])

    def index(self, name: str) -> int:
        return self.node_names.index(name)

    def units_of(self, name: str) -> slice:
        i = self.index(name)
        o = int(self.node_off[i])
        return slice(o, o + int(self.node_size[i]))


# --- registry of per-type lowering functions (one module per node type) -----------------

LowerFn = Callable[["BuildContext", int, Node], None]
_LOWERERS: dict[type, LowerFn] = {}


def lowers(node_type: type) -> Callable[[LowerFn], LowerFn]:
    """Register the function that lowers ``node_type`` into a :class:`BuildContext`."""

    def deco(fn: LowerFn) -> LowerFn:
        _LOWERERS[node_type] = fn
        return fn

    return deco


def kind_of(node: Node) -> int:
    """The node's kind code: the index of its ``type`` name in :data:`NODE_KINDS`."""
    return node_kind(node.type)


def lowerer_for(node: Node) -> LowerFn:
    try:
        return _LOWERERS[type(node)]
    except KeyError:
        raise TypeError(f"no builder registered for node type {type(node).__name__}") from None


@dataclass
class BuildContext:
    """Mutable state while lowering; turned into a :class:`Model` at the end."""

    names: list[str]
    index: dict[str, int]
    off: np.ndarray
    size: np.ndarray
    kind: np.ndarray
    act: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    wptr: np.ndarray
    conv: np.ndarray
    unit_scale: np.ndarray
    unit_bias: np.ndarray
    unit_fanout: np.ndarray
    int_gain: np.ndarray
    int_inv_tau: np.ndarray
    int_y0: np.ndarray
    int_min_gap_ns: np.ndarray
    weight_blocks: list[np.ndarray] = field(default_factory=list)
    n_weights: int = 0
    # edges collected per sending node: (kind, target, in_off)
    edges: list[list[tuple[int, int, int]]] = field(default_factory=list)

    def add_weights(self, w: np.ndarray) -> int:
        ptr = self.n_weights
        flat = np.ascontiguousarray(w, dtype=np.float64).ravel()
        self.weight_blocks.append(flat)
        self.n_weights += flat.size
        return ptr

    def connect(self, target: int, sources: list[str], kind: int) -> None:
        """Connect concatenated ``sources`` into ``target`` with edges of ``kind``."""
        in_off = 0
        for src in sources:
            s = self.index[src]
            self.edges[s].append((kind, target, in_off))
            in_off += int(self.size[s])

    def add_fanout(self, sources: list[str], per_input_unit: np.ndarray) -> None:
        """Add the ops one spike of each (concatenated) input unit costs into this node."""
        in_off = 0
        for src in sources:
            u = self.units(self.index[src])
            n = u.stop - u.start
            self.unit_fanout[u] += per_input_unit[in_off : in_off + n]
            in_off += n

    def set_activation(self, i: int, node: Node) -> None:
        name = getattr(node, "activation", "identity")
        self.act[i] = ACT_CODES[name]
        if name == "clip":
            self.lo[i], self.hi[i] = node.lo, node.hi

    def units(self, i: int) -> slice:
        return slice(int(self.off[i]), int(self.off[i] + self.size[i]))
