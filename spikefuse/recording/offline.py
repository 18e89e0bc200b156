"""Offline replay: a log's EventBatches through an :class:`~spikefuse.engine.Engine` on a
virtual clock (the recorded arrival times), with no sockets, as fast as the machine allows.

The input path is the live core's (:class:`spikefuse.core.inputs.InputSet`): every message
arrives at its recorded ``log_time`` (the recorder's receive time on CLOCK_MONOTONIC) and goes
through the same time check, sequence checks (a duplicate is dropped, a seq going back resets
the input, gaps are counted), channel check, keyframe resync from heartbeat totals and scale
conversion (per-channel herding residual) as in ``spikefuse core``. The reorder window is one
that covers every transport delay: each batch is applied part by part, one push per
distinct event time (``t_ns + dt_ns``, :func:`~spikefuse.core.inputs.split_by_time`), every
part in its time's order (ties in arrival order), which is what a live core with a window
larger than its transport delay does (``n_late == 0``) and what a ``clock: data`` core does
between its drivers' heartbeats. Each graph
input is fed by the first stream (sensor, input) seen for it (``map_input`` renames an
input); other streams and unknown inputs are counted and skipped. Consecutive batches with
increasing times go through ``Engine.push_many`` (the same outputs as pushing them one by
one). Outputs become :class:`MotorCommand` messages on ``motor/<output>`` (``values`` = the
whole output vector after the change, ``cause_t_ns`` = the acquisition time of the input
that caused it) and per-node spike counts :class:`Status` messages on ``status/replay``
every ``status_period_s`` of log time and at the end. Same inputs -> byte-identical output
file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikefuse.core.config import InputMap
from spikefuse.core.inputs import WINDOW_ALL, InputSet, InputState
from spikefuse.engine import Engine
from spikefuse.errors import ProtocolError
from spikefuse.graph import Graph
from spikefuse.protocol import (
    Encoder,
    EventBatch,
    Heartbeat,
    MotorCommand,
    Status,
    decode,
    encode,
    topic_of,
)
from spikefuse.recording.mcapio import LogFile, LogWriter, open_log
from spikefuse.recording.progress import Progress

log = logging.getLogger(__name__)

STATUS_SOURCE = "replay"


@dataclass
class OfflineResult:
    n_batches: int = 0
    n_events_in: int = 0
    n_pushes: int = 0
    n_motor_commands: int = 0
    n_status: int = 0
    n_undecodable: int = 0
    n_rescaled_batches: int = 0
    n_time_clamped: int = 0
    n_resyncs: int = 0
    unknown_inputs: dict[str, int] = field(default_factory=dict)
    bad_batches: dict[str, int] = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    motor: list[MotorCommand] = field(default_factory=list)
    t_first_ns: int | None = None
    t_last_ns: int | None = None

    @property
    def n_unknown(self) -> int:
        return sum(self.unknown_inputs.values())

    def summary(self) -> dict:
        return {
            "n_batches": self.n_batches,
            "n_events_in": self.n_events_in,
            "n_pushes": self.n_pushes,
            "n_motor_commands": self.n_motor_commands,
            "n_status": self.n_status,
            "n_undecodable": self.n_undecodable,
            "n_rescaled_batches": self.n_rescaled_batches,
            "n_time_clamped": self.n_time_clamped,
            "n_resyncs": self.n_resyncs,
            "unknown_inputs": self.unknown_inputs,
            "bad_batches": self.bad_batches,
            "spikes": self.counters.get("spikes", {}),
        }


class _MotorWriter:
    """Turns engine output events into MotorCommands (one per (time, output))."""

    def __init__(self, eng: Engine, sink: LogWriter | None, keep: bool) -> None:
        self.names = list(eng.output_names)
        self.values = [np.array(eng.output_value(n), np.float64) for n in self.names]
        self.seq = [0] * len(self.names)
        self.sink = sink
        self.keep = keep
        self.kept: list[MotorCommand] = []
        self.n = 0
        self.encoder = Encoder()
        self.topics = [f"motor/{n}" for n in self.names]

    def emit(self, ev: np.ndarray, t_push: np.ndarray | int, cause_before: int) -> None:
        """``t_push``: the time(s) of the push(es) that produced ``ev`` (ascending); an
        event's cause is the latest push at or before it, else ``cause_before``."""
        if ev.size == 0:
            return
        t = ev["t_ns"]
        out = ev["output"]
        # group boundaries where (t, output) changes (ev is time-ordered)
        cut = np.flatnonzero((t[1:] != t[:-1]) | (out[1:] != out[:-1])) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [ev.size]))
        pushes = np.atleast_1d(np.asarray(t_push, np.int64))
        k_push = np.searchsorted(pushes, t[starts], side="right") - 1
        causes = np.where(k_push >= 0, pushes[np.maximum(k_push, 0)], cause_before).tolist()
        chans = ev["channel"]
        vals = ev["value"]
        for a, b, cause in zip(starts.tolist(), ends.tolist(), causes, strict=True):
            k = int(out[a])
            v = self.values[k]
            v[chans[a:b]] = vals[a:b]
            t_ns = int(t[a])
            msg = MotorCommand(self.names[k], self.seq[k], t_ns, cause, v.copy())
            self.seq[k] += 1
            self.n += 1
            if self.sink is not None:
                self.sink.write(self.topics[k], self.encoder.encode(msg), t_ns, t_ns, msg.seq)
            if self.keep:
                self.kept.append(msg)


