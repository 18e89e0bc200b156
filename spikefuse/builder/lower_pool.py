import numpy as np

from spikefuse.builder.lower_conv import window_fanout
from spikefuse.builder.model import E_POOL, BuildContext, lowers
from spikefuse.graph.nodes import AvgPool2d


@lowers(AvgPool2d)
def lower_avgpool(ctx: BuildContext, i: int, node: AvgPool2d) -> None:
    """One weight (1/(kh·kw)) and the conv geometry row (C_out = C_in = C)."""
    ctx.wptr[i] = ctx.add_weights(np.array([node.weight]))
    c, h, w = node.in_shape
    _, ho, wo = node.out_shape
    ctx.conv[i] = (c, c, *node.kernel, h, w, ho, wo, *node.step, *node.padding)
    ctx.connect(i, node.sources, E_POOL)
    # a pixel touches only the windows of its own channel that cover it
    per_pixel = window_fanout((h, w), node.kernel, node.step, node.padding)
    ctx.add_fanout(node.sources, np.tile(per_pixel, c))
