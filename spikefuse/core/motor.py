"""Per-actuator command shaping: clamp, slew-rate limit, minimum interval, refresh, fallback.

A :class:`MotorChannel` holds the *target* (the graph's output, clamped) and the *commanded*
values (what was last sent), two arrays updated in place (the compiled hot path,
:mod:`spikefuse.core.hot`, holds views of them). :meth:`MotorChannel.due_ns` says when it next wants to publish;
the daemon's loop wakes then and calls :meth:`MotorChannel.poll`, which returns the values
to publish (or ``None``). Nothing here reads a clock: times are passed in (monotonic ns).
"""

from __future__ import annotations

import numpy as np

from spikefuse.core.config import ActuatorMap
from spikefuse.errors import ConfigError

NS_PER_S = 1_000_000_000
_SMALL = 64


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """``np.array_equal`` for the equal-length float vectors of a channel, ~10x cheaper
    for the usual handful of channels (Python float comparison: 0.0 == -0.0, nan != nan)."""
    if a.size <= _SMALL:
        return a.tolist() == b.tolist()
    return bool((a == b).all())


class MotorChannel:
    def __init__(self, name: str, cfg: ActuatorMap, n_out: int, refresh_hz: float, now_ns: int):
        self.name = name
        self.cfg = cfg
        idx = np.arange(n_out) if cfg.channels is None else np.asarray(cfg.channels, np.int64)
        if idx.size and int(idx.max()) >= n_out:
            raise ConfigError(
                f"channel {int(idx.max())} out of range for output '{cfg.output}' of size {n_out}",
                f"actuators.{name}.channels",
            )
        self.index = idx
        self._whole = bool(idx.size == n_out and (idx == np.arange(n_out)).all())
        """every channel of the output, in order: no gather needed"""
        n = idx.size
        safe = np.asarray(cfg.safe_values, np.float64)
        if safe.ndim == 0:
            safe = np.full(n, float(safe))
        if safe.shape != (n,):
            raise ConfigError(
                f"safe_values has {safe.size} values but the actuator has {n} channels",
                f"actuators.{name}.safe_values",
            )
        self.safe = self._clamp(safe.copy())
        self.target = self.safe.copy()
        self.commanded = self.safe.copy()
        self.cause_t_ns = now_ns
        self._at_rest = True
        self.fallback = False
        self.refresh_ns = max(1, round(NS_PER_S / refresh_hz))
        self.min_interval_ns = round(cfg.min_interval_ms * 1e6)
        self.slew_step_ns = round(cfg.slew_step_ms * 1e6)
        self.last_pub_ns = now_ns - self.refresh_ns  # publish the initial state at once
        self.slew_t_ns = now_ns
        self.dirty = True
        self.fresh = False
        """True while the next publish carries a new cause (latency is measured then)"""
        self.n_published = 0
        self.n_coalesced = 0
        self.n_clamped = 0
        self.n_slew_limited = 0

    # ---------------------------------------------------------------- inputs
    def _clamp(self, v: np.ndarray) -> np.ndarray:
        if self.cfg.clamp is None:
            return v
        return np.clip(v, self.cfg.clamp[0], self.cfg.clamp[1])

    @property
    def at_rest(self) -> bool:
        """The commanded values equal the target (cached: updated on every change)."""
        return self._at_rest

    def set_output(self, full_output: np.ndarray, cause_t_ns: int, now_ns: int) -> None:
        """The Output node's new values (all its channels) caused at ``cause_t_ns``."""
        if self.fallback:
            return
        raw = full_output.copy() if self._whole else full_output[self.index]
        if self.cfg.clamp is None:
            self._retarget(raw, cause_t_ns, now_ns)
            return
        new = self._clamp(raw)
        if not same_values(new, raw):
            self.n_clamped += 1
        self._retarget(new, cause_t_ns, now_ns)

    def _retarget(self, new: np.ndarray, cause_t_ns: int, now_ns: int) -> None:
        if same_values(new, self.target):
            return
        if self.at_rest:
            self.slew_t_ns = now_ns
        if self.dirty:
            self.n_coalesced += 1
        self.target[:] = new
        self._at_rest = same_values(new, self.commanded)
        self.cause_t_ns = cause_t_ns
        self.dirty = True
        self.fresh = True

    def set_fallback(self, active: bool, now_ns: int, last_output: np.ndarray) -> None:
        """Force the safe values (at once, no slew) or return to the graph's output."""
        if active == self.fallback:
            return
        self.fallback = active
        if active:
            self.target[:] = self.safe
            self.commanded[:] = self.safe
            self._at_rest = True
            self.cause_t_ns = now_ns
            self.dirty = True
            self.last_pub_ns = now_ns - max(self.min_interval_ns, self.refresh_ns)
        else:
            self._retarget(self._clamp(last_output[self.index]), now_ns, now_ns)

    # ---------------------------------------------------------------- scheduling
    def due_ns(self) -> int:
        """When this channel next wants to publish (refresh, pending change or slew step)."""
        due = self.last_pub_ns + self.refresh_ns
        if self.dirty:
            change_ns = self.last_pub_ns + self.min_interval_ns
            if self.cfg.max_rate_per_s is not None and not self.fallback and not self.at_rest:
                change_ns = max(change_ns, self.slew_t_ns + self.slew_step_ns)
            due = min(due, change_ns)
        return due

    def poll(self, now_ns: int) -> np.ndarray | None:
        """Values to publish now, or None if nothing is due."""
        if now_ns < self.due_ns():
            return None
        self._slew(now_ns)
        self.dirty = not self.at_rest
        self.last_pub_ns = now_ns
        self.n_published += 1
        return self.commanded.copy()

    def _slew(self, now_ns: int) -> None:
        rate = self.cfg.max_rate_per_s
        if rate is None or self.fallback:
            self.commanded[:] = self.target
            self._at_rest = True
            return
        max_step = rate * (now_ns - self.slew_t_ns) / NS_PER_S
        delta = self.target - self.commanded
        step = np.clip(delta, -max_step, max_step)
        if not same_values(step, delta):
            self.n_slew_limited += 1
        self.commanded += step
        self._at_rest = same_values(self.commanded, self.target)
        self.slew_t_ns = now_ns

    def metrics(self) -> dict[str, object]:
        return {
            "n_published": self.n_published,
            "n_coalesced": self.n_coalesced,
            "n_clamped": self.n_clamped,
            "n_slew_limited": self.n_slew_limited,
            "fallback": self.fallback,
            "commanded": self.commanded.tolist(),
        }
