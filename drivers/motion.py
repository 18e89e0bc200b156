"""Deterministic synthetic rigid-body motion for the synthetic IMU.

Orientation is ZYX Euler angles, each a seeded sum of two sinusoids; gyro, accelerometer and
magnetometer are derived from it consistently (body rates from the Euler-angle rates,
specific force = R^T g, field = R^T m), plus white noise from a generator per group seeded
by (seed, group), so a run with the same sample times gives the same values.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

GRAVITY_M_S2 = 9.80665
#: an ENU earth field, µT (north 20, down 45: mid northern latitudes)
EARTH_FIELD = (0.0, 20.0, -45.0)
EARTH_FIELD_UT = np.array(EARTH_FIELD)


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
        self._terms = [
            [
                (float(a), float(2 * np.pi * f), float(ph))
                for a, f, ph in zip(
                    self.amp[axis], self.freq_hz[axis], self.phase[axis], strict=True
                )
            ]
            for axis in range(3)
        ]
        self._rngs = {
            g: np.random.default_rng([self.seed, zlib.crc32(g.encode())]) for g in self.noise
        }

    def euler(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(roll, pitch, yaw) and their time derivatives at ``t_s``."""
        angles, rates = self._euler(t_s)
        return np.array(angles), np.array(rates)

    def _euler(self, t_s: float) -> tuple[list[float], list[float]]:
        # scalar math: a sample costs a few microseconds (numpy on 3x2 arrays cost ~60 us,
        # which a 1 kHz driver pays between stamping a sample and sending it)
        angles, rates = [], []
        for terms in self._terms:
            angle = rate = 0.0
            for amp, w, phase in terms:
                arg = w * t_s + phase
                angle += amp * math.sin(arg)
                rate += amp * w * math.cos(arg)
            angles.append(angle)
            rates.append(rate)
        return angles, rates

    @staticmethod
    def rotation(angles: np.ndarray) -> np.ndarray:
        """Body-to-earth rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll)."""
        return np.array(_rotation(*(float(a) for a in angles)))

    def truth(self, group: str, t_s: float) -> np.ndarray:
        (roll, pitch, yaw), (droll, dpitch, dyaw) = self._euler(t_s)
        if group == "gyro":
            cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
            return np.array(
                [
                    droll - dyaw * sp,
                    dpitch * cr + dyaw * cp * sr,
                    -dpitch * sr + dyaw * cp * cr,
                ]
            )
        if group not in ("accel", "mag"):
            raise ValueError(f"no synthetic signal for group '{group}'")
        rot = _rotation(roll, pitch, yaw)
        vec = (0.0, 0.0, GRAVITY_M_S2) if group == "accel" else EARTH_FIELD
        # R^T v: the earth vector in the body frame
        return np.array([sum(rot[j][i] * vec[j] for j in range(3)) for i in range(3)])

    def sample(self, group: str, t_ns: int) -> np.ndarray:
        """Truth at ``t_ns`` (since the start) plus white noise drawn from a generator seeded
        by (seed, group): the same sample times give the same values."""
        value = self.truth(group, t_ns / 1e9)
        sigma = self.noise.get(group, 0.0)
        if sigma > 0:
            value = value + self._rngs[group].normal(0.0, sigma, size=3)
        return value


def _rotation(roll: float, pitch: float, yaw: float) -> list[list[float]]:
    (cr, cp, cy), (sr, sp, sy) = (
        (math.cos(roll), math.cos(pitch), math.cos(yaw)),
        (math.sin(roll), math.sin(pitch), math.sin(yaw)),
    )
    return [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
