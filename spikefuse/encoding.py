"""Encoders that turn sampled signals into signed integer change-events.

Pure numpy, deterministic, no I/O: drivers, importers and tests all use these.

* :func:`round_half_away` is the ONE rounding rule of the project (the engine uses it too):
  ``floor(|x| + 1/2) * sign(x)``.
* :class:`SigmaDeltaEncoder` is a per-channel sigma-delta modulator with the herding
  residual: for a value ``v`` with scale ``k`` (counts per unit) it sends
  ``n = round_half_away(k*v - sent)`` and accumulates ``sent += n``, so a receiver that sums
  the counts reconstructs ``sent / k`` and ``|k*v - sent| <= 1/2`` after every sample.
  Optional **auto-zero at rest** (``rest_samples`` > 0): once no channel has sent anything,
  every channel's reconstruction has been 0 and every raw value (after the offset) within
  the threshold of 0 for ``rest_samples`` samples in a row, each
  channel's offset moves towards its raw value by ``1/zero_tau_samples`` per sample, and the
  encoder sends ``k*(v - offset)``: a sensor offset under half a quantum (a gyro bias under
  a coarse rate quantum) is invisible downstream at rest, but it biases every motion that
  follows; the encoder, which sees the raw values, removes it without sending anything. The
  offset stays within half a quantum (it learns only where the reconstruction is 0).
  Optional **hysteresis** ``h`` (quanta, < 1/2): a channel sends only when
  ``|k*v - sent| > 1/2 + h``, so a still value on a level boundary does not toggle with
  its noise (the reconstruction is then within ``1/2 + h`` quanta).
  Optional **smoothing** ``smooth_samples`` ``s`` (>= 1; 1: off): each channel quantizes an
  exponential moving average ``m += (v - m)/s`` (started at its first finite value) instead
  of ``v``: a noisy sensor (a magnetometer) whose consumer low-passes it anyway sends its
  noise ``~sqrt(2 s)`` times smaller, so a finer quantum stays quiet at rest. It lags a
  changing value by ``s - 1`` samples. A non-finite value leaves the average unchanged.
  Optional **rest hysteresis** ``quiet_hysteresis`` ``h_q`` (quanta) after ``quiet_samples``
  ``N``: once the encoder has sent nothing for ``N`` samples in a row (and every value was
  finite), a channel sends only when ``|k*v - sent| > 1/2 + h + h_q``, until it sends again.
  A still sensor whose noise keeps crossing a level boundary toggles at most until it has
  been quiet for ``N`` samples; its reconstruction stays what it was when it went quiet
  (the value at rest is within ``1/2 + h`` of it), and a change from rest shows once it
  exceeds ``h_q`` more. With ``quiet_smooth_samples`` ``s_q`` > 1 the encoder also keeps
  an exponential moving average ``m_q += (v - m_q)/s_q`` of every value, and while at rest
  it quantizes ``m_q`` instead of ``v`` (``quiet_needs_zero``: a rate sensor is at rest only
  where every channel's reconstruction is 0 too, not in a steady rotation): a vibration or noise burst at rest averages out
  (``s_q`` 30: ~8x smaller), and motion from rest still shows within a few samples, since
  a rate or tilt change moves the average by ``1/s_q`` of it per sample; after the first
  count the values are quantized as they are again.
* :class:`DvsEncoder` emulates a dynamic-vision-sensor pixel array on frames: per pixel the
  log intensity is compared with a reference; every crossing of the contrast threshold ``C``
  emits one signed event, ``n = floor(|dL| / C)`` of them, timestamped by linear
  interpolation across the frame interval.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DvsEncoder",
    "SigmaDeltaEncoder",
    "resample_area",
    "round_half_away",
    "to_gray",
]

INT32_MAX = np.iinfo(np.int32).max
# beyond this |k*v| cannot be represented exactly in float64 / the int64 accumulator
_MAX_TARGET = float(2**53)


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round to the nearest integer, ties away from zero: ``floor(|x| + 0.5) * sign(x)``.

    Returns float64 (same shape as ``x``); NaN stays NaN."""
    a = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(a) + 0.5), a) + 0.0  # + 0.0 turns -0.0 into 0.0


def _average_into(m: np.ndarray, values: np.ndarray, gain: float) -> np.ndarray:
    """One step of the encoders' moving average ``m += gain * (values - m)`` in place; a
    channel starts at its first finite value (``m`` NaN until then) and a non-finite value
    leaves it as it was. Returns the finite mask of ``values``."""
    fin = np.isfinite(values)
    start = fin & np.isnan(m)
    m[start] = values[start]
    run = fin & ~start
    m[run] = m[run] + gain * (values[run] - m[run])
    return fin


