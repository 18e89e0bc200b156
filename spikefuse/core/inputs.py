"""A core's inputs: one path for the live core and offline replay.

:class:`InputState` is one graph input (conversion to the graph's scale with a herding
residual per channel, what was received and sent, counters). :class:`InputSet` holds every
input of a core and does everything that happens to an input message before the engine sees
it: the time check (``MAX_CLOCK_SKEW_NS``), the stream lookup, the sequence checks (a
duplicate is dropped, a forward jump counted as a gap, a seq going back is a restarted
driver: the input is reset), out-of-range channels, keyframe resync from heartbeat totals,
and the reorder window. A batch whose events carry several times (``dt_ns``) is taken
apart into one part per time (:func:`split_by_time`): each part is scheduled, applied and
pushed at its own time, so a batch of ten samples acts exactly as ten one-sample batches
(how a driver batches does not change what the engine computes). What is due is handed to
an ``apply`` callable, which converts it (:meth:`InputSet.take`) and pushes it into an
engine: :class:`~spikefuse.core.fusion.FusionCore` on the host's clock (or, ``clock: data``,
holding everything until a heartbeat vouches for its time: :attr:`InputSet.hold`),
:mod:`spikefuse.recording.offline` on the recording's arrival times with a window that
covers every transport delay.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from itertools import count

import numpy as np

from spikefuse.core.config import InputMap
from spikefuse.encoding import round_half_away
from spikefuse.protocol import HEARTBEAT_ENDED, MAX_CLOCK_SKEW_NS, EventBatch, Heartbeat
from spikefuse.transport.seq import DUPLICATE, GAP, IN_ORDER, seq_step

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
MAX_EXACT = 2.0**53
"""Largest converted input value (in counts) that float64 still holds exactly."""
MAX_TOTAL = 2**62
"""Largest heartbeat running total accepted (differences stay within int64)."""
WINDOW_ALL = 2**63
"""A reorder window longer than any recording: everything is held, then applied in time
order (offline replay)."""

SEQ_OK, SEQ_DROP, SEQ_RESTART = 0, 1, 2
"""What :meth:`InputSet.check_seq` makes of a batch's sequence number."""

ApplyFn = Callable[["InputState", EventBatch, bool, int, int, object], None]
"""``apply(input, part, reset, t_ns, now_ns, tag)``: the part (the events of one batch at one
time, :func:`split_by_time`) is due at ``t_ns``, its time; ``reset``: the input goes back to
zero first (its driver restarted); ``tag``: what the caller gave :meth:`InputSet.on_batch`
(None for a keyframe correction)."""


def split_by_time(batch: EventBatch) -> list[tuple[int, EventBatch]]:
    """A batch's events as parts of one time each: ``(t_ns, part)`` in time order, the events
    of one time in their order in the batch. A part is an EventBatch of the same stream and
    seq stamped with its time (``dt_ns`` None); a batch of one time is its own part."""
    dt = batch.dt_ns
    if dt is None or not dt.size:
        return [(batch.t_ns, batch)]
    offsets = dt.tolist()
    ch, co = batch.channels, batch.counts
    if any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
        order = np.argsort(dt, kind="stable")
        ch, co, offsets = ch[order], co[order], dt[order].tolist()
    cuts = [i for i in range(1, len(offsets)) if offsets[i] != offsets[i - 1]]
    if not cuts and not offsets[0]:
        return [(batch.t_ns, batch)]
    parts = []
    for a, b in zip([0, *cuts], [*cuts, len(offsets)], strict=True):
        t = batch.t_ns + offsets[a]
        part = EventBatch(
            batch.sensor, batch.seq, t, batch.input, batch.scale, ch[a:b], co[a:b],
            batch.epoch_offset_ns,
        )  # fmt: skip
        parts.append((t, part))
    return parts


