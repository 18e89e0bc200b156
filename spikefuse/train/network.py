"""The trainable network (JAX) and its export to a spikefuse :class:`Graph`.

Every layer is one graph node with a sigma-delta scale ``k = exp(kappa)``: Conv2d, AvgPool2d,
Activation and Dense, then a linear Dense with one unit per target channel and an Output.
Inputs are standardised and targets de-standardised inside the network with fixed
constants; the export folds both into the first and the last Dense layer, so the graph takes
the raw reconstructed inputs and emits raw motor values.

The rounding network (``quantize=True``) is what the engine computes: every node's value
``round_half_away(k*v)/k``, with straight-through gradients so the scales can be learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from spikefuse.graph import Graph
from spikefuse.train.config import (
    ActivationLayer,
    AvgPool2dLayer,
    Conv2dLayer,
    DenseLayer,
    TrainConfig,
)

jax.config.update("jax_enable_x64", True)


@dataclass(frozen=True)
class NodePlan:
    name: str
    layer: object  # a layer spec (or DenseLayer for the output layer)
    in_shape: tuple[int, ...]  # (C, H, W) or (n,)
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class Norm:
    vec_mean: np.ndarray
    vec_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray


def _out_len(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


class Architecture:
    """Node plan of the configured network (names and shapes; no parameters)."""

    def __init__(self, cfg: TrainConfig, n_out: int):
        net = cfg.network
        self.image_input = net.image_input
        self.vector_inputs = list(net.vector_inputs)
        self.vec_sizes = [cfg.inputs[v].n for v in self.vector_inputs]
        used = {net.image_input, *self.vector_inputs}
        # inputs the network does not use stay graph inputs (no edges, no ops), so one core
        # config serves this graph and a hand-built one that reads other streams
        self.extra_inputs = {n: s.n for n, s in cfg.inputs.items() if n not in used}
        self.output_name = net.output_name
        self.n_out = n_out
        nodes: list[NodePlan] = []
        shape: tuple[int, ...] = cfg.inputs[net.image_input].shape if net.image_input else (0,)
        self.image_shape = shape if net.image_input else None
        for i, layer in enumerate(net.image_layers):
            out = _image_out(layer, shape)
            nodes.append(NodePlan(f"img{i}_{layer.type}", layer, shape, out))
            shape = out
        n_img = int(np.prod(shape)) if net.image_input else 0
        self.n_image_features = n_img
        self.n_image_nodes = len(nodes)
        n = n_img + sum(self.vec_sizes)
        for i, layer in enumerate(net.dense_layers):
            units = layer.units if isinstance(layer, DenseLayer) else n
            nodes.append(NodePlan(f"fc{i}_{layer.type}", layer, (n,), (units,)))
            n = units
        nodes.append(NodePlan("out_linear", DenseLayer(type="dense", units=n_out), (n,), (n_out,)))
        self.nodes = nodes

    @property
    def n_scales(self) -> int:
        return len(self.nodes)


def _image_out(layer, shape):
    c, h, w = shape
    if isinstance(layer, Conv2dLayer):
        (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
        return (layer.channels, _out_len(h, kh, sy, py), _out_len(w, kw, sx, px))
    if isinstance(layer, AvgPool2dLayer):
        (kh, kw), (py, px) = layer.kernel, layer.padding
        sy, sx = layer.stride or layer.kernel
        return (c, _out_len(h, kh, sy, py), _out_len(w, kw, sx, px))
    return shape


def init_params(arch: Architecture, seed: int) -> list[dict]:
    """He-style initialisation, one dict per node (empty for pooling/activation)."""
    rng = np.random.default_rng(seed)
    params = []
    for nd in arch.nodes:
        layer = nd.layer
        if isinstance(layer, Conv2dLayer):
            ci, (kh, kw) = nd.in_shape[0], layer.kernel
            fan = ci * kh * kw
            params.append(
                {
                    "w": rng.normal(0, np.sqrt(2.0 / fan), (layer.channels, ci, kh, kw)),
                    "b": np.zeros(layer.channels),
                }
            )
        elif isinstance(layer, DenseLayer):
            n_in = nd.in_shape[0]
            params.append(
                {
                    "w": rng.normal(0, np.sqrt(1.0 / n_in), (n_in, layer.units)),
                    "b": np.zeros(layer.units),
                }
            )
        else:
            params.append({})
    return jax.tree_util.tree_map(jnp.asarray, params)


def _act(layer, z):
    a = getattr(layer, "activation", "identity")
    if a == "relu":
        return jnp.maximum(z, 0.0)
    if a == "tanh":
        return jnp.tanh(z)
    if a == "clip":
        return jnp.clip(z, layer.lo, layer.hi)
    return z


def round_half_away(x):
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def ste_round(x):
    """Round half away from zero forward, identity backward (straight-through)."""
    return x + jax.lax.stop_gradient(round_half_away(x) - x)


def _apply(nd: NodePlan, p: dict, x):
    layer = nd.layer
    if isinstance(layer, Conv2dLayer):
        (py, px) = layer.padding
        z = jax.lax.conv_general_dilated(
            x,
            p["w"],
            layer.stride,
            [(py, py), (px, px)],
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
        return _act(layer, z + p["b"][None, :, None, None])
    if isinstance(layer, AvgPool2dLayer):
        (kh, kw), (py, px) = layer.kernel, layer.padding
        sy, sx = layer.stride or layer.kernel
        s = jax.lax.reduce_window(
            x,
            0.0,
            jax.lax.add,
            (1, 1, kh, kw),
            (1, 1, sy, sx),
            [(0, 0), (0, 0), (py, py), (px, px)],
        )
        return s * (1.0 / (kh * kw))
    if isinstance(layer, ActivationLayer):
        return _act(layer, x)
    return _act(layer, x @ p["w"] + p["b"])


def forward(arch: Architecture, norm: Norm, params, scales, img, vec, quantize: bool, counts=None):
    """Values of every node (list, batch-first) for a batch of raw inputs; with
    ``quantize`` each node's value is ``round(k*v)/k`` at ``scales`` k (straight-through).
    Give the graph's own scales (``np.exp(kappas)``) to reproduce the engine bit for bit.
    ``counts`` (a list) receives each node's integer count ``round(k*v)`` (straight-through):
    count the ops on these, never on ``value * k`` (under ``jax.jit`` XLA rewrites
    ``(n/k)*k`` and the gradient with respect to k comes out wrong by orders of magnitude)."""
    values = []

    def q(i, v):
        if not quantize:
            return v
        k = scales[i]
        n = ste_round(k * v)
        if counts is not None:
            counts.append(n.reshape(n.shape[0], -1))
        return n / k

    feats = []
    if arch.image_input is not None:
        x = img
        for i in range(arch.n_image_nodes):
            x = q(i, _apply(arch.nodes[i], params[i], x))
            values.append(x.reshape(x.shape[0], -1))
        feats.append(x.reshape(x.shape[0], -1))
    if arch.vector_inputs:
        feats.append((vec - norm.vec_mean) / norm.vec_std)
    x = jnp.concatenate(feats, axis=1) if len(feats) > 1 else feats[0]
    last = arch.n_scales - 1
    for i in range(arch.n_image_nodes, arch.n_scales):
        z = _apply(arch.nodes[i], params[i], x)
        if i == last:
            z = z * norm.y_std + norm.y_mean
        x = q(i, z)
        values.append(x)
    return values


def to_graph(
    arch: Architecture, norm: Norm, params, scales, input_scales: dict[str, float], name: str
) -> Graph:
    """The sigma-delta graph of the network at ``scales`` (normalisation folded)."""
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    k = np.asarray(scales, np.float64)
    g = Graph(name)
    if arch.image_input is not None:
        g.input(
            arch.image_input, int(np.prod(arch.image_shape)), scale=input_scales[arch.image_input]
        )
    for v, n in zip(arch.vector_inputs, arch.vec_sizes, strict=True):
        g.input(v, n, scale=input_scales[v])
    for v, n in arch.extra_inputs.items():
        g.input(v, n, scale=input_scales[v])
    src: str | list[str] = arch.image_input or []
    for i, nd in enumerate(arch.nodes):
        if i == arch.n_image_nodes:
            src = ([src] if arch.image_input is not None else []) + arch.vector_inputs
        _add_node(g, arch, norm, nd, params[i], src, float(k[i]), i)
        src = nd.name
    g.output(arch.output_name, src, scale=float(k[-1]))
    return g


def _add_node(g: Graph, arch, norm: Norm, nd: NodePlan, p: dict, src, k: float, i: int) -> None:
    layer = nd.layer
    act = dict(activation=getattr(layer, "activation", "identity"))
    if act["activation"] == "clip":
        act.update(lo=layer.lo, hi=layer.hi)
    if isinstance(layer, Conv2dLayer):
        g.conv2d(
            nd.name, src, nd.in_shape, p["w"], p["b"], layer.stride, layer.padding, scale=k, **act
        )
    elif isinstance(layer, AvgPool2dLayer):
        g.avgpool2d(nd.name, src, nd.in_shape, layer.kernel, layer.stride, layer.padding, scale=k)
    elif isinstance(layer, ActivationLayer):
        g.activation(nd.name, src, fn=act.pop("activation"), scale=k, **act)
    else:
        w, b = p["w"], p["b"]
        if i == arch.n_image_nodes and arch.vector_inputs:
            # fold the input standardisation: x_n = (x - m)/s on the vector rows
            rows = slice(arch.n_image_features, None)
            w = w.copy()
            b = b - (norm.vec_mean / norm.vec_std) @ w[rows]
            w[rows] = w[rows] / norm.vec_std[:, None]
        if i == arch.n_scales - 1:
            w, b = w * norm.y_std, b * norm.y_std + norm.y_mean
        g.dense(nd.name, src, w, b, scale=k, **act)


__all__ = ["Architecture", "Norm", "forward", "init_params", "round_half_away", "to_graph"]
