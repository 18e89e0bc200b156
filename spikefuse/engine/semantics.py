"""Small pieces of the execution semantics shared by every runner and by the encoders:
the one rounding rule, activations, and the integrator's analytic crossing time.
The Cython engine implements the same formulas in C; these are the reference."""

from __future__ import annotations

import math

import numpy as np

from spikefuse.builder.model import INT32_MAX, INT32_MIN
from spikefuse.encoding import round_half_away as encoding_round

ROUND_LIMIT = 2**62
"""Rounded magnitudes stop here (+-inf included), before any float -> int64 conversion could
overflow; every send beyond it saturates at +-(2^31 - 1) like any other over-range send."""


def round_half_away(x: float) -> int:
    """Round half away from zero: the single rounding rule of spikefuse (magnitudes capped
    at :data:`ROUND_LIMIT`; NaN -> 0)."""
    if x >= ROUND_LIMIT:
        return ROUND_LIMIT
    if x <= -ROUND_LIMIT:
        return -ROUND_LIMIT
    if x != x:
        return 0
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def round_half_away_array(x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`round_half_away` (the encoders' rule) as int64."""
    clipped = np.clip(np.nan_to_num(np.asarray(x, np.float64)), -ROUND_LIMIT, ROUND_LIMIT)
    return encoding_round(clipped).astype(np.int64)


def saturate(n: int) -> tuple[int, bool]:
    if n > INT32_MAX:
        return INT32_MAX, True
    if n < INT32_MIN:
        return INT32_MIN, True
    return n, False


def activate(code: int, z: float, lo: float, hi: float) -> float:
    if code == 0:
        return z
    if code == 1:
        return z if z > 0.0 else 0.0
    if code == 2:
        return math.tanh(z)
    if code == 3:
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    if code == 4:
        return abs(z)
    if code == 5:
        return lo if z < lo else (hi if z > hi else z)
    raise ValueError(f"unknown activation code {code}")


NO_CROSSING = -1
NEVER_FIRED = -(2**62)
"""``t_fire`` of a unit that has not crossed yet: no earlier crossing defers its first one."""


def rate_limited(tc: int, t_fire: int, min_gap_ns: int) -> tuple[int, bool]:
    """(crossing time, deferred): a unit fires at most once per ``min_gap_ns`` (the node's
    ``max_crossing_rate_hz``); a crossing due sooner after its last one waits until then."""
    earliest = t_fire + int(min_gap_ns)
    if tc < earliest:
        return earliest, True
    return tc, False


def integrator_state(y: float, x: float, gain: float, inv_tau: float, dt_s: float) -> float:
    """y after dt_s seconds of dy/dt = gain*x - y*inv_tau with x held."""
    if inv_tau == 0.0:
        return y + gain * x * dt_s
    y_inf = gain * x / inv_tau
    return y_inf + (y - y_inf) * math.exp(-dt_s * inv_tau)


def next_crossing(
    y: float, x: float, gain: float, inv_tau: float, k: float, sent: int, last_dir: int = 0
) -> tuple[int, int]:
    """(delay_ns, direction) until k*y crosses the next level, or (NO_CROSSING, 0).

    The next level is ``sent ± 1/2`` in the direction of travel; right after a spike in the
    other direction (``last_dir``) it is ``sent ± 1`` — hysteresis on reversal, so a
    feedback loop whose slope flips at every spike cannot chatter at the time resolution."""
    slope = gain * x - y * inv_tau
    if slope > 0.0:
        direction = 1
    elif slope < 0.0:
        direction = -1
    else:
        return NO_CROSSING, 0
    if direction == -last_dir:
        level = (sent + float(direction)) / k
    else:
        level = (sent + 0.5 * float(direction)) / k
    if inv_tau == 0.0:
        dt = (level - y) / (gain * x)
    else:
        y_inf = gain * x / inv_tau
        num = y - y_inf
        den = level - y_inf
        # reachable only if level lies strictly between y and y_inf
        if den == 0.0 or (num > 0.0) != (den > 0.0) or abs(den) >= abs(num):
            return NO_CROSSING, 0
        dt = math.log(num / den) / inv_tau
    if not dt < 4.0e9:  # beyond ~126 years (or NaN): never
        return NO_CROSSING, 0
    if dt < 0.0:
        dt = 0.0
    delay = math.ceil(dt * 1e9)
    return (delay if delay > 0 else 1), direction