class InputState:
    """One graph input: its stream, conversion to the graph's scale, liveness, counters."""

    FOLD_EVERY = 256

    def __init__(
        self,
        name: str,
        cfg: InputMap,
        size: int,
        scale: float,
        now_ns: int,
        window_ns: int | None = None,
    ):
        self.name = name
        self.cfg = cfg
        self.size = size
        self.scale = scale
        self.window_ns = round(cfg.reorder_window_ms * 1e6) if window_ns is None else window_ns
        self.timeout_ns = round(cfg.timeout_s * 1e9)
        self.target = np.zeros(size, np.float64)  # integrated value * scale (exact)
        self._sent = np.zeros(size, np.int64)  # counts pushed into the engine (see .sent)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._target_synced = True
        self.last_seen_ns = now_ns
        self.last_seq: int | None = None
        self.heard = False
        """Anything (a batch, a heartbeat not ``failed``) came from its sensor yet."""
        self.warned_unheard = False
        """The WARNING that its sensor was never heard from was given (once)."""
        self.end_announced = False
        """Its sensor's last word was the end of its stream (an ``ended`` heartbeat with
        nothing after it): set and cleared on arrival (:class:`InputSet`)."""
        self.stale = False
        """Reported state (the core's input state machine): silent past ``timeout_s``."""
        self.ended = False
        """Reported state: its sensor closed its stream (not a fault, never stale)."""
        self.n_batches = 0
        self.n_events = 0
        self.n_late = 0
        self.n_clamped = 0
        self.n_out_of_order = 0
        self.n_duplicate = 0
        self.n_gaps = 0  # seq jumps forward (lost batches, or a restarted driver's missed first)
        self.n_resets = 0
        self.n_stale = 0
        self.n_ended = 0
        self.received = np.zeros(size, np.int64)  # driver counts received (at its scale)
        self.last_scale: float | None = None
        self.n_resyncs = 0
        self.n_keyframes = 0  # heartbeats with totals compared (differing or not)
        self.n_resync_counts = 0
        self.n_startup_resyncs = 0
        self.n_startup_resync_counts = 0

    @property
    def sent(self) -> np.ndarray:
        """Counts pushed into the engine per channel. Same-scale batches (the hot path)
        are only queued and folded in here, when needed or every ``FOLD_EVERY`` batches."""
        if self._pending:
            chs, cos = zip(*self._pending, strict=True)
            self._pending.clear()
            np.add.at(self._sent, np.concatenate(chs), np.concatenate(cos))
        return self._sent

    def convert(self, batch: EventBatch) -> tuple[np.ndarray, np.ndarray] | None:
        """Counts at the graph input's scale (herding residual kept per channel); None
        (nothing changed) when the converted value is beyond what float64 holds exactly."""
        if batch.scale == self.scale:
            if not batch.channels.size:  # nothing sent: the herding residual stays
                return batch.channels, batch.counts
            self._pending.append((batch.channels, batch.counts))
            if len(self._pending) >= self.FOLD_EVERY:
                _ = self.sent
            self._target_synced = False
            return batch.channels, batch.counts
        ch = np.asarray(batch.channels, np.int64)
        co = np.asarray(batch.counts, np.int64)
        sent = self.sent
        if not self._target_synced:
            self.target[:] = sent
            self._target_synced = True
        target = self.target.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            np.add.at(target, ch, co * (self.scale / batch.scale))
        touched = np.unique(ch)
        if not (np.abs(target[touched]) <= MAX_EXACT).all():  # also catches inf and nan
            return None
        self.target = target
        n = round_half_away(target[touched] - sent[touched]).astype(np.int64)
        n = np.clip(n, -INT32_MAX, INT32_MAX)  # the engine saturates an input there anyway
        sent[touched] += n
        nz = n != 0
        return touched[nz].astype(np.int32), n[nz].astype(np.int32)

    def restart(self) -> None:
        """Its driver restarted (seq went back): what arrived from the old one is forgotten.
        The engine's input is brought back to zero when the new driver's first batch is
        applied (:meth:`reset`), in time order with the batches still held."""
        self.received[:] = 0

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts that bring the input back to zero (its sensor restarted its encoder)."""
        sent = self.sent
        nz = np.flatnonzero(sent)
        counts = (-sent[nz]).astype(np.int32)
        self.target[:] = 0.0
        sent[:] = 0
        self._target_synced = True
        self.n_resets += 1
        return nz.astype(np.int32), counts

    def metrics(self, now_ns: int) -> dict[str, object]:
        return {
            "sensor": self.cfg.sensor,
            "stale": self.stale,
            "ended": self.ended,
            "age_ms": round((now_ns - self.last_seen_ns) / 1e6, 3),
            "n_batches": self.n_batches,
            "n_events": self.n_events,
            "n_late": self.n_late,
            "n_clamped": self.n_clamped,
            "n_out_of_order": self.n_out_of_order,
            "n_duplicate": self.n_duplicate,
            "n_gaps": self.n_gaps,
            "n_resets": self.n_resets,
            "n_resyncs": self.n_resyncs,
            "n_resync_counts": self.n_resync_counts,
            "n_startup_resyncs": self.n_startup_resyncs,
            "n_startup_resync_counts": self.n_startup_resync_counts,
            "n_stale": self.n_stale,
            "n_ended": self.n_ended,
        }


class InputSet:
    """Every input of one core, keyed by graph input name (``states``) and by stream
    (``(sensor, batch input)``). ``drops`` counts what was refused, by reason."""

    def __init__(
        self,
        states: dict[str, InputState],
        apply: ApplyFn,
        drops: dict[str, int],
        epoch_offset_ns: int = 0,
    ):
        self.states = states
        self.by_stream = {(st.cfg.sensor, st.cfg.input or st.name): st for st in states.values()}
        self.max_window_ns = max((st.window_ns for st in states.values()), default=0)
        self.apply = apply
        self.drops = drops
        self.epoch_offset_ns = epoch_offset_ns
        """This host's CLOCK_REALTIME - CLOCK_MONOTONIC (the time check of other hosts)."""
        self.n_batches = 0
        self.n_events = 0
        self._reorder: list[tuple[int, int, str, EventBatch, bool, object]] = []
        self._tiebreak = count()
        self.hold = False
        """Hold every part until :meth:`pop_held` takes it (``clock: data``: a heartbeat
        says up to which time its driver's data is complete)."""

    def add(self, st: InputState) -> InputState:
        """One more input (offline replay feeds each graph input from the first stream it
        sees)."""
        self.states[st.name] = st
        self.by_stream[(st.cfg.sensor, st.cfg.input or st.name)] = st
        self.max_window_ns = max(self.max_window_ns, st.window_ns)
        return st

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    # ---------------------------------------------------------------- arrival
    def time_ok(self, msg: EventBatch | Heartbeat, now_ns: int) -> bool:
        """Whether a message's time (``t_ns``, and ``t_ns + max(dt_ns)`` of a batch) lies
        within ``MAX_CLOCK_SKEW_NS`` of this host's clock: on the same host directly, from
        another host through both hosts' epoch offsets. Counted as ``bad_time`` if not."""
        t_ns = msg.t_ns
        t_end = t_ns
        if isinstance(msg, EventBatch) and msg.dt_ns is not None and msg.dt_ns.size:
            t_end = t_ns + int(msg.dt_ns.max())
        shift = 0
        offset = msg.epoch_offset_ns if isinstance(msg, EventBatch) else 0
        if offset and abs(t_ns - now_ns) > MAX_CLOCK_SKEW_NS:
            shift = offset - self.epoch_offset_ns  # another host's monotonic clock
        if max(abs(t_ns + shift - now_ns), abs(t_end + shift - now_ns)) <= MAX_CLOCK_SKEW_NS:
            return True
        self.drop("bad_time")
        return False

    def on_batch(self, batch: EventBatch, now_ns: int, tag: object = None) -> None:
        """A batch arrived at ``now_ns``: checked, counted as received, scheduled."""
        if not self.time_ok(batch, now_ns):
            return
        st = self.by_stream.get((batch.sensor, batch.input))
        if st is None:
            self.drop("unknown_input")
            return
        verdict = self.check_seq(st, batch)
        if verdict == SEQ_DROP:
            return
        st.last_seen_ns = now_ns
        st.heard = True
        st.end_announced = False  # data after an end: the stream is open again
        if batch.channels.size and batch.channels.max() >= st.size:
            bad = batch.channels >= st.size
            self.drop("bad_channel", int(bad.sum()))
            batch.channels, batch.counts = batch.channels[~bad], batch.counts[~bad]
            batch.dt_ns = None if batch.dt_ns is None else batch.dt_ns[~bad]
        np.add.at(st.received, batch.channels, batch.counts.astype(np.int64))
        st.last_scale = batch.scale
        self.count(st, batch)
        reset = verdict == SEQ_RESTART
        for t_ns, part in split_by_time(batch):
            self.schedule(st, part, reset, t_ns, now_ns, tag)
            reset = False

    def count(self, st: InputState, batch: EventBatch) -> None:
        """A batch accepted for ``st`` (counted once, however many parts it has)."""
        st.n_batches += 1
        st.n_events += batch.n_events
        self.n_batches += 1
        self.n_events += batch.n_events

    def on_heartbeat(self, hb: Heartbeat, now_ns: int) -> bool:
        """A heartbeat arrived: liveness of its sensor's inputs (``ended``: their stream is
        closed; any other state opens it again, a ``failed`` one refreshes nothing) and the
        keyframe of its totals. False (counted ``bad_time``) when its time is implausible."""
        if not self.time_ok(hb, now_ns):
            return False
        for st in self.states.values():
            if st.cfg.sensor == hb.sensor:
                st.end_announced = hb.state == HEARTBEAT_ENDED
                if hb.state != "failed":
                    st.last_seen_ns = max(st.last_seen_ns, now_ns)
                    st.heard = True
        if hb.totals:
            self.resync(hb, now_ns)
        return True

    def check_seq(self, st: InputState, batch: EventBatch) -> int:
        """Acts on the sequence rule (:func:`spikefuse.transport.seq.seq_step`, which says
        why the core does more than count): ``SEQ_DROP`` (a duplicate), ``SEQ_RESTART`` (a
        seq going back: the driver restarted, its encoder starts from zero again, the input
        is reset) or ``SEQ_OK`` (in order, or after a gap, counted)."""
        step = seq_step(st.last_seq, batch.seq)
        last = st.last_seq
        st.last_seq = batch.seq
        if step == IN_ORDER:
            return SEQ_OK
        if step == GAP:
            st.n_gaps += 1
            return SEQ_OK
        if step == DUPLICATE:
            st.n_duplicate += 1
            self.drop("duplicate")
            return SEQ_DROP
        st.n_out_of_order += 1
        log.info(
            "input '%s': sensor %s restarted (seq %d after %d): input reset",
            st.name,
            batch.sensor,
            batch.seq,
            last,
        )
        st.restart()
        return SEQ_RESTART

    def resync(self, hb: Heartbeat, now_ns: int) -> None:
        """Keyframe: the driver's running totals per input against what arrived here. A
        difference (batches lost to a full queue, a reconnect, a restarted driver whose
        first batches were missed) is applied as one correcting batch at the heartbeat's
        time, through the same path as any batch; the integrated value is then exact."""
        for inp, totals in hb.totals.items():  # type: ignore[union-attr]
            st = self.by_stream.get((hb.sensor, inp))
            if st is None or st.last_scale is None:
                continue  # nothing received yet: the first batch carries the full value
            vals = totals.tolist()  # (a handful of channels: Python beats numpy here)
            out_of_range = vals and (max(vals) > MAX_TOTAL or min(vals) < -MAX_TOTAL)
            if totals.size > st.size or out_of_range:
                self.drop("bad_totals")
                continue
            st.n_keyframes += 1
            if totals.size == st.size and vals == st.received.tolist():
                continue  # the usual keyframe: nothing lost
            diff = -st.received.copy()
            diff[: totals.size] += totals
            nz = np.flatnonzero(diff)
            if not nz.size:
                continue
            if np.abs(diff[nz]).max() > INT32_MAX:
                self.drop("bad_totals")
                continue
            st.received += diff
            n_counts = int(np.abs(diff[nz]).sum())
            # the stream's first keyframe catches up with the batches that went out before
            # this subscription was complete: normal at start-up, counted apart. A later
            # difference is news (a loss, a restarted driver), and so is a first one after
            # the seq jumped: a driver restarted before its first keyframe got here.
            startup = st.n_keyframes == 1 and not (st.n_gaps or st.n_out_of_order)
            st.n_resyncs += 1
            st.n_resync_counts += n_counts
            if startup:
                st.n_startup_resyncs += 1
                st.n_startup_resync_counts += n_counts
            log.log(
                logging.DEBUG if startup else logging.INFO,
                "input '%s': sensor %s totals differ on %d channels (%d counts): corrected%s",
                st.name,
                hb.sensor,
                nz.size,
                n_counts,
                " (start-up)" if startup else "",
            )
            fix = EventBatch(
                hb.sensor,
                st.last_seq or 0,
                hb.t_ns,
                inp,
                st.last_scale,
                nz.astype(np.int32),
                diff[nz].astype(np.int32),
            )
            self.count(st, fix)
            self.schedule(st, fix, False, max(hb.t_ns, 0), now_ns, None)

    # ---------------------------------------------------------------- reorder window
    def schedule(
        self,
        st: InputState,
        batch: EventBatch,
        reset: bool,
        t_ns: int,
        now_ns: int,
        tag: object,
    ) -> None:
        """Apply at once, or hold until ``t_ns + window`` (then in (time, arrival) order), or
        in :attr:`hold` mode until :meth:`pop_held`."""
        if self.hold or (st.window_ns and t_ns + st.window_ns > now_ns):
            item = (t_ns, next(self._tiebreak), st.name, batch, reset, tag)
            heapq.heappush(self._reorder, item)
            return
        if st.window_ns:
            st.n_late += 1
        self.apply(st, batch, reset, t_ns, now_ns, tag)

    def next_release_ns(self) -> int | None:
        """When the earliest held batch is due, None when nothing is held (or in
        :attr:`hold` mode, where :meth:`pop_held` decides)."""
        if not self._reorder or self.hold:
            return None
        t, _, name, *_ = self._reorder[0]
        return t + self.states[name].window_ns

    def release(self, now_ns: int | None = None) -> None:
        """Apply every held batch due at ``now_ns`` (None: all of them), in time order
        (in :attr:`hold` mode only ``None`` releases)."""
        heap = self._reorder
        while heap:
            t, _, name, batch, reset, tag = heap[0]
            st = self.states[name]
            if now_ns is not None and (self.hold or t + st.window_ns > now_ns):
                break
            heapq.heappop(heap)
            self.apply(st, batch, reset, t, t if now_ns is None else now_ns, tag)

    def pop_held(self, t_ns: int) -> tuple[int, InputState, EventBatch, bool, object] | None:
        """The earliest held part at or before ``t_ns`` (ties in arrival order), removed from
        the hold: ``(t_ns, input, part, reset, tag)``; None when there is none."""
        heap = self._reorder
        if not heap or heap[0][0] > t_ns:
            return None
        t, _, name, batch, reset, tag = heapq.heappop(heap)
        return t, self.states[name], batch, reset, tag

    # ---------------------------------------------------------------- application
    def take(
        self, st: InputState, batch: EventBatch, reset: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The counts to push for a due batch: converted to the input's scale, after the
        counts that bring the input back to zero when its driver restarted. None when
        nothing is to be pushed (the converted value is out of range: ``out_of_range``)."""
        back = st.reset() if reset else None
        converted = st.convert(batch)
        if converted is None:
            self.drop("out_of_range")
            return back
        if back is None:
            return converted
        return np.concatenate([back[0], converted[0]]), np.concatenate([back[1], converted[1]])
