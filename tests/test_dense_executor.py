"""DenseExecutor: every node every step, exact integrator steps, op counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikefuse.engine.dense import DenseExecutor, node_ops
from spikefuse.graph import Graph


def _graph() -> Graph:
    g = Graph("t")
    g.input("x", 2)
    g.dense("d", "x", [[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]], bias=[0.1, 0.0, -1.0], activation="relu")
    g.product("p", "d", "d")
    g.activation("c", "p", fn="clip", lo=0.0, hi=2.0)
    g.integrator(
        "i", ["x", "d"], gain=[1.0, 2.0, 1.0, 1.0, 0.5], tau_s=[0.5, 1.0, 2.0, 0.25, 4.0], y0=1.0
    )
    g.integrator("acc", "x", gain=3.0, tau_s=None, y0=[0.0, -1.0])
    g.output("o", ["c", "i"])
    return g


def test_values_match_hand_computation() -> None:
    ex = DenseExecutor(_graph())
    x = np.array([0.7, -0.4])
    ex.step(0.0, {"x": x})
    d = np.maximum(x @ np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]) + [0.1, 0.0, -1.0], 0)
    assert ex.node_value("d") == pytest.approx(d)
    assert ex.node_value("p") == pytest.approx(d * d)
    assert ex.output_value("o")[:3] == pytest.approx(np.clip(d * d, 0, 2))
    # integrators: inputs held over dt, exact exponential / linear step
    dt = 0.3
    ex.step(dt, {})
    xin = np.concatenate([x, d])
    gain = np.array([1.0, 2.0, 1.0, 1.0, 0.5])
    tau = np.array([0.5, 1.0, 2.0, 0.25, 4.0])
    y_inf = gain * xin * tau
    assert ex.node_value("i") == pytest.approx(y_inf + (1.0 - y_inf) * np.exp(-dt / tau))
    assert ex.node_value("acc") == pytest.approx(np.array([0.0, -1.0]) + 3.0 * x * dt)


def test_sample_and_hold_and_ops() -> None:
    g = _graph()
    ex = DenseExecutor(g)
    rg = g.resolve()
    expected = sum(node_ops(n) for n in rg.nodes.values())
    # dense 2x3=6, product 3, activation 3, integrators 5 + 2, output 8, input 0
    assert expected == 6 + 3 + 3 + 5 + 2 + 8
    ex.step(0.1, {"x": [1.0, 1.0]})
    ex.step(0.1)  # x held
    assert ex.node_value("x") == pytest.approx([1.0, 1.0])
    assert ex.counters == {"syn_ops": 2 * expected, "n_steps": 2, "ops_per_step": expected}


def test_errors() -> None:
    ex = DenseExecutor(_graph())
    with pytest.raises(ValueError, match="unknown input 'nope'"):
        ex.step(0.1, {"nope": [1.0]})
    with pytest.raises(ValueError, match=r"expects shape \(2,\)"):
        ex.step(0.1, {"x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="dt_s"):
        ex.step(-1.0)
    with pytest.raises(ValueError, match="unknown output"):
        ex.output_value("d")


def test_conv2d_matches_direct_loop() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(size=(2, 1, 3, 3))
    g = Graph("c")
    g.input("img", 25)
    g.conv2d("cv", "img", (1, 5, 5), k, bias=[0.5, -0.5], stride=(2, 2), padding=(1, 1))
    ex = DenseExecutor(g)
    img = rng.normal(size=25)
    ex.step(0.0, {"img": img})
    xp = np.pad(img.reshape(5, 5), 1)
    want = np.empty((2, 3, 3))
    for o in range(2):
        for yy in range(3):
            for xx in range(3):
                want[o, yy, xx] = (
                    np.sum(xp[2 * yy : 2 * yy + 3, 2 * xx : 2 * xx + 3] * k[o, 0]) + [0.5, -0.5][o]
                )
    assert ex.node_value("cv") == pytest.approx(want.ravel())
    assert ex.ops_per_step == 2 * 3 * 3 * 9


def test_leak_free_integrator_equals_sum_of_steps() -> None:
    g = Graph("i")
    g.input("w", 1)
    g.integrator("th", "w", tau_s=None)
    g.output("o", "th")
    ex = DenseExecutor(g)
    rates = [0.5, -1.0, 2.0, 0.0]
    ex.step(0.0, {"w": [rates[0]]})
    total = 0.0
    for i in range(1, len(rates)):
        ex.step(0.25, {"w": [rates[i]]})
        total += rates[i - 1] * 0.25
    assert ex.output_value("o")[0] == pytest.approx(total)
    assert math.isclose(total, 0.375)
