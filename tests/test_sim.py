"""The simulated world as a library, the line-follower graph in-process, and the sim
driver's config errors (real child processes, exit code 2, the field named)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from _system import require_egl

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.engine import Engine
from spikefuse.errors import ConfigError
from spikefuse.sim import controller as C
from spikefuse.sim.config import WorldConfig
from spikefuse.sim.track import TRACKS, Track
from spikefuse.sim.world import World


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spikefuse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("name", sorted(TRACKS))
def test_track_geometry(name):
    t = Track(name)
    x, y, yaw = t.start_pose()
    assert t.project(x, y) == pytest.approx((0.0, 0.0), abs=1e-9)
    # a point 10 cm left of the line, a quarter of the way round
    qx, qy, qyaw = t.pose_at(t.length_m / 4)
    s, cross = t.project(qx - 0.1 * math.sin(qyaw), qy + 0.1 * math.cos(qyaw))
    assert s == pytest.approx(t.length_m / 4, abs=0.02)
    assert cross == pytest.approx(0.1, abs=0.005)
    for ob in t.spec.obstacles:  # obstacles stand clear of the line
        _, c = t.project(ob.x_m, ob.y_m)
        assert abs(c) - max(ob.size[:2]) > 0.25


def test_world_sensors_rates_and_seeded_determinism():
    cfg = WorldConfig(renderer="numpy", seed=7, randomize={"start_pose": True, "lighting": True})
    runs = []
    for _ in range(2):
        w = World(cfg)
        w.set_wheels(10.0, 12.0)
        counts: dict[str, int] = {}
        digest = []
        for _ in range(1000):
            for r in w.step():
                counts[r.group] = counts.get(r.group, 0) + 1
                digest.append(np.asarray(r.values, np.float64).sum())
        runs.append((counts, digest, w.truth.metrics()))
        w.close()
    assert runs[0] == runs[1]
    counts, _, truth = runs[0]
    # sample k at the first step at or after k/rate: t = 0 (at the first step) .. 1 s
    assert counts == {"gyro": 1000, "accel": 201, "wheels": 101, "camera": 61}
    assert truth["v_mps"] > 0.3 and truth["w_radps"] > 0.05  # right wheel faster: turns left
    assert truth["sim_t_s"] == pytest.approx(1.0)


def test_camera_sees_the_line_and_nan_setpoints_stop():
    w = World(WorldConfig(renderer="numpy"))
    img = w.render()
    assert img.shape == (48, 64) and img.dtype == np.uint8
    bottom = img[-1].astype(float)
    dark = np.flatnonzero(bottom < 60)
    assert dark.size and abs(dark.mean() - 31.5) < 4  # the line straight ahead, centred
    w.set_wheels(float("nan"), float("inf"))
    assert w.wheels_radps.tolist() == [0.0, 0.0]
    w.set_wheels(1e6, -1e6)
    assert w.wheels_radps.tolist() == [20.0, -20.0]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown track 'moon'"):
        WorldConfig(track="moon")
    with pytest.raises(ValueError, match="less than or equal to 320"):
        WorldConfig(camera={"width": 1000})


def test_line_follower_graph_follows_the_line_in_process():
    """The shipped graph, run by the engine on the world's encoded sensors, stays on the
    line for 8 m of the oval, both straights and a half circle, without collision."""
    w = World(WorldConfig(renderer="numpy", seed=1))
    eng = Engine(C.line_follower_graph().resolve())
    eng.start(0)
    enc = {
        "gyro": SigmaDeltaEncoder(3, C.GYRO_SCALE),
        "accel": SigmaDeltaEncoder(3, C.ACCEL_SCALE),
        "wheels": SigmaDeltaEncoder(2, C.WHEELS_SCALE),
    }
    dvs = DvsEncoder(64, 48, 0.2)
    dvs.encode(0, w.flat_frame(), 1)
    worst = 0.0
    while w.truth.progress_m < 8.0 and w.t_ns < 30e9:
        for r in w.step():
            if r.group == "camera":
                ch, co, _ = dvs.encode(w.t_ns, r.values, 1)
            else:
                ch, co = enc[r.group].encode(r.values)
            if ch.size:
                eng.push(w.t_ns, r.group, ch.astype(np.int32), co.astype(np.int32))
        out = eng.output_value("wheels_out")
        w.set_wheels(out[0], out[1])
        worst = max(worst, abs(w.truth.cross_track_m))
    assert w.truth.progress_m >= 8.0
    assert w.truth.collisions == 0
    assert worst < 0.05


def test_bad_driver_configs_exit_2_naming_the_field(tmp_path):
    run_dir = f"run_dir={tmp_path}"
    r = _cli("driver", "sim", "--set", run_dir, "--set", "world.track=moon")
    assert r.returncode == 2, r.stderr
    assert "world.track" in r.stderr and "unknown track 'moon'" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("driver", "sim", "--set", run_dir, "--set", "world.camera.width=1000")
    assert r.returncode == 2 and "world.camera.width" in r.stderr, r.stderr
    r = _cli("driver", "sim", "--set", run_dir, "--set", "dvs.width=32")
    assert r.returncode == 2 and "dvs.width" in r.stderr, r.stderr
    # no usable OpenGL platform (GLFW without a display): renderer mujoco is an error
    env = {"MUJOCO_GL": "glfw", "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    r = _cli(
        "driver", "sim", "--set", run_dir, "--set", "world.renderer=mujoco", "--set",
        "duration_s=0.05", env=env,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "world.renderer" in r.stderr and "libegl1 libegl-mesa0" in r.stderr
    assert "Traceback" not in r.stderr


def test_auto_renderer_falls_back_to_numpy_and_names_the_packages():
    env = {**os.environ, "MUJOCO_GL": "glfw", "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    code = (
        "from spikefuse.sim.world import World; from spikefuse.sim.config import WorldConfig;"
        "print(World(WorldConfig(renderer='auto')).renderer)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy"
    assert "libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1" in r.stderr


def test_mujoco_renderer_with_egl():
    """The full path (Debian libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1): MuJoCo's
    offscreen frames through EGL, with the line where the NumPy renderer sees it."""
    require_egl()
    code = (
        "import numpy as np; from spikefuse.sim.world import World;"
        "from spikefuse.sim.config import WorldConfig;"
        "w = World(WorldConfig(renderer='mujoco')); img = w.render();"
        "d = np.flatnonzero(img[-1] < 60); print(w.renderer, img.shape, round(d.mean()))"
    )
    env = {**os.environ, "MUJOCO_GL": "egl"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr
    name, rest = r.stdout.split(" ", 1)
    assert name == "mujoco" and "(48, 64)" in rest
    assert abs(int(rest.split()[-1]) - 32) <= 4


def test_world_config_error_type_is_config_error():
    with pytest.raises(ConfigError):
        from spikefuse.config import validate_data

        validate_data(WorldConfig, {"track": "moon"}, "x.yaml")


def test_driving_into_an_obstacle_counts_collisions():
    # start 0.6 m before the end of the lap (bottom straight, heading +x) and curve left
    # into the box at (0, -0.55)
    w = World(WorldConfig(renderer="numpy", start_s_m=Track("oval").length_m - 0.6))
    w.set_wheels(8.0, 12.0)
    for _ in range(4000):
        w.step()
    assert w.truth.collisions >= 1
    assert abs(w.truth.cross_track_m) > 0.1


def test_progress_counts_only_on_the_track():
    # driving on the line gains progress; turning off the track (inwards) and circling
    # there gains nothing, so no lap can be "completed" off the track
    w = World(WorldConfig(renderer="numpy", seed=3))

    def drive(left: float, right: float, s: float) -> None:
        w.set_wheels(left, right)
        end_ns = w.t_ns + round(s * 1e9)
        while w.t_ns < end_ns:
            w.step()

    drive(10.0, 10.0, 1.0)
    on_track = w.truth.progress_m
    assert 0.1 < on_track < 0.6
    while not 1.2 < w.truth.yaw_rad < 1.9:  # turn left, towards the inside of the oval
        drive(-4.0, 4.0, 0.01)
    drive(10.0, 10.0, 3.0)
    assert abs(w.truth.cross_track_m) > w.cfg.on_track_m
    progress_when_off = w.truth.progress_m
    drive(4.0, 12.0, 20.0)  # circles off the track
    assert abs(w.truth.cross_track_m) > w.cfg.on_track_m
    assert w.truth.progress_m == progress_when_off and w.truth.lap == 0
