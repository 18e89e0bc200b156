"""The driver runner: everything a driver does not have to write.

A driver's acquisition loop is a generator ``source(cfg, ctx)`` yielding
:class:`~spikefuse.sdk.items.Sample` / ``Frame`` / ``Events``. It normally delegates the
timing to the :class:`DriverContext` it receives:

* ``ctx.poll({"gyro": read_gyro, ...})`` calls each reader at its group's ``rate_hz`` on
  monotonic deadlines, retrying failed reads (``SensorError``/``OSError``) with backoff;
* ``ctx.replay(items, speed=..., realtime=...)`` paces recorded items by their own
  timestamps (or as fast as possible) and anchors them on the monotonic clock.

The :class:`Runner` encodes (sigma-delta per group, DVS for frames), batches, numbers,
publishes, heartbeats, restarts a source that raised ``SensorError``/``OSError`` after a
backoff, and stops cleanly on SIGINT/SIGTERM. A driver that stops deliberately (its source
ended, ``duration_s``, a signal) closes its stream on the way out: every pending batch is
flushed, then one ``Heartbeat`` with state ``ended`` (the final totals) says so, and the
receivers mark its inputs ended instead of stale (:meth:`DriverContext.end_stream` does it
earlier, for a driver with work left after its last item). A driver that fails (an
exception out of its source) sends a ``failed`` heartbeat instead, and one killed by
SIGKILL sends nothing: its inputs go stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.errors import ConfigError, SensorError
from spikefuse.protocol import HEARTBEAT_ENDED, EventBatch, Heartbeat, Message, Status
from spikefuse.sdk._fast import pack_event_batch
from spikefuse.sdk.config import DriverConfig
from spikefuse.sdk.health import STATE_FAILED, STATE_OK, Health
from spikefuse.sdk.items import Events, Frame, Item, Sample
from spikefuse.sdk.streams import CompiledSigmaDelta, GroupStream
from spikefuse.sdk.timing import NS_PER_S, Pacer, StopSignal, period_ns_of

log = logging.getLogger(__name__)

Reader = Callable[[int], ArrayLike]
"""A polled read: gets the sample time (monotonic ns), returns the group's values."""


class Sender(Protocol):
    def send(self, msg: Message) -> bool: ...


