"""Deterministic synthetic rigid-body motion for the synthetic IMU.

Orientation is ZYX Euler angles, each a seeded sum of two sinusoids; gyro, accelerometer and
magnetometer are derived from it consistently (body rates from the Euler-angle rates,
specific force = R^T g, field = R^T m), plus white noise from a generator per group seeded
by (seed, group), so a run with the same sample times gives the same values.
"""

from __future__ import annotations

import zlib

import numpy as np

GRAVITY_M_S2 = 9.80665
#: an ENU earth field, µT (north 20, down 45: mid northern latitudes)
EARTH_FIELD_UT = np.array([0.0, 20.0, -45.0])


class SyntheticMotion:
    def __init__(
        self,
        seed: int = 0,
        amplitude_rad: float = 0.6,
        max_frequency_hz: float = 0.5,
        noise: dict[str, float] | None = None,
    ):
        rng = np.random.default_rng(seed)
        self.seed = int(seed)
        self.amp = rng.uniform(0.3, 1.0, size=(3, 2)) * amplitude_rad / 2  # (axis, component)
        self.freq_hz = rng.uniform(0.05, 1.0, size=(3, 2)) * max_frequency_hz
        self.phase = rng.uniform(0.0, 2 * np.pi, size=(3, 2))
        self.noise = {"gyro": 0.002, "accel": 0.02, "mag": 0.2} if noise is None else noise
        self._rngs = {
            g: np.random.default_rng([self.seed, zlib.crc32(g.encode())]) for g in self.noise
        }

    def euler(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(roll, pitch, yaw) and their time derivatives at ``t_s``."""
        w = 2 * np.pi * self.freq_hz
        arg = w * t_s + self.phase
        angles = (self.amp * np.sin(arg)).sum(axis=1)
        rates = (self.amp * w * np.cos(arg)).sum(axis=1)
        return angles, rates

    @staticmethod
    def rotation(angles: np.ndarray) -> np.ndarray:
        """Body-to-earth rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll)."""
        (cr, cp, cy), (sr, sp, sy) = np.cos(angles), np.sin(angles)
        return np.array(
            [
                [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                [-sp, cp * sr, cp * cr],
            ]
        )

    def truth(self, group: str, t_s: float) -> np.ndarray:
        (roll, pitch, _), (droll, dpitch, dyaw) = self.euler(t_s)
        if group == "gyro":
            cr, sr, cp, sp = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
            return np.array(
                [
                    droll - dyaw * sp,
                    dpitch * cr + dyaw * cp * sr,
                    -dpitch * sr + dyaw * cp * cr,
                ]
            )
        rot_t = self.rotation(self.euler(t_s)[0]).T
        if group == "accel":
            return rot_t @ np.array([0.0, 0.0, GRAVITY_M_S2])
        if group == "mag":
            return rot_t @ EARTH_FIELD_UT
        raise ValueError(f"no synthetic signal for group '{group}'")

    def sample(self, group: str, t_ns: int) -> np.ndarray:
        """Truth at ``t_ns`` (since the start) plus white noise drawn from a generator seeded
        by (seed, group): the same sample times give the same values."""
        value = self.truth(group, t_ns / 1e9)
        sigma = self.noise.get(group, 0.0)
        if sigma > 0:
            value = value + self._rngs[group].normal(0.0, sigma, size=3)
        return value