def apply_time_ns(batch: EventBatch) -> int:
    """When a batch starts to take effect: its first part (``t_ns``; ``dt_ns`` >= 0)."""
    return batch.t_ns


def _log_epoch_offset_ns(log_file: LogFile) -> int:
    """The recording host's CLOCK_REALTIME - CLOCK_MONOTONIC (the recorder stores it; 0 =
    unknown): the time check of batches from other hosts, as on the live core's host."""
    raw = log_file.metadata.get("spikefuse", {}).get("realtime_minus_monotonic_ns", "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def _arrivals(messages: list, res: OfflineResult):
    """``(index, decoded message, raw)`` of every decodable message, in file (arrival)
    order; the undecodable ones are counted."""
    for i, m in enumerate(messages):
        try:
            msg = decode(m.payload)
        except ProtocolError:
            res.n_undecodable += 1
            continue
        yield i, msg, m


def core_batches(
    log_file: LogFile, sizes: dict[str, int], drops: dict[str, int] | None = None
) -> list[tuple[int, EventBatch]]:
    """The log's EventBatches of the inputs ``sizes`` (name -> channels) as a core applies
    them: ``(t_ns, part)`` in application order (a part: a batch's events at one time),
    through the core's input path
    (duplicates dropped, heartbeat resyncs included, a restarted driver's input brought
    back to zero by a batch of the negated counts so far). What was refused is counted in
    ``drops`` (e.g. ``bad_channel``). What training reads as its inputs."""
    out: list[tuple[int, EventBatch]] = []
    totals: dict[str, np.ndarray] = {}

    def apply(st: InputState, batch: EventBatch, reset: bool, t_ns: int, _now, _tag) -> None:
        tot = totals.setdefault(st.name, np.zeros(st.size, np.int64))
        if reset and tot.any():
            nz = np.flatnonzero(tot)
            back = (-tot[nz]).astype(np.int32)
            out.append(
                (
                    t_ns,
                    EventBatch(
                        batch.sensor,
                        batch.seq,
                        t_ns,
                        st.name,
                        batch.scale,
                        nz.astype(np.int32),
                        back,
                    ),
                )
            )
            tot[:] = 0
        np.add.at(tot, batch.channels, batch.counts.astype(np.int64))
        out.append((t_ns, batch))

    inputs = InputSet({}, apply, {} if drops is None else drops, _log_epoch_offset_ns(log_file))
    res = OfflineResult()
    for _, msg, m in _arrivals(log_file.select(["sensor/"]), res):
        if isinstance(msg, EventBatch):
            if msg.input in sizes and msg.input not in inputs.states:
                cfg = InputMap(sensor=msg.sensor, input=msg.input)
                inputs.add(InputState(msg.input, cfg, sizes[msg.input], 1.0, 0, WINDOW_ALL))
            inputs.on_batch(msg, m.log_time_ns)
        elif isinstance(msg, Heartbeat) and msg.totals:
            inputs.on_heartbeat(msg, m.log_time_ns)
    inputs.release()
    return out


def replay_offline(
    source: str | Path | LogFile,
    graph: str | Path | Graph | Engine,
    out_path: str | Path | None = None,
    *,
    map_input: dict[str, str] | None = None,
    topics: list[str] | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    status_period_s: float = 1.0,
    copy_inputs: bool = True,
    keep_motor: bool = False,
    progress: bool | None = None,
    batched: bool = True,
) -> OfflineResult:
    """Replay ``source`` through ``graph``; write ``out_path`` (MCAP) if given.

    ``keep_motor`` also returns the MotorCommands in ``result.motor`` (for tests);
    ``batched=False`` pushes batch by batch instead of through ``Engine.push_many`` (the
    same outputs, byte for byte; slower)."""
    log_file = source if isinstance(source, LogFile) else open_log(source)
    eng = graph if isinstance(graph, Engine) else Engine(_load_graph(graph))
    res = OfflineResult()
    messages = log_file.select(topics or ["sensor/"], start_s, end_s)
    sink = None
    if out_path is not None:
        sink = LogWriter(
            out_path,
            metadata={"tool": "spikefuse replay --offline", "source": Path(log_file.path).name},
            flush_interval_s=None,
        )
    try:
        run = _Runner(eng, sink, res, dict(map_input or {}), status_period_s, keep_motor, batched)
        run.inputs.epoch_offset_ns = _log_epoch_offset_ns(log_file)
        run.copy_inputs = sink is not None and copy_inputs
        run.run(messages, progress)
    finally:
        if sink is not None:
            sink.close()
    return res


def _load_graph(graph: str | Path | Graph) -> Graph:
    return graph if isinstance(graph, Graph) else Graph.load(graph)


class _Pending:
    """Batches collected for one ``push_many`` call (strictly increasing times, so the
    output grouping per (time, output) is the same as pushing them one by one)."""

    def __init__(self) -> None:
        self.t: list[int] = []
        self.names: list[str] = []
        self.ch: list[np.ndarray] = []
        self.co: list[np.ndarray] = []
        self.copies: list[tuple[int, object, int]] = []  # (n pushes before, raw message, t)
        self.n_events = 0

    def add(self, t_ns: int, name: str, ch: np.ndarray, co: np.ndarray) -> None:
        self.t.append(t_ns)
        self.names.append(name)
        self.ch.append(ch)
        self.co.append(co)
        self.n_events += int(ch.size)

    def clear(self) -> None:
        self.__init__()


class _Runner:
    """The replay loop's state: the core's input path, engine, motor writer, status clock.
    Messages arrive at their recorded times (:meth:`arrive`); the input path hands what is
    due to :meth:`_apply` in time order (:meth:`run` releases everything at the end)."""

    MAX_PENDING_EVENTS = 1 << 18

    def __init__(self, eng, sink, res, map_input, status_period_s, keep_motor, batched) -> None:
        self.eng = eng
        self.sink = sink
        self.copy_inputs = False
        self.res = res
        self.map_input = map_input
        self.batched = batched
        m = eng.model
        self.size = {n: int(m.node_size[m.index(n)]) for n in eng.input_names}
        self.scale = {n: float(m.unit_scale[m.node_off[m.index(n)]]) for n in eng.input_names}
        self.drops: dict[str, int] = {}
        self.inputs = InputSet({}, self._apply, self.drops)
        self.motor = _MotorWriter(eng, sink, keep_motor)
        self.status_period_ns = max(1, round(status_period_s * 1e9))
        self.next_status_ns = 0
        self.status_seq = 0
        self.last_cause = 0
        self.t0: int | None = None
        self.t_end: int | None = None
        self.pending = _Pending()
        self.copies: list[tuple[int, int, object]] = []  # (apply time, arrival index, raw)
        self._next_copy = 0

    def run(self, messages: list, progress: bool | None) -> None:
        res = self.res
        with Progress(len(messages), "replay", enabled=progress) as bar:
            for i, msg, raw in _arrivals(messages, res):
                bar.update()
                self.arrive(i, msg, raw)
            self.copies.sort(key=lambda c: (c[0], c[1]))
            self.inputs.release()
            if self.t0 is None:
                self.start(0)
            self.finish(self.t0 if self.t_end is None else self.t_end)
        res.n_motor_commands = self.motor.n
        res.motor = self.motor.kept
        res.counters = self.eng.counters
        res.n_resyncs = sum(st.n_resyncs for st in self.inputs.states.values())
        res.bad_batches = dict(self.drops)
        res.t_first_ns = None if self.t_end is None else self.t0
        res.t_last_ns = self.t_end

    def arrive(self, i: int, msg, raw) -> None:
        """One recorded message at its arrival time (``log_time``)."""
        now = raw.log_time_ns
        if isinstance(msg, Heartbeat):
            if msg.totals:
                before = self.inputs.n_batches
                self.inputs.on_heartbeat(msg, now)
                self.res.n_batches += self.inputs.n_batches - before  # keyframe corrections
            return
        if not isinstance(msg, EventBatch):
            return
        if self.copy_inputs:
            self.copies.append((apply_time_ns(msg), i, raw))
        name = self.map_input.get(msg.input, msg.input)
        if name not in self.size:
            self.res.unknown_inputs[name] = self.res.unknown_inputs.get(name, 0) + 1
            return
        if name not in self.inputs.states:
            cfg = InputMap(sensor=msg.sensor, input=msg.input)
            st = InputState(name, cfg, self.size[name], self.scale[name], now, WINDOW_ALL)
            self.inputs.add(st)
        accepted = self.inputs.n_batches
        self.inputs.on_batch(msg, now, i)
        if self.inputs.n_batches > accepted:  # a batch (of one or more parts) scheduled
            self.res.n_batches += 1
            if msg.scale != self.scale[name]:
                self.res.n_rescaled_batches += 1

    def start(self, t0: int) -> None:
        self.t0 = t0
        self.motor.emit(self.eng.start(t0), t0, t0)
        self.next_status_ns = t0 + self.status_period_ns
        self.last_cause = t0

    def _apply(self, st, batch: EventBatch, reset: bool, t_ns: int, _now: int, tag) -> None:
        if self.t0 is None:
            self.start(t_ns)
        self.t_end = t_ns
        while t_ns >= self.next_status_ns:
            self.flush()
            t_s = self.next_status_ns
            self.motor.emit(self.eng.advance(t_s), t_s, self.last_cause)
            _status(self.eng, self.sink, self.res, self.status_seq, t_s)
            self.status_seq += 1
            self.next_status_ns += self.status_period_ns
        self._take_copies((t_ns, -1 if tag is None else tag))
        res = self.res
        got = self.inputs.take(st, batch, reset)
        res.n_events_in += int(batch.channels.size)
        if got is None:
            return
        ch, co = got
        if self.pending.t and self.pending.t[-1] == t_ns:
            self.flush()  # equal times: keep one MotorCommand group per push
        self.pending.add(t_ns, st.name, ch, co)
        if not self.batched or self.pending.n_events >= self.MAX_PENDING_EVENTS:
            self.flush()

    def _take_copies(self, upto: tuple[int, int] | None) -> None:
        """Copies of the input messages up to (apply time, arrival index) ``upto`` (None:
        all), written before the next push's outputs."""
        k = self._next_copy
        while k < len(self.copies) and (upto is None or self.copies[k][:2] <= upto):
            t, _, raw = self.copies[k]
            self.pending.copies.append((len(self.pending.t), raw, t))
            k += 1
        self._next_copy = k

    def flush(self) -> None:
        p = self.pending
        if not p.t:
            self._write_copies(p.copies)
            p.clear()
            return
        t = np.array(p.t, np.int64)
        ptr = np.zeros(t.size + 1, np.int64)
        np.cumsum([c.size for c in p.ch], out=ptr[1:])
        ch = np.concatenate(p.ch).astype(np.int32, copy=False)
        co = np.concatenate(p.co).astype(np.int32, copy=False)
        ev = self.eng.push_many(t, p.names, ptr, ch, co)
        self.res.n_pushes += t.size
        # write in the order of pushing one by one: input copy, then what its push caused
        ends = np.searchsorted(ev["t_ns"], t, side="right").tolist()
        copies = iter(p.copies)
        nxt = next(copies, None)
        a = 0
        for k, b in enumerate(ends):
            while nxt is not None and nxt[0] <= k:
                self._write_copies([nxt])
                nxt = next(copies, None)
            self.motor.emit(ev[a:b], int(t[k]), self.last_cause)
            self.last_cause = int(t[k])
            a = b
        self._write_copies([] if nxt is None else [nxt, *copies])
        p.clear()

    def _write_copies(self, copies: list) -> None:
        for _, raw, t_ns in copies:
            self.sink.write(raw.topic, raw.payload, t_ns, t_ns, raw.sequence)

    def finish(self, t_end: int) -> None:
        self._take_copies(None)
        self.flush()
        t = max(t_end, self.eng.now)
        self.motor.emit(self.eng.advance(t), t_end, self.last_cause)
        _status(self.eng, self.sink, self.res, self.status_seq, t)


def _status(eng: Engine, sink: LogWriter | None, res: OfflineResult, seq: int, t_ns: int) -> None:
    c = eng.counters
    metrics = {
        "spikes": {k: int(v) for k, v in c["spikes"].items()},
        "syn_ops": int(c["syn_ops"]),
        "events_in": int(c["events_in"]),
        "events_out": int(c["events_out"]),
        "n_crossings": int(c["n_crossings"]),
        "n_unknown_input_batches": res.n_unknown,
    }
    msg = Status(STATUS_SOURCE, seq, t_ns, metrics)
    res.n_status += 1
    if sink is not None:
        sink.write(topic_of(msg).decode(), encode(msg), t_ns, t_ns, seq)
