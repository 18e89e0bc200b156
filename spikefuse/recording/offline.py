"""Offline replay: a log's EventBatches through an :class:`~spikefuse.engine.Engine` on a
virtual clock (acquisition time), with no sockets, as fast as the machine allows.

Batches are applied with the semantics of a live ``spikefuse core`` whose reorder window
covers the transport delay: each batch in one push at the time of its last sample
(``t_ns + max(dt_ns)``), in that time's order (ties in file order, i.e. the recorder's
arrival order), counts converted to the graph input's scale with the core's arithmetic
(per-channel herding residual). A batch's ``input`` names the graph input (``map_input``
renames); unknown inputs and out-of-range channels are counted and skipped. Consecutive
batches with increasing times go through ``Engine.push_many`` (the same outputs as pushing
them one by one). Outputs become :class:`MotorCommand` messages
on ``motor/<output>`` (``values`` = the whole output vector after the change, ``cause_t_ns``
= the acquisition time of the input that caused it) and per-node spike counts
:class:`Status` messages on ``status/replay`` every ``status_period_s`` of log time and at
the end. Same inputs -> byte-identical output file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikefuse.encoding import round_half_away
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


class _Converter:
    """Counts of one graph input at its scale: the same arithmetic as the core's
    :meth:`spikefuse.core.fusion.InputState.convert` (float target with the herding residual
    per channel; batches already at the input's scale pass through and are added to
    ``sent`` lazily, folded in before the next re-quantised batch)."""

    def __init__(self, n: int, scale: float) -> None:
        self.scale = scale
        self.target = np.zeros(n, np.float64)
        self.sent = np.zeros(n, np.int64)
        self.synced = True
        self.passed: list[np.ndarray] = []  # (channels, counts) pairs not yet in sent

    def apply(self, batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        if batch.scale == self.scale:
            self.passed += (batch.channels, batch.counts)
            self.synced = False
            return batch.channels, batch.counts
        self._fold()
        if not self.synced:
            self.target[:] = self.sent
            self.synced = True
        ch = np.asarray(batch.channels, np.int64)
        np.add.at(self.target, ch, np.asarray(batch.counts, np.int64) * (self.scale / batch.scale))
        touched = np.unique(ch)
        n = round_half_away(self.target[touched] - self.sent[touched]).astype(np.int64)
        self.sent[touched] += n
        nz = n != 0
        return touched[nz].astype(np.int32), n[nz].astype(np.int32)

    def _fold(self) -> None:
        if self.passed:
            ch = np.concatenate(self.passed[0::2]).astype(np.int64)
            co = np.concatenate(self.passed[1::2]).astype(np.int64)
            self.sent += np.bincount(ch, weights=co, minlength=self.sent.size).astype(np.int64)
            self.passed.clear()


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
    """When a batch takes effect: its last sample (``t_ns + max(dt_ns)``), as in the core."""
    if batch.dt_ns is not None and batch.dt_ns.size:
        return batch.t_ns + int(batch.dt_ns.max())
    return batch.t_ns


def _decoded_batches(
    messages: list, res: OfflineResult
) -> list[tuple[int, int, EventBatch, object]]:
    items = []
    received: dict[tuple[str, str], tuple[np.ndarray, float]] = {}
    for i, m in enumerate(messages):
        try:
            msg = decode(m.payload)
        except ProtocolError:
            res.n_undecodable += 1
            continue
        if isinstance(msg, EventBatch):
            items.append((apply_time_ns(msg), i, msg, m))
            _count_received(received, msg)
        elif isinstance(msg, Heartbeat) and msg.totals:
            for fix in _resync_batches(received, msg):
                res.n_resyncs += 1
                items.append((fix.t_ns, i, fix, None))
    items.sort(key=lambda it: (it[0], it[1]))
    return items


def core_batches(log_file: LogFile) -> list[tuple[int, EventBatch]]:
    """The log's EventBatches as a core applies them: ``(apply_time_ns, batch)`` in
    application order, heartbeat resyncs included (what training reads as its inputs)."""
    items = _decoded_batches(log_file.select(["sensor/"]), OfflineResult())
    return [(t, batch) for t, _, batch, _ in items]


def _count_received(received: dict, batch: EventBatch) -> None:
    key = (batch.sensor, batch.input)
    tot = received.get(key, (np.zeros(0, np.int64), batch.scale))[0]
    if batch.channels.size:
        top = int(batch.channels.max()) + 1
        if top > tot.size:
            tot = np.concatenate([tot, np.zeros(top - tot.size, np.int64)])
        np.add.at(tot, batch.channels, batch.counts.astype(np.int64))
    received[key] = (tot, batch.scale)


def _resync_batches(received: dict, hb: Heartbeat) -> list[EventBatch]:
    """What the core does with a heartbeat's totals (:meth:`FusionCore._resync`), in log
    (arrival) order: the difference to the counts received so far, as a batch at the
    heartbeat's time."""
    out = []
    for inp, totals in hb.totals.items():  # type: ignore[union-attr]
        key = (hb.sensor, inp)
        if key not in received:
            continue
        tot, scale = received[key]
        n = max(tot.size, totals.size)
        diff = np.zeros(n, np.int64)
        diff[: totals.size] += totals
        diff[: tot.size] -= tot
        nz = np.flatnonzero(diff)
        if not nz.size or np.abs(diff[nz]).max() > np.iinfo(np.int32).max:
            continue
        fix = EventBatch(
            hb.sensor, 0, hb.t_ns, inp, scale, nz.astype(np.int32), diff[nz].astype(np.int32)
        )
        _count_received(received, fix)
        out.append(fix)
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
    map_input = dict(map_input or {})
    res = OfflineResult()
    items = _decoded_batches(log_file.select(topics or ["sensor/"], start_s, end_s), res)
    sink = None
    if out_path is not None:
        sink = LogWriter(
            out_path,
            metadata={"tool": "spikefuse replay --offline", "source": Path(log_file.path).name},
            flush_interval_s=None,
        )
    try:
        _run(
            eng,
            items,
            sink,
            res,
            map_input,
            status_period_s,
            copy_inputs,
            keep_motor,
            progress,
            batched,
        )
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
    """The replay loop's state: engine, converters, motor writer, status clock."""

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
        self.converters = {
            n: _Converter(self.size[n], float(m.unit_scale[m.node_off[m.index(n)]]))
            for n in eng.input_names
        }
        self.motor = _MotorWriter(eng, sink, keep_motor)
        self.status_period_ns = max(1, round(status_period_s * 1e9))
        self.next_status_ns = 0
        self.status_seq = 0
        self.last_cause = 0
        self.pending = _Pending()

    def start(self, t0: int) -> None:
        self.motor.emit(self.eng.start(t0), t0, t0)
        self.next_status_ns = t0 + self.status_period_ns
        self.last_cause = t0

    def batch(self, t_ns: int, batch: EventBatch, raw) -> None:
        if self.copy_inputs and raw is not None:
            self.pending.copies.append((len(self.pending.t), raw, t_ns))
        while t_ns >= self.next_status_ns:
            self.flush()
            t_s = self.next_status_ns
            self.motor.emit(self.eng.advance(t_s), t_s, self.last_cause)
            _status(self.eng, self.sink, self.res, self.status_seq, t_s)
            self.status_seq += 1
            self.next_status_ns += self.status_period_ns
        res = self.res
        name = self.map_input.get(batch.input, batch.input)
        conv = self.converters.get(name)
        if conv is None:
            res.unknown_inputs[name] = res.unknown_inputs.get(name, 0) + 1
            return
        if batch.channels.size and (
            int(batch.channels.max()) >= self.size[name] or int(batch.channels.min()) < 0
        ):
            res.bad_batches["channel_out_of_range"] = (
                res.bad_batches.get("channel_out_of_range", 0) + 1
            )
            return
        if batch.scale != conv.scale:
            res.n_rescaled_batches += 1
        ch, co = conv.apply(batch)
        res.n_batches += 1
        res.n_events_in += int(batch.channels.size)
        if self.pending.t and self.pending.t[-1] == t_ns:
            self.flush()  # equal times: keep one MotorCommand group per push
        self.pending.add(t_ns, name, ch, co)
        if not self.batched or self.pending.n_events >= self.MAX_PENDING_EVENTS:
            self.flush()

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
        self.flush()
        t = max(t_end, self.eng.now)
        self.motor.emit(self.eng.advance(t), t_end, self.last_cause)
        _status(self.eng, self.sink, self.res, self.status_seq, t)


def _run(
    eng: Engine,
    items: list,
    sink: LogWriter | None,
    res: OfflineResult,
    map_input: dict[str, str],
    status_period_s: float,
    copy_inputs: bool,
    keep_motor: bool,
    progress: bool | None,
    batched: bool = True,
) -> None:
    run = _Runner(eng, sink, res, map_input, status_period_s, keep_motor, batched)
    run.copy_inputs = sink is not None and copy_inputs
    t0 = items[0][0] if items else 0
    run.start(t0)
    with Progress(len(items), "replay", enabled=progress) as bar:
        for t_ns, _i, batch, raw in items:
            bar.update()
            run.batch(t_ns, batch, raw)
        t_end = items[-1][0] if items else t0
        run.finish(t_end)
    res.n_motor_commands = run.motor.n
    res.motor = run.motor.kept
    res.counters = eng.counters
    res.t_first_ns = t0 if items else None
    res.t_last_ns = t_end if items else None


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
