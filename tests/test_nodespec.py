"""Node types as specs: the numbering has one source, the compiled engine is generated from
it, and the type added that way (AvgPool2d) runs identically everywhere."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikefuse.builder import build
from spikefuse.engine import Engine, ReferenceEngine, _engine
from spikefuse.engine.dense import DenseExecutor
from spikefuse.engine.engine import check_numbering
from spikefuse.engine.semantics import round_half_away_array
from spikefuse.errors import EngineError, GraphError
from spikefuse.graph import Graph, kinds
from tests._randgraph import random_static_graph, random_stream

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_numbering_is_generated_from_the_builders():
    assert _engine.COMPILED_NODE_KINDS == kinds.NODE_KINDS
    assert _engine.COMPILED_EDGE_KINDS == kinds.EDGE_KINDS
    assert _engine.COMPILED_ACTIVATIONS == kinds.ACTIVATIONS
    # the include the build used is exactly what kinds.py generates now
    assert (ROOT / "spikefuse/engine/_kinds.pxi").read_text() == kinds.pxi_text()
    assert 'include "_kinds.pxi"' in (ROOT / "spikefuse/engine/_engine.pyx").read_text()


def test_a_stale_build_is_refused():
    stale = types.SimpleNamespace(
        COMPILED_NODE_KINDS=kinds.NODE_KINDS[:-1],
        COMPILED_EDGE_KINDS=kinds.EDGE_KINDS,
        COMPILED_ACTIVATIONS=kinds.ACTIVATIONS,
    )
    with pytest.raises(EngineError, match="rebuild"):
        check_numbering(stale)
    check_numbering(_engine)


def test_every_node_kind_has_a_node_class_and_a_lowering():
    from spikefuse.builder.model import _LOWERERS
    from spikefuse.graph.nodes import NODE_TYPES

    assert set(NODE_TYPES) == set(kinds.NODE_KINDS)
    assert set(_LOWERERS) == set(NODE_TYPES.values())


def _pool_graph(kernel, stride=None, padding=(0, 0), c=2, h=5, w=7) -> Graph:
    g = Graph("pool")
    g.input("x", c * h * w, scale=20.0)
    g.avgpool2d("p", "x", (c, h, w), kernel, stride, padding, scale=40.0)
    g.output("y", "p", scale=80.0)
    return g


def _rounding_network(g: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every node's sent/k from the nodes' own frame-based values (Node.dense), quantised."""
    rg = g.resolve()
    val: dict[str, np.ndarray] = {}
    for name in rg.order:
        node = rg.nodes[name]
        if node.type == "input":
            v = x
        else:
            v = node.dense(
                {
                    f: np.concatenate([val[s] for s in src])
                    for f, src in node.source_fields().items()
                }
            )
        val[name] = round_half_away_array(node.scale * v) / node.scale
    return val


@pytest.mark.parametrize("engine_cls", [Engine, ReferenceEngine])
@pytest.mark.parametrize(
    "kernel,stride,padding",
    [((2, 2), None, (0, 0)), ((3, 2), (1, 2), (1, 1)), ((5, 7), None, (0, 0))],
)
def test_avgpool_equals_rounding_network_and_counts_its_window_ops(
    engine_cls, kernel, stride, padding
):
    rng = np.random.default_rng(11)
    g = _pool_graph(kernel, stride, padding)
    eng = engine_cls(g)
    eng.start(0)
    x = rng.normal(0, 1, 70)
    counts = round_half_away_array(20.0 * x).astype(np.int32)
    eng.push(1000, "x", np.arange(70, dtype=np.int32), counts)
    want = _rounding_network(g, x)
    for name in ("p", "y"):
        got = eng.node_value(name)
        assert np.abs(got - want[name]).max() <= 1e-12, name
    # a pixel's spike costs exactly the windows that cover it
    fan = build(g).unit_fanout[:70]
    sp = eng.counters["spikes"]
    ops_x = int(np.abs(counts).astype(np.int64) @ fan)
    assert eng.counters["syn_ops"] == ops_x + sp["p"] * 1
    if kernel == (5, 7):  # one window over the whole image: every pixel touches it once
        assert np.all(fan == 1)


def test_avgpool_dense_is_the_mean_of_each_window():
    g = _pool_graph((2, 2), c=1, h=4, w=6)
    ex = DenseExecutor(g)
    img = np.arange(24, dtype=np.float64)
    ex.step(0.0, {"x": img})
    want = img.reshape(2, 2, 3, 2).mean(axis=(1, 3)).ravel()
    np.testing.assert_allclose(ex.output_value("y"), want)
    assert ex.ops_per_step == 6 * 4 + 6  # windows*(kh*kw) for the pool, 6 for the output


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_pool_graphs_cython_equals_reference(seed):
    rng = np.random.default_rng(seed)
    g = random_static_graph(rng, conv=bool(rng.integers(2)), pool=True)
    stream = random_stream(rng, g.nodes["x"].size, int(rng.integers(1, 30)))
    outs = []
    for cls in (Engine, ReferenceEngine):
        eng = cls(g)
        chunks = [eng.start(0)] + [eng.push(t, "x", ch, ct) for t, ch, ct in stream]
        outs.append((np.concatenate(chunks).tobytes(), eng.counters))
    assert outs[0] == outs[1]


def test_avgpool_round_trips_through_a_file(tmp_path):
    g = _pool_graph((3, 2), (1, 2), (1, 1))
    g2 = Graph.load(g.save(tmp_path / "p.npz"))
    assert g2.nodes["p"] == g.nodes["p"]


@pytest.mark.parametrize(
    "kw,what",
    [
        (dict(kernel=(6, 2)), "output would be empty"),
        (dict(kernel=(2, 2), padding=(2, 0)), "padding .* must be smaller than the kernel"),
        (dict(kernel=(0, 2)), "kernel and stride must be >= 1"),
    ],
)
def test_bad_avgpool_names_the_node(kw, what):
    g = Graph("bad")
    g.input("x", 2 * 5 * 7)
    with pytest.raises(GraphError, match=f"node 'p': .*{what}"):
        g.avgpool2d("p", "x", (2, 5, 7), **kw)


def test_avgpool_with_the_wrong_input_size_names_in_shape():
    g = Graph("bad")
    g.input("x", 10)
    g.avgpool2d("p", "x", (2, 5, 7), (2, 2))
    with pytest.raises(GraphError, match="in_shape"):
        g.resolve()
