import numpy as np

from spikefuse.builder.model import E_CONV, BuildContext, lowers
from spikefuse.graph.nodes import Conv2d


def window_fanout(hw, kernel, stride, padding) -> np.ndarray:
    """How many output windows cover each input pixel (H×W flat), for one channel pair."""

    def axis_count(n_in: int, k: int, s: int, p: int) -> np.ndarray:
        n_out = (n_in + 2 * p - k) // s + 1
        cnt = np.zeros(n_in, np.int64)
        for o in range(n_out):
            for kk in range(k):
                y = o * s - p + kk
                if 0 <= y < n_in:
                    cnt[y] += 1
        return cnt

    (h, w), (kh, kw), (sy, sx), (py, px) = hw, kernel, stride, padding
    return np.outer(axis_count(h, kh, sy, py), axis_count(w, kw, sx, px)).ravel()


def conv_fanout(node: Conv2d) -> np.ndarray:
    """Number of outputs each input pixel touches (per input unit, C×H×W flat)."""
    c, h, w = node.in_shape
    per_pixel = window_fanout((h, w), node.kernels.shape[2:], node.stride, node.padding)
    return np.tile(per_pixel * node.out_shape[0], c)


@lowers(Conv2d)
def lower_conv(ctx: BuildContext, i: int, node: Conv2d) -> None:
    ctx.set_activation(i, node)
    ctx.wptr[i] = ctx.add_weights(node.kernels)  # (Co, Ci, kh, kw) C-order
    co, ho, wo = node.out_shape
    ci, h, w = node.in_shape
    kh, kw = node.kernels.shape[2:]
    ctx.conv[i] = (co, ci, kh, kw, h, w, ho, wo, *node.stride, *node.padding)
    if node.bias is not None:
        ctx.unit_bias[ctx.units(i)] = np.repeat(node.bias, ho * wo)
    ctx.connect(i, node.sources, E_CONV)
    ctx.add_fanout(node.sources, conv_fanout(node))
