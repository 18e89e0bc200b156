"""Graph description: files (npz and YAML), format version, and errors that name the node."""

from __future__ import annotations

import numpy as np
import pytest

from spikefuse.engine import Engine
from spikefuse.errors import ConfigError, GraphError
from spikefuse.graph import FORMAT_VERSION, Graph


def _graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("fuse")
    g.input("imu", 6, scale=50.0)
    g.dense(
        "h", "imu", rng.normal(size=(6, 8)), bias=rng.normal(size=8), activation="clip", lo=-1, hi=1
    )
    g.integrator("i", "h", gain=[1.0] * 8, tau_s=0.5, y0=0.1, scale=80.0)
    g.product("p", "i", "h", scale=40.0)
    g.output("motor", ["p", "i"], scale=100.0)
    return g


def test_save_load_round_trip_gives_identical_execution(tmp_path):
    g = _graph()
    path = g.save(tmp_path / "g.sfg")
    g2 = Graph.load(path)
    assert g2.resolve().order == g.resolve().order
    outs = []
    for graph in (g, g2):
        eng = Engine(graph)
        chunks = [
            eng.start(0),
            eng.push(10, "imu", [0, 3, 5], [20, -7, 3]),
            eng.advance(2_000_000_000),
        ]
        outs.append(np.concatenate(chunks).tobytes())
    assert outs[0] == outs[1] and len(outs[0]) > 0


def test_yaml_graph_with_npz_weights(tmp_path):
    w = np.arange(6.0).reshape(3, 2)
    np.savez(tmp_path / "w.npz", W=w)
    (tmp_path / "g.yaml").write_text(
        "format_version: 1\nname: y\nweights: w.npz\nnodes:\n"
        "  - {type: input, name: x, size: 3, scale: 10}\n"
        "  - {type: dense, name: d, source: x, weights: '@W', scale: 10}\n"
        "  - {type: output, name: out, source: d, scale: 10}\n"
    )
    g = Graph.load(tmp_path / "g.yaml")
    np.testing.assert_array_equal(g.nodes["d"].weights, w)
    eng = Engine(g)
    eng.start(0)
    eng.push(1, "x", [2], [10])
    np.testing.assert_allclose(eng.output_value("out"), w[2])


def test_newer_format_version_is_rejected(tmp_path):
    (tmp_path / "g.yaml").write_text(f"format_version: {FORMAT_VERSION + 1}\nnodes: []\n")
    with pytest.raises(ConfigError, match="format_version"):
        Graph.load(tmp_path / "g.yaml")


def test_yaml_errors_name_node_and_field(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("nodes:\n  - {type: input, name: x, size: 3, scale: -1}\n")
    with pytest.raises(GraphError, match=r"node 'x', field 'scale'"):
        Graph.load(p)
    p.write_text("nodes:\n  - {type: warp, name: z}\n")
    with pytest.raises(GraphError, match=r"node 'z', field 'type'.*unknown node type"):
        Graph.load(p)
    p.write_text("nodes:\n  - {type: input, name: x, size: 3, colour: red}\n")
    with pytest.raises(GraphError, match=r"node 'x', field 'colour'"):
        Graph.load(p)
    p.write_text("nodes:\n  - {type: dense, name: d, source: x, weights: '@W'}\n")
    with pytest.raises(GraphError, match=r"node 'd', field 'weights'.*'W' not found"):
        Graph.load(p)


def test_not_a_graph_file(tmp_path):
    p = tmp_path / "junk.sfg"
    p.write_bytes(b"not a zip at all")
    with pytest.raises(ConfigError, match="junk.sfg"):
        Graph.load(p)
    with pytest.raises(ConfigError, match="file not found"):
        Graph.load(tmp_path / "missing.sfg")


def test_duplicate_and_self_loop():
    g = Graph()
    g.input("x", 2)
    with pytest.raises(GraphError, match="duplicate"):
        g.input("x", 2)
    g.activation("a", "a")
    with pytest.raises(GraphError, match=r"node 'a'.*feed itself"):
        g.resolve()
