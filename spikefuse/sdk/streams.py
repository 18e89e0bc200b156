"""One output stream per channel group: its encoder, its pending batch and its sequence.

A batch collects the events of one group. It is flushed (sent as one EventBatch) when

* the oldest pending event has waited ``max_batch_latency_ms`` of wall-clock time
  (:meth:`GroupStream.flush_deadline_ns`, serviced by the runner's wait loop),
* a new item ends ``max_batch_latency_ms`` or more of *data* time after the batch start
  (so a fast replay batches exactly like a real-time one),
* it holds ``max_batch_events`` events, or
* the latency is 0 (every sample is sent at once), or the driver stops.

Event times are kept exactly: ``t_ns`` of the batch plus per-event ``dt_ns`` offsets
(omitted when every offset is 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.protocol import EventBatch
from spikefuse.sdk._fast import SigmaDeltaStep, add_totals, pack_batch

SendFn = Callable[[EventBatch], None]
PayloadFn = Callable[[bytes], None]

SYNC_MAX_CHANNELS = 4096
"""Streams up to this many channels keep per-channel totals for the heartbeat keyframes
(IMU-like streams, where one lost count biases the receiver for good); wider streams (event
cameras) do not: a lost DVS event only blurs one pixel's contrast for a moment."""


class CompiledSigmaDelta(SigmaDeltaEncoder):
    """:class:`SigmaDeltaEncoder` whose ``encode`` is one compiled call (the SDK's per-sample
    step); the base class's numpy ``encode`` is its oracle (tests/test_sdk_fast.py)."""

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
        super().__init__(
            n_channels,
            scale,
            rest_samples,
            zero_tau_samples,
            hysteresis,
            smooth_samples,
            quiet_samples,
            quiet_hysteresis,
            quiet_smooth_samples,
            quiet_needs_zero,
        )
        # shares the arrays (the moving average is done by the step)
        self._step = SigmaDeltaStep(
            self.scale, self.sent, self.threshold, self.smoothed, self.smooth_gain
        )

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = values
        if type(v) is not np.ndarray or v.dtype != np.float64 or v.ndim != 1:
            v = np.asarray(v, dtype=np.float64)
            if v.ndim != 1:
                raise ValueError(f"values have shape {v.shape}, expected ({self.n_channels},)")
        step = self._step
        raw, v = v, self.zeroed(v)  # the auto-zero (off: v itself) in the base's arithmetic
        if self.quiet_samples:  # the rest hysteresis and average, in the base's arithmetic
            v = self.rest_averaged(v)
            step.threshold = self.current_threshold()
        ch, co = step.encode(v if v.flags.c_contiguous else np.ascontiguousarray(v))
        self.n_samples += 1
        self.learn_offset(raw, ch.size)
        self.count_quiet(raw, ch.size)
        if step.last_bad:
            self.n_skipped_nonfinite += step.last_nonfinite
            self.n_skipped_out_of_range += step.last_out_of_range
            self.n_saturated += step.last_saturated
        return ch, co


