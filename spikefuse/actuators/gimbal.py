"""``gimbal`` actuator: a 2-axis (roll, pitch) levelling gimbal commanded from the estimated
body-frame "up" vector that the core's attitude graph publishes (output ``gravity``).

Convention (checked against the graph and BROAD's ground truth, ``tests/test_gimbal_demo.py``):
``g`` is the body-frame unit vector pointing up (what a resting accelerometer reads, +z
when level), the body orientation is ``R = Rz(yaw) Ry(pitch) Rx(roll)`` (right-handed,
z up), so ``g = R^T e_z = (-sin pitch, cos pitch sin roll, cos pitch cos roll)`` and::

    roll  = atan2(g_y, g_z)
    pitch = atan2(-g_x, hypot(g_y, g_z))
    command = (-roll, -pitch)   # radians: outer (roll) axis on the body, inner pitch axis

The platform ``R Rx(-roll) Ry(-pitch) = Rz(yaw)`` is then level. Each command is clamped
to ``roll_limit_deg`` / ``pitch_limit_deg`` (counted as ``n_limited``); a roll correction
beyond the limit gets the limit nearest it modulo 360 deg, with ``roll_hysteresis_deg`` so a
body near upside down does not throw the command between its limits on every atan2 wrap
(:func:`levelling_command`). A vector shorter
than ``min_norm`` (or not finite) has no defined tilt: the gimbal holds its safe angles
and counts it (``n_undefined``). Safe values (start, deadman, stop) are ``safe_deg``.

The conversion is nonlinear, so it lives here, in the actuator, and the core graph stays
purely event-driven. CSV columns: ``t_ns, kind, seq, cause_t_ns, roll_cmd_rad,
pitch_cmd_rad, limited`` (one flushed row per applied command)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from spikefuse.actuators.base import Actuator, ActuatorConfig, register_actuator
from spikefuse.actuators.console import command_timing


class GimbalConfig(ActuatorConfig):
    gravity_channels: tuple[int, int, int] = (0, 1, 2)
    """Motor channels holding g_x, g_y, g_z of the body-frame up vector."""
    roll_limit_deg: float = Field(60.0, gt=0.0, le=180.0)
    pitch_limit_deg: float = Field(60.0, gt=0.0, le=90.0)
    roll_hysteresis_deg: float = Field(10.0, ge=0.0, le=90.0)
    """Near upside down a saturated roll command changes to the other limit only when that
    one is nearer the needed correction by this much (no flipping on every atan2 wrap)."""
    safe_deg: tuple[float, float] = (0.0, 0.0)
    """(roll, pitch) command applied at start, on deadman and on stop."""
    min_norm: float = Field(0.1, gt=0.0)
    csv: Path | None = None
    print_hz: float = Field(2.0, ge=0.0, le=10_000.0)
    """Most printed lines per second (0: print only safe-value changes)."""

    @model_validator(mode="after")
    def _check_channels(self) -> GimbalConfig:
        ch = self.gravity_channels
        if min(ch) < 0 or len(set(ch)) != 3:
            raise ValueError(f"gravity_channels must be 3 distinct channels >= 0, found {ch}")
        if self.n_channels is not None and max(ch) >= self.n_channels:
            raise ValueError(f"gravity_channels {ch} out of range for n_channels={self.n_channels}")
        return self


def tilt_from_up(g: np.ndarray) -> tuple[float, float]:
    """(roll, pitch) in radians of a body whose body-frame up vector is ``g``."""
    gx, gy, gz = (float(v) for v in g)
    return math.atan2(gy, gz), math.atan2(-gx, math.hypot(gy, gz))


def _off_rad(target: float, x: float) -> float:
    """How far the command ``x`` is from ``target`` as an angle (0..pi)."""
    return abs(math.remainder(target - x, 2.0 * math.pi))


def levelling_command(
    g: np.ndarray,
    roll_limit_rad: float = math.pi,
    pitch_limit_rad: float = math.pi / 2,
    previous_roll_rad: float = 0.0,
    roll_hysteresis_rad: float = 0.0,
) -> tuple[float, float, bool]:
    """(roll_cmd, pitch_cmd, limited): the command ``(-roll, -pitch)`` that cancels the
    tilt, clamped to the limits.

    Roll is an angle: a correction beyond the limit gets the limit nearest it (modulo
    360 deg). Near upside down (correction about +-180 deg, where ``atan2`` flips sign)
    both limits are almost equally far; the command keeps the limit it has
    (``previous_roll_rad``) until the other one is nearer by ``roll_hysteresis_rad``, so
    it swings over once, not on every flip."""
    roll, pitch = tilt_from_up(g)
    c = -roll
    best = min(max(c, -roll_limit_rad), roll_limit_rad)  # c in [-pi, pi]: nearest reachable
    near = previous_roll_rad + math.remainder(c - previous_roll_rad, 2.0 * math.pi)
    near = min(max(near, -roll_limit_rad), roll_limit_rad)  # continuing from the last command
    r = best
    if near != best and _off_rad(c, best) + roll_hysteresis_rad >= _off_rad(c, near):
        r = near
    p = min(max(-pitch, -pitch_limit_rad), pitch_limit_rad)
    return r, p, (_off_rad(c, r) > 1e-12 or p != -pitch)


def levelling_series(
    up: np.ndarray,
    roll_limit_rad: float,
    pitch_limit_rad: float,
    roll_hysteresis_rad: float = 0.0,
    min_norm: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """(roll_cmd, pitch_cmd) in radians that a gimbal gives for a sequence of body-frame up
    vectors ``(N, 3)``, one after the other as :class:`GimbalActuator` does (starting from
    its safe roll 0); vectors without a defined tilt give NaN."""
    u = np.asarray(up, dtype=np.float64)
    out = np.full((u.shape[0], 2), np.nan)
    prev = 0.0
    norms = np.linalg.norm(u, axis=1)
    for i in np.flatnonzero(np.isfinite(norms) & (norms >= min_norm)).tolist():
        r, p, _ = levelling_command(
            u[i], roll_limit_rad, pitch_limit_rad, prev, roll_hysteresis_rad
        )
        out[i] = r, p
        prev = r
    return out[:, 0], out[:, 1]


@register_actuator("gimbal", GimbalConfig)
class GimbalActuator(Actuator):
    """2-axis levelling gimbal: roll/pitch command from the body-frame up vector."""

    def __init__(self, cfg: GimbalConfig):
        super().__init__(cfg)
        self.cfg: GimbalConfig = cfg
        self._ch = list(cfg.gravity_channels)
        self._limits = (math.radians(cfg.roll_limit_deg), math.radians(cfg.pitch_limit_deg))
        self._safe = (math.radians(cfg.safe_deg[0]), math.radians(cfg.safe_deg[1]))
        self._csv = cfg.open_csv(cfg.csv) if cfg.csv is not None else None
        if self._csv is not None:
            self._csv.write("t_ns,kind,seq,cause_t_ns,roll_cmd_rad,pitch_cmd_rad,limited\n")
        self._print_period_ns = round(1e9 / cfg.print_hz) if cfg.print_hz > 0 else None
        self._next_print_ns = 0
        self._last_kind = ""
        self.n_applied = 0
        self.n_limited = 0
        self.n_undefined = 0
        self.angles_rad = self._safe

    def _command(self, values: np.ndarray) -> tuple[float, float, bool, str]:
        """(roll, pitch, limited, kind) for one MotorCommand's values."""
        if values.size <= max(self._ch):
            self.n_undefined += 1
            return *self._safe, False, "undefined"
        g = np.asarray(values[self._ch], dtype=np.float64)
        if not np.all(np.isfinite(g)) or float(np.linalg.norm(g)) < self.cfg.min_norm:
            self.n_undefined += 1
            return *self._safe, False, "undefined"
        r, p, limited = levelling_command(
            g, *self._limits, self.angles_rad[0], math.radians(self.cfg.roll_hysteresis_deg)
        )
        self.n_limited += int(limited)
        return r, p, limited, "cmd"

    def apply(
        self,
        values: np.ndarray,
        *,
        safe: bool,
        seq: int,
        cause_t_ns: int,
        t_ns: int,
        refresh: bool = False,
    ) -> None:
        self.n_applied += 1
        if safe:
            roll, pitch, limited, kind = *self._safe, False, "safe"
        else:
            roll, pitch, limited, kind = self._command(values)
        self.angles_rad = (roll, pitch)
        if self._csv is not None:
            self._csv.write(f"{t_ns},{kind},{seq},{cause_t_ns},{roll!r},{pitch!r},{int(limited)}\n")
        due = self._print_period_ns is not None and t_ns >= self._next_print_ns
        changed, self._last_kind = kind != self._last_kind, kind
        if changed or (due and kind != "safe"):
            if self._print_period_ns is not None:
                self._next_print_ns = t_ns + self._print_period_ns
            lat = command_timing(t_ns, cause_t_ns, refresh) if kind == "cmd" else ""
            lim = " LIMITED" if limited else ""
            print(
                f"{self.cfg.name} {kind} roll {roll:+.4f} rad ({math.degrees(roll):+.2f} deg) "
                f"pitch {pitch:+.4f} rad ({math.degrees(pitch):+.2f} deg){lim}{lat}",
                file=sys.stdout,
                flush=True,
            )

    def metrics(self) -> dict[str, object]:
        return {
            "n_applied": self.n_applied,
            "n_limited": self.n_limited,
            "n_undefined": self.n_undefined,
            "roll_cmd_rad": self.angles_rad[0],
            "pitch_cmd_rad": self.angles_rad[1],
        }

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None


__all__ = [
    "GimbalActuator",
    "GimbalConfig",
    "levelling_command",
    "levelling_series",
    "tilt_from_up",
]
