"""The simulated world as a library (no sockets): :class:`World` steps MuJoCo at 1 kHz,
applies wheel set-points, and returns the sensor readings due at each step (gyro, accel,
wheel encoders, camera frames) and the ground truth (pose, twist, track progress,
cross-track error, laps, collisions).

Everything random (start pose, lighting, noise levels, bias, per-sample noise) comes from
one ``numpy.random.Generator`` seeded with ``world.seed``: the same seed and the same
set-points at the same steps give the same run, bit for bit, on one machine."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spikefuse.errors import ConfigError
from spikefuse.sim import model as M
from spikefuse.sim.config import WorldConfig
from spikefuse.sim.render import ensure_gl_platform, make_camera
from spikefuse.sim.track import Track

NS_PER_S = 1_000_000_000
STEP_NS = round(M.TIMESTEP_S * NS_PER_S)


@dataclass(frozen=True)
class Reading:
    """One sensor reading due at a step: ``group`` is ``gyro`` (rad/s, 3), ``accel``
    (m/s², 3), ``wheels`` (wheel angles, rad, 2: left, right) or ``camera`` (grey image)."""

    group: str
    values: np.ndarray


@dataclass
class Truth:
    x_m: float = 0.0
    y_m: float = 0.0
    yaw_rad: float = 0.0
    v_mps: float = 0.0
    w_radps: float = 0.0
    progress_m: float = 0.0
    lap: int = 0
    cross_track_m: float = 0.0
    collisions: int = 0
    sim_t_s: float = 0.0

    def metrics(self) -> dict[str, float | int]:
        return {
            "x_m": round(self.x_m, 6),
            "y_m": round(self.y_m, 6),
            "yaw_rad": round(self.yaw_rad, 6),
            "v_mps": round(self.v_mps, 6),
            "w_radps": round(self.w_radps, 6),
            "progress_m": round(self.progress_m, 6),
            "lap": self.lap,
            "cross_track_m": round(self.cross_track_m, 6),
            "collisions": self.collisions,
            "sim_t_s": round(self.sim_t_s, 6),
        }


class _Schedule:
    """Steps at which a sensor of ``rate_hz`` samples (the first step at or after each
    ``k / rate_hz``)."""

    def __init__(self, rate_hz: float):
        self.period_ns = NS_PER_S / rate_hz
        self.k = 0

    def due(self, t_ns: int) -> bool:
        if t_ns + STEP_NS / 2 >= self.k * self.period_ns:
            self.k += 1
            while t_ns + STEP_NS / 2 >= self.k * self.period_ns:
                self.k += 1  # a rate above the physics rate: once per step
            return True
        return False


class World:
    """MuJoCo world of one seeded run. ``where`` names the config section in errors."""

    def __init__(self, cfg: WorldConfig, where: str = "world"):
        ensure_gl_platform()
        try:
            import mujoco
        except ImportError:
            raise ConfigError(
                "the simulator needs MuJoCo: pip install 'spikefuse[sim]' (or pip install mujoco)",
                where,
            ) from None
        self._mj = mujoco
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.track = Track(cfg.track)
        rz = cfg.randomize
        s0 = float(self.rng.uniform(0, self.track.length_m)) if rz.start_pose else cfg.start_s_m
        x, y, yaw = self.track.pose_at(s0)
        if rz.start_pose:
            off = float(self.rng.uniform(-rz.max_lateral_m, rz.max_lateral_m))
            x, y = x - math.sin(yaw) * off, y + math.cos(yaw) * off
            yaw += float(self.rng.uniform(-rz.max_yaw_rad, rz.max_yaw_rad))
        self.brightness = cfg.brightness * (
            float(self.rng.uniform(0.6, 1.1)) if rz.lighting else 1.0
        )
        noise = float(self.rng.uniform(0.5, 2.0)) if rz.sensor_noise else 1.0
        self.gyro_noise = cfg.gyro.noise_std_radps * noise
        self.accel_noise = cfg.accel.noise_std_mps2 * noise
        self.gyro_bias = self.rng.normal(0.0, cfg.gyro.bias_std_radps * noise, 3)
        self.model = mujoco.MjModel.from_xml_string(
            M.world_xml(self.track, (x, y, yaw), self.brightness, cfg.camera.fovy_deg)
        )
        self.data = mujoco.MjData(self.model)
        mujoco.mj_forward(self.model, self.data)
        self.camera = make_camera(
            cfg.renderer, mujoco, self.model, self.track, cfg.camera, self.brightness, where
        )
        self._sensor = {n: self._sensor_slice(n) for n in ("gyro", "accel", "enc_l", "enc_r")}
        self._robot_geoms = {
            mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, n)
            for n in ("body", "wheel_l", "wheel_r", "caster")
        }
        self._obstacle_geoms = {
            mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, f"obstacle{i}")
            for i in range(len(self.track.spec.obstacles))
        }
        self._touching: set[int] = set()
        self.schedules = {
            "gyro": _Schedule(cfg.gyro.rate_hz),
            "accel": _Schedule(cfg.accel.rate_hz),
            "wheels": _Schedule(cfg.encoders.rate_hz),
            "camera": _Schedule(cfg.camera.rate_hz),
        }
        self.step_index = 0
        self.wheels_radps = np.zeros(2)
        self.truth = Truth()
        self._last_s = self.track.project(x, y)[0]
        self._update_truth()

    @property
    def renderer(self) -> str:
        return self.camera.name

    @property
    def t_ns(self) -> int:
        return self.step_index * STEP_NS

    def _sensor_slice(self, name: str) -> slice:
        m = self.model
        i = self._mj.mj_name2id(m, self._mj.mjtObj.mjOBJ_SENSOR, name)
        adr, dim = int(m.sensor_adr[i]), int(m.sensor_dim[i])
        return slice(adr, adr + dim)

    # ------------------------------------------------------------------ control
    def set_wheels(self, left_radps: float, right_radps: float) -> None:
        """Wheel speed set-points (rad/s, + = forward), clamped to the motor's limit;
        NaN/Inf are treated as 0 (stop)."""
        lim = self.cfg.max_wheel_speed_radps
        v = np.array([left_radps, right_radps], np.float64)
        v[~np.isfinite(v)] = 0.0
        self.wheels_radps = np.clip(v, -lim, lim)
        self.data.ctrl[:2] = self.wheels_radps

    # ------------------------------------------------------------------ stepping
    def step(self) -> list[Reading]:
        """Advance one physics step (1 ms); the readings due at the new time."""
        self._mj.mj_step(self.model, self.data)
        self.step_index += 1
        self._check_contacts()
        out = []
        t = self.t_ns
        sd = self.data.sensordata
        if self.schedules["gyro"].due(t):
            g = sd[self._sensor["gyro"]] + self.gyro_bias
            out.append(Reading("gyro", g + self.rng.normal(0.0, self.gyro_noise, 3)))
        if self.schedules["accel"].due(t):
            a = sd[self._sensor["accel"]]
            out.append(Reading("accel", a + self.rng.normal(0.0, self.accel_noise, 3)))
        if self.schedules["wheels"].due(t):
            enc = np.concatenate([sd[self._sensor["enc_l"]], sd[self._sensor["enc_r"]]])
            out.append(Reading("wheels", enc))
            self._update_truth()
        if self.schedules["camera"].due(t):
            out.append(Reading("camera", self.render()))
        return out

    def render(self) -> np.ndarray:
        return self.camera.render(self.data, self._pose())

    def flat_frame(self) -> np.ndarray:
        """A uniform image at the floor's nominal grey (brightness 1): the camera's first
        frame, so the DVS state integrates to the log image relative to the floor."""
        cam = self.cfg.camera
        grey = M.FLOOR_GREY * 0.9 * 255.0
        return np.full((cam.height, cam.width), round(grey), np.uint8)

    # ------------------------------------------------------------------ truth
    def _pose(self) -> tuple[float, float, float]:
        q = self.data.qpos
        w, x, y, z = q[3], q[4], q[5], q[6]
        yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        return float(q[0]), float(q[1]), yaw

    def _check_contacts(self) -> None:
        d = self.data
        pairs = d.contact.geom[: d.ncon].tolist() if d.ncon else []
        obstacles = self._obstacle_geoms
        if not any(g1 in obstacles or g2 in obstacles for g1, g2 in pairs):
            self._touching = set()
            return
        now: set[int] = set()
        for g1, g2 in pairs:
            if g1 in self._obstacle_geoms and g2 in self._robot_geoms:
                now.add(g1)
            elif g2 in self._obstacle_geoms and g1 in self._robot_geoms:
                now.add(g2)
        self.truth.collisions += len(now - self._touching)
        self._touching = now

    def _update_truth(self) -> Truth:
        t = self.truth
        x, y, yaw = self._pose()
        qv = self.data.qvel
        s, cross = self.track.project(x, y)
        ds = (s - self._last_s + self.track.length_m / 2) % self.track.length_m
        if abs(cross) <= self.cfg.on_track_m:  # off the track: no progress
            t.progress_m += ds - self.track.length_m / 2
        self._last_s = s
        t.x_m, t.y_m, t.yaw_rad = x, y, yaw
        t.v_mps = float(math.cos(yaw) * qv[0] + math.sin(yaw) * qv[1])
        t.w_radps = float(qv[5])
        t.cross_track_m = cross
        t.lap = max(0, math.floor(t.progress_m / self.track.length_m + 1e-9))
        t.sim_t_s = self.t_ns / NS_PER_S
        return t

    def close(self) -> None:
        self.camera.close()


__all__ = ["STEP_NS", "Reading", "Truth", "World"]