class DriverContext:
    """What a driver's source gets besides its config: pacing helpers and the stop state."""

    def __init__(self, runner: Runner):
        self._runner = runner
        self.cfg = runner.cfg
        self.start_ns = runner.start_ns
        self.n_pacer_skips: dict[str, int] = {}

    # ------------------------------------------------------------------ basics
    @property
    def stopping(self) -> bool:
        return self._runner.stop.requested

    @staticmethod
    def now_ns() -> int:
        return time.monotonic_ns()

    def past_duration(self, t_ns: int) -> bool:
        """True once ``t_ns`` is ``duration_s`` or more after the start (if configured)."""
        d = self.cfg.duration_s
        return d is not None and t_ns - self.start_ns >= round(d * NS_PER_S)

    def wait_until(self, deadline_ns: int) -> bool:
        """Sleep until the monotonic ``deadline_ns`` while servicing heartbeats and batch
        flushes; False (at once) if a stop is requested."""
        return self._runner.wait_until(deadline_ns)

    def service(self) -> None:
        """Send due heartbeats and batches (call it in a loop that never waits)."""
        self._runner.service(time.monotonic_ns())

    def publish(self, msg: Message) -> None:
        """Send a message of the driver's own on its publisher (e.g. a simulator's ground
        truth as a ``Status``, or a teacher's ``MotorCommand``); drops are counted."""
        self._runner.send(msg)

    def end_stream(self, detail: str = "") -> None:
        """The driver's data is complete: flush every pending batch and announce the end
        (one ``ended`` heartbeat with the final totals, and the driver's status); no
        heartbeat follows. The runner does this on the way out anyway; a driver calls it
        when it has more to do after its last item (the simulator draws its report), so
        the receivers see the end at once instead of a silence. Yielding another item
        opens the stream again (heartbeats resume)."""
        self._runner.end_stream(detail)

    def heartbeat(self, t_ns: int) -> None:
        """Flush every pending batch, then send a heartbeat (with the running totals)
        stamped ``t_ns``: a driver on a data clock (a lock-stepped simulator) marks
        "everything up to ``t_ns`` is sent" with it. (The status goes out on the periodic
        heartbeats only.)"""
        self._runner.flush_all()
        self._runner._heartbeat(t_ns, with_status=False)

    def stamp_heartbeats(self, clock: Callable[[], int]) -> None:
        """Put the driver on a data clock: the periodic heartbeats are stamped with
        ``clock()`` instead of the monotonic time and flush every pending batch first (a
        heartbeat then says "everything up to here is sent", as :meth:`heartbeat` does), and
        batches flush on data time only (``max_batch_latency_ms`` of data time, a full
        batch, a heartbeat, the stop), never on a wall-clock deadline, so what is batched
        together follows from the data alone (a lock-stepped simulator)."""
        self._runner.heartbeat_clock = clock

    def sample_encoder(self, group: str, n_channels: int) -> SigmaDeltaEncoder:
        """The sigma-delta encoder the runner uses for ``group``'s samples (the group's
        scale, auto-zero and hysteresis), for a driver that encodes its samples itself and
        yields the counts as :class:`Events` (e.g. a lock-stepped simulator collecting a
        sync period's samples into one item): the counts, totals and counters are the
        ones yielding each :class:`Sample` would give."""
        stream = self._runner.streams.get(group)
        if stream is None:
            raise ConfigError(
                f"the driver encodes group '{group}' that its config does not enable "
                f"(groups: {sorted(self._runner.streams)})"
            )
        enc = self._runner.sample_encoder(stream, n_channels)
        if enc is None:
            raise ConfigError(
                f"group '{group}' already encodes {_width(stream.encoder)} values, not {n_channels}"
            )
        return enc

    def bad_reading(self, group: str, detail: str) -> None:
        """Count (and log, rate-limited) a reading the driver had to drop, e.g. a corrupt
        image file: it shows in ``Status.metrics.groups.<group>.n_bad_items``."""
        self._runner.count_bad(group, detail)

    def ticks(self, group: str, *, realtime: bool = True) -> Iterator[int]:
        """Deadlines ``start + k/rate_hz`` of ``group`` (waiting for each when ``realtime``,
        else at once); ends at a stop request or ``duration_s``. Late ticks are skipped and
        counted. For sources that cannot fail (synthetic); readers use :meth:`poll`."""
        pacer = self._pacers([group]).get(group)
        while pacer is not None:
            deadline_ns = pacer.deadline_ns
            if self.past_duration(deadline_ns):
                return
            if realtime:
                if not self.wait_until(deadline_ns):
                    return
            elif self.stopping:
                return
            else:
                self.service()
            yield deadline_ns
            pacer.advance(time.monotonic_ns() if realtime else None)
            self.n_pacer_skips[group] = pacer.n_skipped

    # ------------------------------------------------------------------ polling
    def poll(self, readers: Mapping[str, Reader], *, realtime: bool = True) -> Iterator[Sample]:
        """Call ``readers[group](t_ns)`` at each enabled group's ``rate_hz``.

        Deadlines are ``start + k/rate_hz`` on the monotonic clock (missed ticks are skipped
        and counted). A reader raising ``SensorError``/``OSError`` is retried after the
        configured backoff, with the heartbeat degraded meanwhile. With ``realtime=False``
        no time passes: samples are stamped with their deadlines (deterministic)."""
        pacers = self._pacers(readers)
        health = self._runner.health
        while pacers:
            group, pacer = min(pacers.items(), key=lambda kv: kv[1].deadline_ns)
            deadline_ns = pacer.deadline_ns
            if self.past_duration(deadline_ns):
                return
            if realtime:
                if not self.wait_until(deadline_ns):
                    return
                t_ns = time.monotonic_ns()
            else:
                if self.stopping:
                    return
                self.service()
                t_ns = deadline_ns
            deferred = pacer.deferred
            try:
                values = readers[group](t_ns)
            except (SensorError, OSError) as exc:
                backoff_ns = round(health.failure(group, exc) * NS_PER_S)
                pacer.defer((time.monotonic_ns() if realtime else t_ns) + backoff_ns)
                continue
            health.success(group)
            yield Sample(group, t_ns, np.asarray(values, dtype=np.float64))
            if deferred:
                pacer.resync(t_ns)
            pacer.advance(time.monotonic_ns() if realtime else None)
            self.n_pacer_skips[group] = pacer.n_skipped

    def _pacers(self, groups: Iterable[str]) -> dict[str, Pacer]:
        pacers = {}
        for group in groups:
            gcfg = self.cfg.groups.get(group)
            if gcfg is None:
                raise ConfigError(
                    f"the driver reads group '{group}' that its config does not define "
                    f"(groups: {sorted(self.cfg.groups)})"
                )
            if not gcfg.enabled:
                continue
            if gcfg.rate_hz is None:
                raise ConfigError(f"group '{group}' is polled and needs rate_hz", "groups")
            pacers[group] = Pacer(period_ns_of(gcfg.rate_hz), self.start_ns)
        return pacers

    # ------------------------------------------------------------------ replay
    def replay(
        self, items: Iterable[Item], *, speed: float = 1.0, realtime: bool = True
    ) -> Iterator[Item]:
        """Yield recorded items paced by their own timestamps: item ``i`` is released at
        ``start + (t_i - t_0)/speed`` (or at once with ``realtime=False``) and stamped
        ``start + (t_i - t_0)``, so intervals and jitter of the recording are kept exactly.
        Items must come in time order (a step back is released at once, stamp kept)."""
        if not speed > 0:
            raise ConfigError(f"replay speed must be > 0, found {speed}")
        anchor_ns = self.start_ns
        t0_ns: int | None = None
        for item in items:
            if t0_ns is None:
                t0_ns = int(item.t_ns)
            off_ns = int(item.t_ns) - t0_ns
            if self.past_duration(anchor_ns + off_ns):
                return
            if realtime:
                if not self.wait_until(anchor_ns + round(off_ns / speed)):
                    return
            else:
                if self.stopping:
                    return
                self.service()
            yield dataclasses.replace(item, t_ns=anchor_ns + off_ns)


