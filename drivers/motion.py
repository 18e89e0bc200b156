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
NOISE_BLOCK = 256
"""Noise samples drawn at once per group (one draw per sample cost ~1.5 us hot, several
cold)."""


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
        # per axis: (amp, w, phase, amp * w) of both components, in _euler's order
        self._flat = [
            tuple(x for amp, w, ph in terms for x in (amp, w, ph, amp * w)) for terms in self._terms
        ]
        self._noise_rows: dict[str, list[list[float]]] = {}
        self._noise_next: dict[str, int] = {}

    def euler(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(roll, pitch, yaw) and their time derivatives at ``t_s``."""
        angles, rates = self._euler(t_s)
        return np.array(angles), np.array(rates)

    def _euler(self, t_s: float) -> tuple[list[float], list[float]]:
        # scalar math, unrolled (two components per axis): a 1 kHz driver pays this between
        # stamping a sample and sending it, on a wake with cold caches (numpy on 3x2 arrays
        # cost ~60 us there; the loop over the terms ~20 us). The same operations in the
        # same order as the sum over the terms: bit-identical values.
        angles, rates = [], []
        for a1, w1, p1, aw1, a2, w2, p2, aw2 in self._flat:
            arg1 = w1 * t_s + p1
            arg2 = w2 * t_s + p2
            angles.append(0.0 + a1 * math.sin(arg1) + a2 * math.sin(arg2))
            rates.append(0.0 + aw1 * math.cos(arg1) + aw2 * math.cos(arg2))
        return angles, rates

    @staticmethod
    def rotation(angles: np.ndarray) -> np.ndarray:
        """Body-to-earth rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll)."""
        return np.array(_rotation(*(float(a) for a in angles)))

    def truth(self, group: str, t_s: float) -> np.ndarray:
        return np.array(self._truth(group, t_s))

    def _truth(self, group: str, t_s: float) -> list[float]:
        (roll, pitch, yaw), (droll, dpitch, dyaw) = self._euler(t_s)
        if group == "gyro":
            cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
            return [
                droll - dyaw * sp,
                dpitch * cr + dyaw * cp * sr,
                -dpitch * sr + dyaw * cp * cr,
            ]
        if group not in ("accel", "mag"):
            raise ValueError(f"no synthetic signal for group '{group}'")
        rot = _rotation(roll, pitch, yaw)
        vec = (0.0, 0.0, GRAVITY_M_S2) if group == "accel" else EARTH_FIELD
        # R^T v: the earth vector in the body frame
        return [sum(rot[j][i] * vec[j] for j in range(3)) for i in range(3)]

    def sample(self, group: str, t_ns: int) -> np.ndarray:
        """Truth at ``t_ns`` (since the start) plus white noise drawn from a generator seeded
        by (seed, group): the same sample times give the same values."""
        v0, v1, v2 = self._truth(group, t_ns / 1e9)
        sigma = self.noise.get(group, 0.0)
        if sigma > 0:
            n0, n1, n2 = self._next_noise(group, sigma)
            return np.array([v0 + n0, v1 + n1, v2 + n2])
        return np.array([v0, v1, v2])

    def _next_noise(self, group: str, sigma: float) -> list[float]:
        """The next 3 noise values of ``group``: drawn NOISE_BLOCK samples at a time, the
        same numbers as one ``normal(0, sigma, 3)`` per sample (the generator fills an
        array in order)."""
        i = self._noise_next.get(group, NOISE_BLOCK)
        if i == NOISE_BLOCK:
            block = self._rngs[group].normal(0.0, sigma, size=(NOISE_BLOCK, 3))
            self._noise_rows[group] = block.tolist()
            i = 0
        self._noise_next[group] = i + 1
        return self._noise_rows[group][i]


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
