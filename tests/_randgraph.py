"""Random graphs and event streams for engine tests (used by several test modules)."""

from __future__ import annotations

import numpy as np

from spikefuse.graph import Graph


def random_static_graph(
    rng: np.random.Generator, conv: bool = True, product: bool = True, pool: bool = False
) -> Graph:
    """Input -> Dense(act) -> [Conv] -> [AvgPool] -> Activation -> [Product] -> Output, random
    sizes/scales."""
    g = Graph("rand")
    n_in = int(rng.integers(2, 10))
    g.input("x", n_in, scale=float(rng.uniform(5, 60)))
    acts = ["identity", "relu", "tanh", "sigmoid", "abs"]
    h = int(rng.integers(2, 12))
    g.dense(
        "d1",
        "x",
        rng.normal(0, 1, (n_in, h)),
        bias=rng.normal(0, 0.3, h),
        activation=str(rng.choice(acts)),
        scale=float(rng.uniform(5, 60)),
    )
    last, size = "d1", h
    if conv:
        c, hh, ww = 1, 3, 4
        g.dense(
            "d2",
            "d1",
            rng.normal(0, 1, (h, c * hh * ww)),
            activation="relu",
            scale=float(rng.uniform(5, 60)),
        )
        g.conv2d(
            "c1",
            "d2",
            (c, hh, ww),
            rng.normal(0, 1, (2, c, 2, 2)),
            bias=rng.normal(0, 0.1, 2),
            stride=(1, int(rng.integers(1, 3))),
            padding=(int(rng.integers(0, 2)), 0),
            activation="clip",
            lo=-1.5,
            hi=1.5,
            scale=float(rng.uniform(5, 60)),
        )
        last = "c1"
        size = g.resolve().nodes["c1"].size
    if pool:
        last, size = _random_pool(rng, g, last, h)
    g.activation("a1", last, fn=str(rng.choice(acts)), scale=float(rng.uniform(5, 60)))
    last = "a1"
    if product:
        g.dense("d3", "x", rng.normal(0, 1, (n_in, size)), scale=float(rng.uniform(5, 60)))
        g.product("p1", "a1", "d3", scale=float(rng.uniform(5, 60)))
        last = "p1"
    g.output("y", last, scale=float(rng.uniform(5, 200)))
    return g


def _random_pool(rng: np.random.Generator, g: Graph, last: str, h: int) -> tuple[str, int]:
    """An AvgPool2d (random kernel, stride, padding) on a random C×H×W image of ``last``."""
    c, hh, ww = int(rng.integers(1, 3)), int(rng.integers(2, 6)), int(rng.integers(2, 7))
    src = g.resolve().nodes[last]
    g.dense(
        "d_img", last, rng.normal(0, 1, (src.size, c * hh * ww)), scale=float(rng.uniform(5, 60))
    )
    kernel = (int(rng.integers(1, hh + 1)), int(rng.integers(1, ww + 1)))
    stride = None if rng.random() < 0.5 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    padding = (int(rng.integers(0, kernel[0])), int(rng.integers(0, kernel[1])))
    g.avgpool2d(
        "pool", "d_img", (c, hh, ww), kernel, stride, padding, scale=float(rng.uniform(5, 60))
    )
    return "pool", g.resolve().nodes["pool"].size


def random_dynamic_graph(rng: np.random.Generator, rate_limited: bool = False) -> Graph:
    """A graph with integrators in a feedback loop (leaky and not); ``rate_limited`` sets a
    ``max_crossing_rate_hz`` low enough (5..60/s) that crossings get deferred."""
    g = Graph("dyn")
    n = int(rng.integers(1, 5))
    g.input("x", n, scale=float(rng.uniform(5, 50)))
    g.dense(
        "mix",
        ["x", "i1"],
        rng.normal(0, 1, (2 * n, n)),
        bias=rng.normal(0, 0.2, n),
        activation="tanh",
        scale=float(rng.uniform(10, 50)),
    )
    tau = None if rng.random() < 0.5 else rng.uniform(0.05, 1.0, n).tolist()
    g.integrator(
        "i1",
        "mix",
        gain=rng.uniform(0.5, 5.0, n).tolist(),
        tau_s=tau,
        y0=rng.normal(0, 0.5, n).tolist(),
        scale=float(rng.uniform(10, 50)),
        max_crossing_rate_hz=float(rng.uniform(5, 60)) if rate_limited else 1e6,
    )
    g.product("p", "i1", "mix", scale=float(rng.uniform(10, 50)))
    g.output("y", ["i1", "p"], scale=float(rng.uniform(10, 100)))
    return g


def random_stream(
    rng: np.random.Generator,
    size: int,
    n_batches: int,
    t0: int = 0,
    max_gap_ns: int = 20_000_000,
    max_count: int = 5,
):
    """List of (t_ns, channels, counts) in time order."""
    t = t0
    out = []
    for _ in range(n_batches):
        t += int(rng.integers(0, max_gap_ns))
        m = int(rng.integers(1, 2 * size + 1))
        ch = rng.integers(0, size, m).astype(np.int32)
        ct = rng.integers(-max_count, max_count + 1, m).astype(np.int32)
        out.append((t, ch, ct))
    return out
