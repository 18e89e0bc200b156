"""Health of the attitude estimate: input checks (NaN, dead accelerometer, saturated gyro)
and a status function a daemon can call on the graph's current outputs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from spikefuse.tables import G0_M_S2

#: a common MEMS full-scale range; readings at or beyond 99.9 % of it count as saturated
DEFAULT_GYRO_RANGE_RAD_S = math.radians(2000.0)


@dataclass(frozen=True)
class InputFlags:
    """Counts of bad input samples (rows)."""

    n_samples: int
    n_gyro_nonfinite: int = 0
    n_accel_nonfinite: int = 0
    n_gyro_saturated: int = 0
    n_accel_dead: int = 0  # |a| < 0.1 g0: an accelerometer that reads (almost) nothing
    n_mag_nonfinite: int = 0

    def flags(self) -> list[str]:
        out = []
        if self.n_gyro_nonfinite or self.n_accel_nonfinite or self.n_mag_nonfinite:
            out.append("nonfinite_samples")
        if self.n_gyro_saturated:
            out.append("gyro_saturated")
        if self.n_accel_dead:
            out.append("accel_dead")
        return out

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_inputs(
    gyro: np.ndarray,
    accel: np.ndarray,
    gyro_range_rad_s: float = DEFAULT_GYRO_RANGE_RAD_S,
    mag: np.ndarray | None = None,
) -> InputFlags:
    """Count NaN/Inf rows (also of ``mag``), saturated gyro rows and dead-accelerometer
    rows."""
    g = np.asarray(gyro, dtype=np.float64)
    a = np.asarray(accel, dtype=np.float64)
    g_fin = np.all(np.isfinite(g), axis=1)
    a_fin = np.all(np.isfinite(a), axis=1)
    with np.errstate(invalid="ignore"):
        sat = np.any(np.abs(g) >= 0.999 * gyro_range_rad_s, axis=1) & np.all(~np.isnan(g), axis=1)
        dead = a_fin & (np.linalg.norm(np.where(np.isfinite(a), a, 0.0), axis=1) < 0.1 * G0_M_S2)
    return InputFlags(
        n_samples=int(g.shape[0]),
        n_gyro_nonfinite=int((~g_fin).sum()),
        n_accel_nonfinite=int((~a_fin).sum()),
        n_gyro_saturated=int(sat.sum()),
        n_accel_dead=int(dead.sum()),
        n_mag_nonfinite=(
            0 if mag is None else int((~np.all(np.isfinite(np.asarray(mag)), axis=1)).sum())
        ),
    )


@dataclass(frozen=True)
class AttitudeStatus:
    """What a daemon reports about the estimate it holds."""

    ok: bool
    accel_trust: float  # 0..1: how much the accelerometer currently corrects the estimate
    gravity_norm: float  # |g|, 1 when healthy
    flags: tuple[str, ...]


def attitude_status(
    gravity: np.ndarray, accel_trust: float | np.ndarray, norm_tol: float = 0.2
) -> AttitudeStatus:
    """Status from the graph's current outputs (``eng.output_value("gravity")`` and
    ``eng.output_value("accel_trust")``): flags ``accel_untrusted`` (trust 0: gyro-only,
    the inclination drifts), ``gravity_norm_off`` (|g| off 1 by more than ``norm_tol``)
    and ``nonfinite``."""
    g = np.asarray(gravity, dtype=np.float64).reshape(-1)
    t = float(np.asarray(accel_trust, dtype=np.float64).reshape(-1)[0])
    flags = []
    if not (np.all(np.isfinite(g)) and math.isfinite(t)):
        flags.append("nonfinite")
        return AttitudeStatus(False, t, float("nan"), tuple(flags))
    norm = float(np.linalg.norm(g))
    if t <= 0.0:
        flags.append("accel_untrusted")
    if abs(norm - 1.0) > norm_tol:
        flags.append("gravity_norm_off")
    return AttitudeStatus(not flags, t, norm, tuple(flags))


def trust_summary(trust: np.ndarray | None, gravity: np.ndarray) -> dict[str, float]:
    """Per-run summary: fraction of samples with zero accelerometer trust, |g| deviation."""
    norm = np.linalg.norm(gravity, axis=1)
    out = {"gravity_norm_max_dev": float(np.max(np.abs(norm - 1.0))) if norm.size else float("nan")}
    out["accel_untrusted_frac"] = (
        float(np.mean(trust <= 0.0)) if trust is not None and trust.size else float("nan")
    )
    return out


__all__ = [
    "AttitudeStatus",
    "DEFAULT_GYRO_RANGE_RAD_S",
    "InputFlags",
    "attitude_status",
    "check_inputs",
    "trust_summary",
]
