import numpy as np

from spikefuse.builder.model import E_CONV, K_CONV, BuildContext, lowers
from spikefuse.graph.nodes import Conv2d


def conv_fanout(node: Conv2d) -> np.ndarray:
    """Number of outputs each input pixel touches (per input unit, C×H×W flat)."""
    c, h, w = node.in_shape
    co, ho, wo = node.out_shape
    kh, kw = node.kernels.shape[2:]
    (sy, sx), (py, px) = node.stride, node.padding

    def axis_count(n_in: int, n_out: int, k: int, s: int, p: int) -> np.ndarray:
        cnt = np.zeros(n_in, np.int64)
        for o in range(n_out):
            for kk in range(k):
                y = o * s - p + kk
                if 0 <= y < n_in:
                    cnt[y] += 1
        return cnt

    cy = axis_count(h, ho, kh, sy, py)
    cx = axis_count(w, wo, kw, sx, px)
    per_pixel = np.outer(cy, cx).ravel() * co
    return np.tile(per_pixel, c)


@lowers(Conv2d)
def lower_conv(ctx: BuildContext, i: int, node: Conv2d) -> None:
    ctx.kind[i] = K_CONV
    ctx.set_activation(i, node)
    ctx.wptr[i] = ctx.add_weights(node.kernels)  # (Co, Ci, kh, kw) C-order
    co, ho, wo = node.out_shape
    ci, h, w = node.in_shape
    kh, kw = node.kernels.shape[2:]
    ctx.conv[i] = (co, ci, kh, kw, h, w, ho, wo, *node.stride, *node.padding)
    if node.bias is not None:
        ctx.unit_bias[ctx.units(i)] = np.repeat(node.bias, ho * wo)
    ctx.connect(i, node.sources, E_CONV)
    fan = conv_fanout(node)
    in_off = 0
    for src in node.sources:
        s = ctx.index[src]
        n = int(ctx.size[s])
        ctx.unit_fanout[ctx.units(s)] += fan[in_off : in_off + n]
        in_off += n