class Runner:
    """Runs one driver source until it ends or a stop is requested."""

    def __init__(
        self,
        cfg: DriverConfig,
        source: Callable[[DriverConfig, DriverContext], Iterable[Item]],
        sender: Sender,
        stop: StopSignal,
    ):
        self.cfg = cfg
        self.source = source
        self.sender = sender
        self.stop = stop
        self.health = Health(cfg.retry)
        self.start_ns = time.monotonic_ns()
        self.epoch_offset_ns = time.time_ns() - time.monotonic_ns()
        latency_ns = round(cfg.max_batch_latency_ms * 1e6)
        self._topic = f"sensor/{cfg.name}".encode()
        self._send_payload = getattr(sender, "send_payload", None)
        """a sender that takes encoded frames (a Publisher) gets batches packed by the
        compiled writer; any other gets the EventBatch"""
        packed = None if self._send_payload is None else self._send_packed
        self.streams = {
            g: GroupStream(
                cfg.name,
                g,
                cfg.input_of(g),
                cfg.groups[g].scale,
                latency_ns,
                cfg.max_batch_events,
                self.epoch_offset_ns,
                packed,
            )
            for g in cfg.enabled_groups()
        }
        self.ctx = DriverContext(self)
        self.hb_period_ns = round(cfg.heartbeat_period_s * NS_PER_S)
        self.next_hb_ns = self.start_ns
        self.hb_seq = 0
        self.status_seq = 0
        self.n_send_dropped = 0
        self.n_source_restarts = 0
        self._hb_state: str | None = None
        self.ended = False
        """The stream was closed (the ``ended`` heartbeat sent): no heartbeats until an
        item opens it again."""
        self.heartbeat_clock: Callable[[], int] | None = None
        self._last_bad_log_s = -1e18

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        """Run until the source ends or a stop is requested; returns the exit code (0).
        On the way out the stream is closed (:meth:`end_stream`), or, when the source
        raised, a ``failed`` heartbeat goes out and the exception propagates."""
        ended = False
        try:
            while not self.stop.requested:
                if self._run_source_once():
                    break
            ended = True
        finally:
            self._finish(ended)
        return 0

    def _run_source_once(self) -> bool:
        """Iterate the source; True when it ended (or stop/duration), False to restart it
        after a read error and its backoff."""
        try:
            with contextlib.closing(iter(self.source(self.cfg, self.ctx))) as it:  # type: ignore[type-var]
                for item in it:
                    self.health.success("source")
                    self.handle(item)
                    if self.stop.requested or self.ctx.past_duration(item.t_ns):
                        return True
            return True
        except (SensorError, OSError) as exc:
            self.n_source_restarts += 1
            backoff_s = self.health.failure("source", exc)
            self.service(time.monotonic_ns())
            return not self.wait_until(time.monotonic_ns() + round(backoff_s * NS_PER_S))

    def _finish(self, ended: bool) -> None:
        detail = "stopped"
        if self.stop.signum is not None:
            detail = f"stopped by signal {self.stop.signum}"
        if ended:
            if not self.ended:
                self.end_stream(detail)
            return
        self.flush_all()
        self._heartbeat(self._hb_time(), extra="the driver failed", state=STATE_FAILED)

    def end_stream(self, detail: str = "") -> None:
        """Flush, then announce the end of the stream (see :meth:`DriverContext.end_stream`)."""
        self.flush_all()
        self._heartbeat(self._hb_time(), extra=detail, state=HEARTBEAT_ENDED)
        self.ended = True

    def _hb_time(self) -> int:
        return time.monotonic_ns() if self.heartbeat_clock is None else self.heartbeat_clock()

    # ------------------------------------------------------------------ items
    def handle(self, item: Item) -> None:
        stream = self.streams.get(item.group)
        if stream is None:
            if item.group in self.cfg.groups:
                return  # a disabled group
            raise ConfigError(
                f"the driver yielded group '{item.group}' that its config does not define "
                f"(groups: {sorted(self.cfg.groups)})"
            )
        now_ns = time.monotonic_ns()
        stream.n_items += 1
        self.ended = False  # an item after the end: the stream is open again
        try:
            if isinstance(item, Sample):
                self._handle_sample(stream, item, now_ns)
            elif isinstance(item, Frame):
                self._handle_frame(stream, item, now_ns)
            elif isinstance(item, Events):
                self._handle_events(stream, item, now_ns)
            else:
                raise ConfigError(f"a driver source yielded {type(item).__name__}, not an Item")
        except _BadItem as exc:
            self.count_bad(item.group, str(exc))
        self.service(now_ns)

    def count_bad(self, group: str, detail: str) -> None:
        stream = self.streams.get(group)
        if stream is not None:
            stream.n_bad_items += 1
        self._log_bad(f"{self.cfg.name}/{group}: {detail}")

    def _handle_sample(self, stream: GroupStream, item: Sample, now_ns: int) -> None:
        values = item.values
        if values.ndim != 1 or values.size == 0:
            raise _BadItem(f"sample values have shape {values.shape}, expected (n,)")
        enc = self.sample_encoder(stream, values.size)
        if enc is None:
            raise _BadItem(
                f"sample has {values.size} values, the group had {_width(stream.encoder)}"
            )
        ch, cnt = enc.encode(values)
        stream.add(item.t_ns, ch, cnt, None, now_ns, self._send_batch)

    def sample_encoder(self, stream: GroupStream, n_channels: int) -> SigmaDeltaEncoder | None:
        """The group's sigma-delta encoder (made on first use from the group's settings);
        None when the group already encodes something else (frames, another width)."""
        if stream.encoder is None:
            gc = self.cfg.groups[stream.group]
            stream.encoder = CompiledSigmaDelta(
                n_channels,
                stream.scale,
                gc.zero_rest_samples,
                gc.zero_tau_samples,
                gc.hysteresis,
                gc.smooth_samples,
                gc.quiet_samples,
                gc.quiet_hysteresis,
                gc.quiet_smooth_samples,
                gc.quiet_needs_zero,
            )
        enc = stream.encoder
        if not isinstance(enc, SigmaDeltaEncoder) or enc.n_channels != n_channels:
            return None
        return enc

    def _handle_frame(self, stream: GroupStream, item: Frame, now_ns: int) -> None:
        if stream.encoder is None:
            stream.encoder = self.cfg.frame_encoder(stream.group)
        enc = stream.encoder
        if isinstance(enc, SigmaDeltaEncoder):
            raise _BadItem("a frame in a group of samples")
        try:
            ch, cnt, dt = enc.encode(item.t_ns, item.image, item.interval_ns)
        except ValueError as exc:
            raise _BadItem(f"bad frame: {exc}") from None
        stream.add(item.t_ns - item.interval_ns, ch, cnt, dt, now_ns, self._send_batch)

    def _handle_events(self, stream: GroupStream, item: Events, now_ns: int) -> None:
        ch = np.asarray(item.channels)
        cnt = np.asarray(item.counts)
        dt = None if item.dt_ns is None else np.asarray(item.dt_ns, dtype=np.int64)
        if ch.shape != cnt.shape or ch.ndim != 1 or (dt is not None and dt.shape != ch.shape):
            raise _BadItem(f"events of mismatched shapes {ch.shape}, {cnt.shape}")
        if ch.size and (ch.min() < 0 or (dt is not None and dt.min() < 0)):
            raise _BadItem("negative channel or dt_ns in events")
        if type(item.n_values) is not int or item.n_values < 0:
            raise _BadItem(f"events with n_values {item.n_values!r}, expected an int >= 0")
        if item.n_values:
            stream.values_per_item = item.n_values
        stream.add(
            item.t_ns, ch.astype(np.int32), cnt.astype(np.int32), dt, now_ns, self._send_batch
        )

    def _log_bad(self, text: str) -> None:
        now_s = time.monotonic()
        if now_s - self._last_bad_log_s >= 5.0:
            self._last_bad_log_s = now_s
            log.warning("skipped a bad reading: %s", text)

    # ------------------------------------------------------------------ timing
    def next_service_ns(self) -> int:
        t = self.next_hb_ns
        if self.heartbeat_clock is not None:  # a data clock: no wall-clock batch deadlines
            return t
        for s in self.streams.values():
            d = s.flush_deadline_ns()
            if d is not None and d < t:
                t = d
        return t

    def service(self, now_ns: int) -> None:
        data_clock = self.heartbeat_clock
        for s in self.streams.values() if data_clock is None else ():
            d = s.flush_deadline_ns()
            if d is not None and now_ns >= d:
                s.flush(self._send_batch)
        if self.ended:
            return  # a closed stream: no heartbeat says it is alive
        if now_ns >= self.next_hb_ns or self.health.state != self._hb_state:
            if data_clock is None:
                self._heartbeat(now_ns)
            else:  # everything up to the heartbeat's data time goes out before it
                self.flush_all()
                self._heartbeat(data_clock())
            self.next_hb_ns += self.hb_period_ns
            if self.next_hb_ns <= now_ns:  # late (a long blocking read): back on the grid
                behind = (now_ns - self.next_hb_ns) // self.hb_period_ns + 1
                self.next_hb_ns += behind * self.hb_period_ns

    def wait_until(self, deadline_ns: int) -> bool:
        while True:
            now_ns = time.monotonic_ns()
            self.service(now_ns)
            if self.stop.requested:
                return False
            if now_ns >= deadline_ns:
                return True
            wake_ns = min(deadline_ns, self.next_service_ns())
            self.stop.wait(max(0, wake_ns - now_ns) / NS_PER_S)

    # ------------------------------------------------------------------ output
    def flush_all(self) -> None:
        for s in self.streams.values():
            s.flush(self._send_batch)

    def send(self, msg: Message) -> None:
        self._send(msg)

    def _send(self, msg: Message) -> None:
        if not self.sender.send(msg):
            self.n_send_dropped += 1

    def _send_batch(self, batch: EventBatch) -> None:
        """A batch of the driver's streams: packed by the compiled writer (the same bytes as
        ``protocol.encode``) when the sender takes payloads and the batch is plain."""
        payload = None if self._send_payload is None else pack_event_batch(batch)
        if payload is None:
            self._send(batch)  # the reference encoder (which also names any bad field)
        else:
            self._send_packed(payload)

    def _send_packed(self, payload: bytes) -> None:
        """A batch's payload (packed by the compiled writer) to a sender that takes them."""
        if not self._send_payload(self._topic, payload):  # type: ignore[misc]
            self.n_send_dropped += 1

    def _heartbeat(
        self, now_ns: int, extra: str = "", with_status: bool = True, state: str | None = None
    ) -> None:
        """A heartbeat of the driver's health (or ``state``: ended, failed) with the
        running totals, and (``with_status``) the driver's status."""
        health = self.health.state
        self._hb_state = health
        state = state or health
        detail = self.health.detail if health != STATE_OK else ""
        if extra:
            detail = f"{detail}; {extra}" if detail else extra
        self._send(
            Heartbeat(self.cfg.name, self.hb_seq, now_ns, state, detail[:4000], self._totals())
        )
        self.hb_seq += 1
        if with_status:
            self._send(Status(self.cfg.name, self.status_seq, now_ns, self.metrics()))
            self.status_seq += 1
        poll = getattr(self.sender, "poll_subscriptions", None)
        if poll is not None:
            poll()  # drain (un)subscription notices of the XPUB socket

    def _totals(self) -> dict[str, np.ndarray] | None:
        """Keyframes: per input, the sum of every count sent so far (see Heartbeat.totals)."""
        out: dict[str, np.ndarray] = {}
        for s in self.streams.values():
            t = s.totals
            if t is not None and t.size:
                out[s.input] = t.copy() if s.input not in out else None
        kept = {k: v for k, v in out.items() if v is not None}  # an input fed by two groups: none
        return kept or None

    def metrics(self) -> dict[str, object]:
        return {
            "state": self.health.state,
            "n_read_errors": self.health.n_read_errors,
            "n_recoveries": self.health.n_recoveries,
            "n_source_restarts": self.n_source_restarts,
            "n_send_dropped": self.n_send_dropped,
            "n_pacer_skips": dict(self.ctx.n_pacer_skips),
            "groups": {g: s.metrics() for g, s in self.streams.items()},
        }


class _BadItem(ValueError):
    """A reading that cannot be encoded: skipped, counted and logged (rate-limited)."""


def _width(enc: object) -> str:
    return str(getattr(enc, "n_channels", "frames"))


__all__ = ["DriverContext", "Reader", "Runner", "Sender"]