def send_counts(residual: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Counts to send for ``residual = k*v - sent``: ``round_half_away`` where the residual
    is strictly beyond ``threshold`` (half a quantum), else 0 — so a value exactly on a half
    level does not toggle ±1 on every sample, and ``|k*v - sent| <= 1/2`` still holds after
    sending. A threshold above 1/2 is a hysteresis: noise around a half level must span
    ``2 (threshold - 1/2)`` quanta to toggle it."""
    r = np.asarray(residual, dtype=np.float64)
    return np.where(np.abs(r) > threshold, round_half_away(r), 0.0)


def _as_scale(scale: float | np.ndarray, n_channels: int) -> np.ndarray:
    k = np.asarray(scale, dtype=np.float64)
    if k.ndim == 0:
        k = np.full(n_channels, float(k))
    if k.shape != (n_channels,):
        raise ValueError(f"scale has shape {k.shape}, expected () or ({n_channels},)")
    if not np.all(np.isfinite(k)) or np.any(k <= 0):
        raise ValueError(f"scale must be finite and > 0, found {k.tolist()}")
    return k


class SigmaDeltaEncoder:
    """Sigma-delta encoder for ``n_channels`` channels with a per-channel ``scale``.

    ``encode(values)`` returns ``(channels, counts)`` (both int32) for the channels whose
    count is nonzero. Non-finite values (NaN/Inf) skip that channel for that sample and are
    counted in ``n_skipped_nonfinite``; values too large to quantise exactly
    (``|k*v| > 2**53``) are skipped and counted in ``n_skipped_out_of_range``. A single
    count is limited to the int32 range; a larger step is sent over several samples (the
    residual carries it) and counted in ``n_saturated``.
    """

    def __init__(
        self,
        n_channels: int,
        scale: float | np.ndarray,
        rest_samples: int = 0,
        zero_tau_samples: float = 1.0,
        hysteresis: float = 0.0,
        smooth_samples: float = 1.0,
        quiet_samples: int = 0,
        quiet_hysteresis: float = 0.0,
        quiet_smooth_samples: float = 1.0,
        quiet_needs_zero: bool = False,
    ):
        if int(n_channels) <= 0:
            raise ValueError(f"n_channels must be > 0, found {n_channels}")
        if int(rest_samples) < 0:
            raise ValueError(f"rest_samples must be >= 0, found {rest_samples}")
        if not (np.isfinite(zero_tau_samples) and zero_tau_samples >= 1.0):
            raise ValueError(f"zero_tau_samples must be >= 1, found {zero_tau_samples}")
        if not 0.0 <= hysteresis < 0.5:
            raise ValueError(f"hysteresis must be in [0, 0.5), found {hysteresis}")
        if not (np.isfinite(smooth_samples) and smooth_samples >= 1.0):
            raise ValueError(f"smooth_samples must be >= 1, found {smooth_samples}")
        if int(quiet_samples) < 0:
            raise ValueError(f"quiet_samples must be >= 0, found {quiet_samples}")
        if not 0.0 <= quiet_hysteresis < 1.0:
            raise ValueError(f"quiet_hysteresis must be in [0, 1), found {quiet_hysteresis}")
        if not (np.isfinite(quiet_smooth_samples) and quiet_smooth_samples >= 1.0):
            raise ValueError(f"quiet_smooth_samples must be >= 1, found {quiet_smooth_samples}")
        self.n_channels = int(n_channels)
        self.scale = _as_scale(scale, self.n_channels)
        self.threshold = 0.5 + float(hysteresis)
        self.sent = np.zeros(self.n_channels, dtype=np.int64)
        self.rest_samples = int(rest_samples)
        self.zero_gain = 1.0 / float(zero_tau_samples)
        self.offset = np.zeros(self.n_channels, dtype=np.float64)
        self.n_rest = 0  # samples in a row with nothing sent and a zero reconstruction
        self.smooth_gain = 1.0 / float(smooth_samples)
        self.smoothed = np.full(self.n_channels, np.nan)  # NaN: no finite value seen yet
        self.quiet_samples = int(quiet_samples)
        self.quiet_hysteresis = float(quiet_hysteresis)
        self.n_quiet = 0  # samples in a row with nothing sent (and finite values)
        self.quiet_gain = 1.0 / float(quiet_smooth_samples)
        self.quiet_needs_zero = bool(quiet_needs_zero)
        self.quiet_avg = np.full(self.n_channels, np.nan)  # the average quantized at rest
        self.n_skipped_nonfinite = 0
        self.n_skipped_out_of_range = 0
        self.n_saturated = 0
        self.n_samples = 0

    def reset(self) -> None:
        """Forget what was sent (the receiver must be reset too), the learnt offset, and
        zero the counters."""
        self.sent[:] = 0
        self.offset[:] = 0.0
        self.smoothed[:] = np.nan
        self.n_rest = 0
        self.n_quiet = 0
        self.quiet_avg[:] = np.nan
        self.n_skipped_nonfinite = 0
        self.n_skipped_out_of_range = 0
        self.n_saturated = 0
        self.n_samples = 0

    @property
    def at_rest(self) -> bool:
        """The encoder has sent nothing for ``quiet_samples`` samples (and the option is on)."""
        return bool(self.quiet_samples) and self.n_quiet >= self.quiet_samples

    def current_threshold(self) -> float:
        """The send threshold of the next sample: ``1/2 + hysteresis``, plus the rest
        hysteresis once the encoder has been quiet for ``quiet_samples``."""
        return self.threshold + self.quiet_hysteresis if self.at_rest else self.threshold

    def rest_averaged(self, values: np.ndarray) -> np.ndarray:
        """Update the rest average (``quiet_smooth_samples``) with ``values`` and return what
        the quantizer sees: the average while at rest, else ``values``. A channel's average
        starts at its first finite value; a non-finite value leaves it as it was and is
        passed on (the quantizer skips it)."""
        if self.quiet_gain == 1.0 or not self.quiet_samples:
            return values
        if np.shape(values) != self.quiet_avg.shape:
            return values  # (a wrong shape is reported by the quantizer)
        fin = _average_into(self.quiet_avg, values, self.quiet_gain)
        return np.where(fin, self.quiet_avg, values) if self.at_rest else values

    def count_quiet(self, values: np.ndarray, n_sent: int) -> None:
        """Rest-hysteresis bookkeeping after a sample (``n_sent`` channels sent): count the
        samples in a row with nothing sent (and, with ``quiet_needs_zero``, a zero
        reconstruction); a non-finite value is no evidence of rest."""
        if not self.quiet_samples:
            return
        moved = n_sent or (self.quiet_needs_zero and self.sent.any())
        if moved or not np.isfinite(values).all():
            self.n_quiet = 0
        else:
            self.n_quiet += 1

    def zeroed(self, values: np.ndarray) -> np.ndarray:
        """The values the quantizer sees: ``values - offset`` (``values`` itself when the
        auto-zero is off)."""
        if not self.rest_samples or np.shape(values) != self.offset.shape:
            return values  # (a wrong shape is reported by the quantizer)
        return values - self.offset

    def smooth(self, values: np.ndarray) -> np.ndarray:
        """The moving average the quantizer sees (``values`` itself when smoothing is off);
        updates it. A channel starts at its first finite value; a non-finite value is
        passed on (the quantizer skips it) and leaves the average as it was."""
        if self.smooth_gain == 1.0 or np.shape(values) != self.smoothed.shape:
            return values
        fin = _average_into(self.smoothed, values, self.smooth_gain)
        return np.where(fin, self.smoothed, values)

    def learn_offset(self, values: np.ndarray, n_sent: int) -> None:
        """Auto-zero bookkeeping after a sample (``n_sent`` channels sent): count the
        samples at rest and, after ``rest_samples`` of them, move the offset towards the raw
        values (clipped to half a quantum). A non-finite value is no evidence of rest."""
        if not self.rest_samples:
            return
        if n_sent or self.sent.any() or not self._reads_zero(values):
            self.n_rest = 0
            return
        self.n_rest += 1
        if self.n_rest >= self.rest_samples:
            half = 0.5 / self.scale
            self.offset = np.clip(
                self.offset + self.zero_gain * (values - self.offset), -half, half
            )

    def _reads_zero(self, values: np.ndarray) -> bool:
        """Every value is finite and, after the offset, within the plain threshold of 0:
        what the quantizer alone would send nothing for (a value that only a moving
        average or the rest hysteresis kept silent is motion, not rest)."""
        if not np.isfinite(values).all():
            return False
        return bool(np.all(np.abs(self.scale * (values - self.offset)) <= self.threshold))

    def reconstruction(self) -> np.ndarray:
        """What a receiver that summed every count holds: ``sent / scale``."""
        return self.sent / self.scale

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (self.n_channels,):
            raise ValueError(f"values have shape {v.shape}, expected ({self.n_channels},)")
        self.n_samples += 1
        raw, v = v, self.smooth(self.rest_averaged(self.zeroed(v)))
        target = self.scale * v
        threshold = self.current_threshold()
        if np.isfinite(target).all() and np.abs(target).max() <= _MAX_TARGET:
            delta = send_counts(target - self.sent, threshold)  # the common case
        else:
            delta = self._partial_delta(target, threshold)
        if np.abs(delta).max() > INT32_MAX:
            saturated = np.abs(delta) > INT32_MAX
            self.n_saturated += int(np.count_nonzero(saturated))
            delta = np.clip(delta, -INT32_MAX, INT32_MAX)
        n = delta.astype(np.int64)
        self.sent += n
        nz = np.flatnonzero(n)
        self.learn_offset(raw, nz.size)
        self.count_quiet(raw, nz.size)
        return nz.astype(np.int32), n[nz].astype(np.int32)

    def _partial_delta(self, target: np.ndarray, threshold: float) -> np.ndarray:
        """Counts when some channels are non-finite or out of range (those are skipped)."""
        finite = np.isfinite(target)
        in_range = np.abs(np.where(finite, target, 0.0)) <= _MAX_TARGET
        self.n_skipped_nonfinite += int(self.n_channels - np.count_nonzero(finite))
        self.n_skipped_out_of_range += int(np.count_nonzero(finite & ~in_range))
        ok = finite & in_range
        delta = np.zeros(self.n_channels, dtype=np.float64)
        delta[ok] = send_counts(target[ok] - self.sent[ok], threshold)
        return delta


def to_gray(frame: np.ndarray) -> np.ndarray:
    """A frame as float64 intensity in [0, 1] (integers are divided by their dtype's max;
    floats are taken as already normalised). RGB(A) is reduced with Rec. 601 luma weights."""
    f = np.asarray(frame)
    if f.ndim == 3:
        if f.shape[2] == 1:
            f = f[:, :, 0]
        elif f.shape[2] in (3, 4):
            w = np.array([0.299, 0.587, 0.114])
            g = f[:, :, :3].astype(np.float64) @ w
            return _normalise(g, f.dtype)
        else:
            raise ValueError(f"frame has {f.shape[2]} channels, expected 1, 3 or 4")
    if f.ndim != 2:
        raise ValueError(f"frame has shape {f.shape}, expected (H, W) or (H, W, C)")
    return _normalise(f.astype(np.float64), f.dtype)


def _normalise(g: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return g / float(np.iinfo(dtype).max)
    if np.issubdtype(dtype, np.bool_):
        return g
    if np.issubdtype(dtype, np.floating):
        return g
    raise ValueError(f"frame dtype {dtype} is not numeric")


def _area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Row-stochastic matrix averaging input cells over each output cell's footprint."""
    edges_out = np.linspace(0.0, n_in, n_out + 1)
    lo = edges_out[:-1, None]
    hi = edges_out[1:, None]
    cell_lo = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cell_lo + 1) - np.maximum(lo, cell_lo), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resample_area(
    img: np.ndarray,
    height: int,
    width: int,
    matrices: dict[tuple[int, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Resample a 2-D array to (height, width) by area averaging: exact block means for
    integer factors, overlap-weighted means otherwise (also valid for upsampling, where it
    replicates). ``matrices`` caches the weight matrices between calls."""
    h_in, w_in = img.shape
    if (h_in, w_in) == (height, width):
        return img
    if h_in % height == 0 and w_in % width == 0:
        return img.reshape(height, h_in // height, width, w_in // width).mean(axis=(1, 3))
    cache = {} if matrices is None else matrices
    if (height, h_in) not in cache:
        cache[(height, h_in)] = _area_matrix(height, h_in)
    if (width, w_in) not in cache:
        cache[(width, w_in)] = _area_matrix(width, w_in)
    return cache[(height, h_in)] @ img @ cache[(width, w_in)].T


class DvsEncoder:
    """DVS emulation on log intensity for a ``width`` x ``height`` pixel array.

    ``encode(t_ns, frame, frame_interval_ns)`` takes the frame captured at ``t_ns``
    (any size: it is area-resampled to the configured resolution) and returns
    ``(channels int32, counts int32, dt_ns int64)``: one entry per threshold crossing,
    ``channel = y*width + x``, ``count = +1/-1``, sorted by ``dt_ns``. ``dt_ns`` is the
    crossing time relative to the start of the frame interval ``t_ns - frame_interval_ns``,
    in ``(0, frame_interval_ns]``, linearly interpolated between the two frames.

    The first frame only initialises the reference and emits nothing. After a pixel emits,
    its reference moves by ``n*C`` (the sub-threshold residual is kept). A pixel within
    ``refractory_ns`` of its last event emits nothing and keeps its reference, so the change
    is reported when the refractory period is over. Non-finite pixels are skipped and
    counted in ``n_skipped_nonfinite``.
    """

    def __init__(
        self,
        width: int,
        height: int,
        threshold: float = 0.2,
        refractory_ns: int = 0,
        eps: float = 1e-3,
    ):
        if width <= 0 or height <= 0:
            raise ValueError(f"resolution must be positive, found {width}x{height}")
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be > 0, found {threshold}")
        if refractory_ns < 0:
            raise ValueError(f"refractory_ns must be >= 0, found {refractory_ns}")
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be > 0, found {eps}")
        self.width = int(width)
        self.height = int(height)
        self.threshold = float(threshold)
        self.refractory_ns = int(refractory_ns)
        self.eps = float(eps)
        self.reference: np.ndarray | None = None
        self.last_event_ns = np.full(self.width * self.height, np.iinfo(np.int64).min // 2)
        self.n_frames = 0
        self.n_skipped_nonfinite = 0
        self._matrices: dict[tuple[int, int], np.ndarray] = {}

    def reset(self) -> None:
        self.reference = None
        self.last_event_ns[:] = np.iinfo(np.int64).min // 2
        self.n_frames = 0
        self.n_skipped_nonfinite = 0

    def log_intensity(self, frame: np.ndarray) -> np.ndarray:
        """Flattened log(I + eps) of the frame at the configured resolution."""
        g = resample_area(to_gray(frame), self.height, self.width, self._matrices)
        return np.log(np.clip(g, 0.0, None) + self.eps).ravel()

    def encode(
        self, t_ns: int, frame: np.ndarray, frame_interval_ns: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if frame_interval_ns <= 0:
            raise ValueError(f"frame_interval_ns must be > 0, found {frame_interval_ns}")
        log_i = self.log_intensity(frame)
        self.n_frames += 1
        finite = np.isfinite(log_i)
        self.n_skipped_nonfinite += int(log_i.size - np.count_nonzero(finite))
        if self.reference is None:
            self.reference = np.where(finite, log_i, np.nan)
            return _empty_events()
        ref = self.reference
        unset = ~np.isfinite(ref) & finite
        ref[unset] = log_i[unset]  # a pixel that was non-finite initialises now
        d = np.where(finite, log_i - ref, 0.0)
        n_cross = np.floor(np.abs(d) / self.threshold)
        t0 = int(t_ns) - int(frame_interval_ns)
        if self.refractory_ns > 0:
            # a pixel fires only once its refractory period is over, and at most once per
            # refractory period within the interval; the rest stays in the reference
            blocked = self.last_event_ns + self.refractory_ns > int(t_ns)
            n_cross[blocked] = 0.0
            n_cross = np.minimum(n_cross, max(1, int(frame_interval_ns) // self.refractory_ns))
        fire = np.flatnonzero(n_cross > 0)
        if fire.size == 0:
            return _empty_events()
        n = n_cross[fire].astype(np.int64)
        abs_d = np.abs(d[fire])
        sign = np.sign(d[fire]).astype(np.int32)
        ref[fire] += sign * n * self.threshold
        # crossing j (1..n) of a pixel happens at fraction j*C/|dL| of the interval
        pix = np.repeat(fire, n)
        j = np.arange(pix.size) - np.repeat(np.cumsum(n) - n, n) + 1
        dt = self._crossing_dt(j * self.threshold / np.repeat(abs_d, n), frame_interval_ns)
        self.last_event_ns[fire] = t0 + self._crossing_dt(
            n * self.threshold / abs_d, frame_interval_ns
        )
        counts = np.repeat(sign, n)
        order = np.argsort(dt, kind="stable")
        return pix[order].astype(np.int32), counts[order], dt[order]

    @staticmethod
    def _crossing_dt(frac: np.ndarray, frame_interval_ns: int) -> np.ndarray:
        return np.clip(np.ceil(frac * frame_interval_ns), 1, frame_interval_ns).astype(np.int64)


def _empty_events() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int64)
