"""The demo: an example fusion graph and a built-in synthetic multi-rate stream.

Graph (``configs/graphs/demo.yaml``, written by ``python -m spikefuse.core.demo``):

* ``gyro`` (3, rad/s, 1 kHz) -> ``att``: leaky integrator (attitude, tau 2 s)
* ``accel`` (3, m/s^2, 200 Hz) -> ``tilt``: dense 3->2 (gravity direction)
* ``camera`` (DVS events on 32x24, 30 Hz frames) -> ``edges``: conv 3x3 stride 2 (2
  oriented edge maps) -> ``flow``: dense pooling to 2
* ``mix``: dense [att, tilt, flow] -> 4 with tanh -> ``motors`` (Output, 4 channels)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.graph import Graph

CAM_W, CAM_H = 32, 24
DVS_THRESHOLD = 0.2
GYRO_SCALE = 200.0  # counts per rad/s
ACCEL_SCALE = 20.0  # counts per m/s^2
CAMERA_SCALE = 1.0 / DVS_THRESHOLD  # one count = one DVS threshold crossing
RATES_HZ = {"gyro": 1000.0, "accel": 200.0, "camera": 30.0}


def build_demo_graph() -> Graph:
    g = Graph("demo")
    g.input("gyro", 3, scale=GYRO_SCALE)
    g.input("accel", 3, scale=ACCEL_SCALE)
    g.input("camera", CAM_W * CAM_H, scale=CAMERA_SCALE)
    g.integrator("att", "gyro", gain=1.0, tau_s=2.0, scale=200.0)
    tilt_w = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) / 9.81
    g.dense("tilt", "accel", tilt_w, scale=100.0)
    sobel = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    kernels = np.stack([sobel, sobel.T])[:, None, :, :]
    g.conv2d("edges", "camera", (1, CAM_H, CAM_W), kernels, stride=(2, 2), scale=20.0)
    n_pos = ((CAM_H - 3) // 2 + 1) * ((CAM_W - 3) // 2 + 1)
    pool = np.zeros((2 * n_pos, 2))
    pool[:n_pos, 0] = 1.0 / n_pos
    pool[n_pos:, 1] = 1.0 / n_pos
    g.dense("flow", "edges", pool, scale=200.0)
    rng = np.random.default_rng(7)
    mix_w = np.round(rng.normal(0.0, 0.5, size=(3 + 2 + 2, 4)), 3)
    g.dense("mix", ["att", "tilt", "flow"], mix_w, activation="tanh", scale=500.0)
    g.output("motors", "mix", scale=1000.0)
    return g


def write_demo_graph(directory: str | Path) -> tuple[Path, Path]:
    """Write ``demo.yaml`` (structure) and ``demo.npz`` (arrays) into ``directory``."""
    import yaml

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest, arrays = build_demo_graph().to_dict()
    npz = directory / "demo.npz"
    np.savez(npz, **arrays)
    doc = {"weights": npz.name, **manifest}
    yml = directory / "demo.yaml"
    header = (
        "# The demo fusion graph (see spikefuse/core/demo.py); regenerate with\n"
        "#   python -m spikefuse.core.demo configs/graphs\n"
    )
    yml.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return yml, npz


# --------------------------------------------------------------------------- stream


def gyro_value(t_s: float) -> np.ndarray:
    return np.array(
        [0.6 * np.sin(2 * np.pi * 0.5 * t_s), 0.4 * np.sin(2 * np.pi * 0.3 * t_s + 1.0), 0.05]
    )


def accel_value(t_s: float) -> np.ndarray:
    tilt = 0.3 * np.sin(2 * np.pi * 0.2 * t_s)
    return np.array([9.81 * np.sin(tilt), 0.5 * np.sin(2 * np.pi * 1.0 * t_s), 9.81 * np.cos(tilt)])


def camera_frame(t_s: float) -> np.ndarray:
    """A bright vertical bar sweeping across a dim background (32x24 gray, 0..1)."""
    x = np.arange(CAM_W)
    centre = (CAM_W / 2) + (CAM_W / 3) * np.sin(2 * np.pi * 0.4 * t_s)
    row = 0.1 + 0.8 * np.exp(-0.5 * ((x - centre) / 1.5) ** 2)
    return np.tile(row, (CAM_H, 1))


@dataclass
class StreamBatch:
    t_ns: int
    input: str
    channels: np.ndarray
    counts: np.ndarray


def synthetic_stream(duration_s: float, t0_ns: int = 0) -> Iterator[StreamBatch]:
    """Gyro at 1 kHz, accel at 200 Hz, camera DVS events from 30 Hz frames, merged in time
    order; only what changed is emitted (sigma-delta / DVS)."""
    encoders = {
        "gyro": SigmaDeltaEncoder(3, GYRO_SCALE),
        "accel": SigmaDeltaEncoder(3, ACCEL_SCALE),
    }
    dvs = DvsEncoder(CAM_W, CAM_H, threshold=DVS_THRESHOLD)
    periods = {k: round(1e9 / r) for k, r in RATES_HZ.items()}
    heap = [(t0_ns, i, k) for i, k in enumerate(RATES_HZ)]
    heapq.heapify(heap)
    end_ns = t0_ns + round(duration_s * 1e9)
    while heap:
        t_ns, order, kind = heapq.heappop(heap)
        if t_ns > end_ns:
            continue
        heapq.heappush(heap, (t_ns + periods[kind], order, kind))
        t_s = (t_ns - t0_ns) / 1e9
        if kind == "camera":
            ch, co, _dt = dvs.encode(t_ns, camera_frame(t_s), periods[kind])
        else:
            value = gyro_value(t_s) if kind == "gyro" else accel_value(t_s)
            ch, co = encoders[kind].encode(value)
        if ch.size:
            yield StreamBatch(t_ns, kind, ch, co)


if __name__ == "__main__":  # pragma: no cover
    import sys

    for p in write_demo_graph(sys.argv[1] if len(sys.argv) > 1 else "configs/graphs"):
        print(f"wrote {p}")