class GroupStream:
    def __init__(
        self,
        sensor: str,
        group: str,
        input_name: str,
        scale: float,
        latency_ns: int,
        max_events: int,
        epoch_offset_ns: int,
        send_payload: PayloadFn | None = None,
    ):
        """``send_payload``: takes a batch's payload bytes (a sender on a Publisher): a
        batch in the plain form goes there packed by the compiled writer, without an
        EventBatch; others (and every batch without it) go to ``add``'s ``send``."""
        self.sensor = sensor
        self.group = group
        self.input = input_name
        self.scale = float(scale)
        self.latency_ns = int(latency_ns)
        self.max_events = int(max_events)
        self.epoch_offset_ns = int(epoch_offset_ns)
        self.encoder: SigmaDeltaEncoder | DvsEncoder | None = None
        self.values_per_item = 0
        """raw values per item of pre-encoded events (``Events.n_values``; else the encoder's)"""
        self.seq = 0
        self.n_items = 0
        self.n_batches = 0
        self.n_events = 0
        self.n_bad_items = 0
        self._t0_ns: int | None = None
        self._opened_mono_ns = 0
        self._channels: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._dt: list[np.ndarray] = []
        self._n_pending = 0
        self._totals = np.zeros(0, np.int64)
        self._totals_on = True
        self._send_payload = send_payload

    @property
    def totals(self) -> np.ndarray | None:
        """Running per-channel sum of every count flushed so far (None for wide streams)."""
        return self._totals if self._totals_on else None

    def _count(self, ch: np.ndarray, co: np.ndarray) -> None:
        if not self._totals_on or not ch.size:
            return
        top = add_totals(self._totals, ch, co)  # 0: added; else the size it needs first
        if not top:
            return
        if top > SYNC_MAX_CHANNELS:
            self._totals_on = False
            return
        self._totals = np.concatenate([self._totals, np.zeros(top - self._totals.size, np.int64)])
        add_totals(self._totals, ch, co)

    # ------------------------------------------------------------------ batching
    @property
    def n_pending(self) -> int:
        return self._n_pending

    def flush_deadline_ns(self) -> int | None:
        """Monotonic time at which the pending batch is due (None if nothing pending)."""
        if not self._n_pending:
            return None
        return self._opened_mono_ns + self.latency_ns

    def add(
        self,
        t_ns: int,
        channels: np.ndarray,
        counts: np.ndarray,
        dt_ns: np.ndarray | None,
        now_mono_ns: int,
        send: SendFn,
    ) -> None:
        """Queue events that happened at ``t_ns`` (+ ``dt_ns``), flushing as the rules say."""
        if not self.latency_ns and not self._n_pending and channels.size <= self.max_events:
            if channels.size:  # the per-sample path: one batch, nothing queued
                self._t0_ns = int(t_ns)
                dt = None
                if dt_ns is not None and dt_ns.any():
                    dt = dt_ns.astype(np.int64, copy=False)
                ch = channels.astype(np.int32, copy=False)
                self._send_batch(ch, counts.astype(np.int32, copy=False), dt, send)
            return
        if self._n_pending:
            end_ns = t_ns + (int(dt_ns.max()) if dt_ns is not None and dt_ns.size else 0)
            if end_ns - self._t0_ns >= self.latency_ns or t_ns < self._t0_ns:  # type: ignore[operator]
                self.flush(send)
        start = 0
        while start < channels.size:
            if self._n_pending >= self.max_events:
                self.flush(send)
            stop = min(channels.size, start + self.max_events - self._n_pending)
            self._append(
                t_ns,
                channels[start:stop],
                counts[start:stop],
                None if dt_ns is None else dt_ns[start:stop],
                now_mono_ns,
            )
            start = stop
        if self.latency_ns == 0 or self._n_pending >= self.max_events:
            self.flush(send)

    def _append(
        self,
        t_ns: int,
        channels: np.ndarray,
        counts: np.ndarray,
        dt_ns: np.ndarray | None,
        now_mono_ns: int,
    ) -> None:
        if not self._n_pending:
            self._t0_ns = int(t_ns)
            self._opened_mono_ns = now_mono_ns
        off = int(t_ns) - self._t0_ns  # type: ignore[operator]
        if dt_ns is None:
            dt = None if off == 0 else np.full(channels.size, off, np.int64)
        else:
            dt = dt_ns + off
        self._channels.append(channels)
        self._counts.append(counts)
        self._dt.append(dt)
        self._n_pending += channels.size

    def flush(self, send: SendFn) -> None:
        if not self._n_pending:
            return
        chs, cos, dts = self._channels, self._counts, self._dt
        if len(chs) == 1:
            ch, co, dt = chs[0], cos[0], dts[0]
        else:
            ch, co = np.concatenate(chs), np.concatenate(cos)
            dt = None
            if any(d is not None for d in dts):
                dt = np.concatenate(
                    [
                        np.zeros(c.size, np.int64) if d is None else d
                        for c, d in zip(chs, dts, strict=True)
                    ]
                )
        self._channels, self._counts, self._dt = [], [], []
        self._n_pending = 0
        ch = ch.astype(np.int32, copy=False)
        co = co.astype(np.int32, copy=False)
        if dt is not None:
            dt = dt.astype(np.int64, copy=False)
            if not dt.any():
                dt = None
        self._send_batch(ch, co, dt, send)

    def _send_batch(
        self, ch: np.ndarray, co: np.ndarray, dt: np.ndarray | None, send: SendFn
    ) -> None:
        fields = (
            self.sensor,
            self.seq,
            self._t0_ns,
            self.input,
            self.scale,
            ch,
            co,
            self.epoch_offset_ns,
            dt,
        )
        payload = None if self._send_payload is None else pack_batch(*fields)
        batch = EventBatch(*fields) if payload is None else None  # type: ignore[arg-type]
        self.seq += 1
        self.n_batches += 1
        self.n_events += int(ch.size)
        self._count(ch, co)
        if batch is None:
            self._send_payload(payload)  # type: ignore[misc]
        else:
            send(batch)

    # ------------------------------------------------------------------ counters
    @property
    def n_skipped_nonfinite(self) -> int:
        return self.encoder.n_skipped_nonfinite if self.encoder is not None else 0

    def metrics(self) -> dict[str, int | str]:
        enc = self.encoder
        width = getattr(enc, "n_channels", None) or getattr(enc, "width", 0) * getattr(
            enc, "height", 0
        )
        m = {
            "input": self.input,
            # channels of a sample, pixels of a frame (also one the driver encoded itself)
            "values_per_item": int(width or self.values_per_item),
            "n_items": self.n_items,
            "n_batches": self.n_batches,
            "n_events": self.n_events,
            "n_skipped_nonfinite": self.n_skipped_nonfinite,
            "n_bad_items": self.n_bad_items,
        }
        if isinstance(self.encoder, SigmaDeltaEncoder):
            m["n_skipped_out_of_range"] = self.encoder.n_skipped_out_of_range
            m["n_saturated"] = self.encoder.n_saturated
        return m
