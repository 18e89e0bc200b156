"""Lower a validated graph to flat arrays (:class:`Model`). One module per node type,
each registering its lowering function with :func:`lowers`."""

from __future__ import annotations

import numpy as np

from spikefuse.builder import (  # noqa: F401  (registration side effects)
    lower_conv,
    lower_dense,
    lower_elementwise,
    lower_input,
    lower_integrator,
    lower_pool,
)
from spikefuse.builder.model import (
    ACT_CODES,
    KIND_NAMES,
    BuildContext,
    Model,
    kind_of,
    lowerer_for,
)
from spikefuse.graph.graph import Graph, ResolvedGraph
from spikefuse.graph.nodes import Input, Output


def build(graph: Graph | ResolvedGraph | Model) -> Model:
    """Validate (if needed) and lower ``graph`` into a :class:`Model`."""
    if isinstance(graph, Model):
        return graph
    rg = graph.resolve() if isinstance(graph, Graph) else graph
    names = list(rg.order)
    n = len(names)
    sizes = np.array([rg.nodes[nm].size for nm in names], dtype=np.int64)
    off = np.zeros(n, np.int64)
    off[1:] = np.cumsum(sizes)[:-1]
    n_units = int(sizes.sum())
    ctx = BuildContext(
        names=names,
        index={nm: i for i, nm in enumerate(names)},
        off=off,
        size=sizes,
        kind=np.zeros(n, np.int32),
        act=np.zeros(n, np.int32),
        lo=np.zeros(n, np.float64),
        hi=np.zeros(n, np.float64),
        wptr=np.full(n, -1, np.int64),
        conv=np.zeros((n, 12), np.int64),
        unit_scale=np.repeat(np.array([rg.nodes[nm].scale for nm in names], np.float64), sizes),
        unit_bias=np.zeros(n_units, np.float64),
        unit_fanout=np.zeros(n_units, np.int64),
        int_gain=np.zeros(n_units, np.float64),
        int_inv_tau=np.zeros(n_units, np.float64),
        int_y0=np.zeros(n_units, np.float64),
        int_min_gap_ns=np.zeros(n_units, np.int64),
        edges=[[] for _ in range(n)],
    )
    for i, nm in enumerate(names):
        node = rg.nodes[nm]
        ctx.kind[i] = kind_of(node)
        lowerer_for(node)(ctx, i, node)
    edge_ptr = np.zeros(n + 1, np.int64)
    flat = []
    for s in range(n):
        flat.extend(ctx.edges[s])
        edge_ptr[s + 1] = len(flat)
    weights = np.concatenate(ctx.weight_blocks) if ctx.weight_blocks else np.zeros(0, np.float64)
    inputs = [nm for nm in names if isinstance(rg.nodes[nm], Input)]
    outputs = [nm for nm in names if isinstance(rg.nodes[nm], Output)]
    return Model(
        name=rg.name,
        node_names=names,
        node_kind=ctx.kind,
        node_off=off,
        node_size=sizes,
        node_act=ctx.act,
        node_lo=ctx.lo,
        node_hi=ctx.hi,
        node_wptr=ctx.wptr,
        node_conv=ctx.conv,
        edge_ptr=edge_ptr,
        edge_kind=np.array([e[0] for e in flat], np.int32),
        edge_target=np.array([e[1] for e in flat], np.int32),
        edge_in_off=np.array([e[2] for e in flat], np.int64),
        weights=np.ascontiguousarray(weights),
        unit_scale=ctx.unit_scale,
        unit_bias=ctx.unit_bias,
        unit_fanout=ctx.unit_fanout,
        int_gain=ctx.int_gain,
        int_inv_tau=ctx.int_inv_tau,
        int_y0=ctx.int_y0,
        int_min_gap_ns=ctx.int_min_gap_ns,
        input_names=inputs,
        input_nodes=np.array([ctx.index[x] for x in inputs], np.int32),
        output_names=outputs,
        output_nodes=np.array([ctx.index[x] for x in outputs], np.int32),
    )


__all__ = ["ACT_CODES", "KIND_NAMES", "Model", "build"]
