import math

import numpy as np

from spikefuse.builder.model import E_ELEM, BuildContext, lowers
from spikefuse.graph.nodes import Integrator


@lowers(Integrator)
def lower_integrator(ctx: BuildContext, i: int, node: Integrator) -> None:
    u = ctx.units(i)
    n = node.size
    ctx.int_gain[u] = np.broadcast_to(np.asarray(node.gain, np.float64), (n,))
    if node.tau_s is not None:
        ctx.int_inv_tau[u] = 1.0 / np.broadcast_to(np.asarray(node.tau_s, np.float64), (n,))
    ctx.int_y0[u] = np.broadcast_to(np.asarray(node.y0, np.float64), (n,))
    ctx.int_min_gap_ns[u] = math.ceil(1e9 / node.max_crossing_rate_hz)
    ctx.connect(i, node.sources, E_ELEM)
    for src in node.sources:
        ctx.unit_fanout[ctx.units(ctx.index[src])] += 1
