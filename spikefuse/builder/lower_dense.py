import numpy as np

from spikefuse.builder.model import E_DENSE, BuildContext, lowers
from spikefuse.graph.nodes import Dense


@lowers(Dense)
def lower_dense(ctx: BuildContext, i: int, node: Dense) -> None:
    ctx.set_activation(i, node)
    ctx.wptr[i] = ctx.add_weights(node.weights)  # (n_in, n_out) row-major = input-major
    if node.bias is not None:
        ctx.unit_bias[ctx.units(i)] = node.bias
    ctx.connect(i, node.sources, E_DENSE)
    # every input unit of this layer touches all n_out outputs
    ctx.add_fanout(node.sources, np.full(node.n_in, node.size, np.int64))
