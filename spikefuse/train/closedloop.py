"""A graph driving the simulated robot in-process (no sockets): the seeded lock-step course
of the learned-controller test. Needs ``spikefuse[sim]`` (MuJoCo)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.engine import Engine
from spikefuse.engine.dense import DenseExecutor
from spikefuse.graph import Graph


def _encoders(graph: Graph, cam_w: int, cam_h: int) -> dict:
    enc = {}
    for name, node in graph.nodes.items():
        if node.type != "input":
            continue
        if name == "camera":
            enc[name] = DvsEncoder(cam_w, cam_h, threshold=1.0 / node.scale)
        else:
            enc[name] = SigmaDeltaEncoder(node.size, node.scale)
    return enc


def drive_lap(
    graph: Graph | None,
    seed: int = 0,
    track: str = "oval",
    max_s: float = 60.0,
    output: str = "wheels_out",
    teacher: Callable | None = None,
) -> dict:
    """One lap of the seeded world driven by ``graph`` (or by ``teacher(world)``): lap
    completed, lap time, cross-track RMS, collisions, and the engine's ops against the same
    graph run densely at the camera and the gyro rate over the same time."""
    from spikefuse.sim.config import WorldConfig
    from spikefuse.sim.world import World

    w = World(WorldConfig(renderer="numpy", seed=seed, track=track))
    cam = w.cfg.camera
    eng = enc = None
    if graph is not None:
        eng = Engine(graph)
        eng.start(0)
        enc = _encoders(graph, cam.width, cam.height)
        if "camera" in enc:
            enc["camera"].encode(0, w.flat_frame(), 1)
    sq, n = 0.0, 0
    while w.truth.lap < 1 and w.t_ns < max_s * 1e9:
        readings = w.step()
        if eng is not None:
            for r in readings:
                e = enc.get(r.group)
                if e is None:
                    continue
                if r.group == "camera":
                    ch, co, _ = e.encode(w.t_ns, r.values, 1)
                else:
                    ch, co = e.encode(r.values)
                if ch.size:
                    eng.push(w.t_ns, r.group, ch.astype(np.int32), co.astype(np.int32))
            left, right = eng.output_value(output)
        else:
            left, right = teacher(w)
        w.set_wheels(left, right)
        if readings and any(r.group == "wheels" for r in readings):
            sq += w.truth.cross_track_m**2
            n += 1
    t_s = w.t_ns * 1e-9
    out = {
        "lap_completed": bool(w.truth.lap >= 1 and w.truth.collisions == 0),
        "lap_time_s": t_s if w.truth.lap >= 1 else math.nan,
        "cross_track_rms_m": math.sqrt(sq / max(n, 1)),
        "collisions": int(w.truth.collisions),
        "progress_m": float(w.truth.progress_m),
    }
    if eng is not None:
        dense = DenseExecutor(graph).ops_per_step
        ops = eng.counters["syn_ops"]
        out["ops"] = int(ops)
        out["ops_ratio_vs_dense_at_camera_rate"] = ops / (dense * cam.rate_hz * t_s)
        out["ops_ratio_vs_dense_at_gyro_rate"] = ops / (dense * w.cfg.gyro.rate_hz * t_s)
    w.close()
    return out
