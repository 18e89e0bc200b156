"""Offline replay: a log's EventBatches through an :class:`~spikefuse.engine.Engine` on a
virtual clock (acquisition time), with no sockets, as fast as the machine allows.

Batches are applied in acquisition-time order (``t_ns``, ties in file order); a batch
with per-event offsets ``dt_ns`` is applied as one push per distinct offset. A batch's
``input`` names the graph input (``map_input`` renames); unknown inputs are counted and
skipped. If a batch's scale differs from the input node's scale its counts are
re-quantised exactly like a sigma-delta encoder would (per stream, with the residual
carried), so the graph sees the same signal. Outputs become :class:`MotorCommand` messages
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
from spikefuse.protocol import Encoder, EventBatch, MotorCommand, Status, decode, encode, topic_of
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
            "unknown_inputs": self.unknown_inputs,
            "bad_batches": self.bad_batches,
            "spikes": self.counters.get("spikes", {}),
        }


class _Rescaler:
    """Per-stream re-quantisation of counts from a batch scale to the input's scale."""

    def __init__(self, n: int, k_in: float, k_out: float) -> None:
        self.ratio = k_out / k_in
        self.total = np.zeros(n, np.int64)
        self.sent = np.zeros(n, np.int64)

    def apply(self, channels: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ch = channels.astype(np.int64)
        np.add.at(self.total, ch, counts.astype(np.int64))
        touched = np.unique(ch)
        target = round_half_away(self.total[touched] * self.ratio).astype(np.int64)
        n = target - self.sent[touched]
        self.sent[touched] = target
        keep = n != 0
        return touched[keep].astype(np.int32), n[keep].astype(np.int32)


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

    def emit(self, ev: np.ndarray, t_push: int, cause_before: int) -> None:
        if ev.size == 0:
            return
        t = ev["t_ns"]
        out = ev["output"]
        # group boundaries where (t, output) changes (ev is time-ordered)
        cut = np.flatnonzero((t[1:] != t[:-1]) | (out[1:] != out[:-1])) + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [ev.size]))
        chans = ev["channel"]
        vals = ev["value"]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            k = int(out[a])
            v = self.values[k]
            v[chans[a:b]] = vals[a:b]
            t_ns = int(t[a])
            cause = t_push if t_ns >= t_push else cause_before
            msg = MotorCommand(self.names[k], self.seq[k], t_ns, cause, v.copy())
            self.seq[k] += 1
            self.n += 1
            if self.sink is not None:
                self.sink.write(self.topics[k], self.encoder.encode(msg), t_ns, t_ns, msg.seq)
            if self.keep:
                self.kept.append(msg)


def _decoded_batches(
    messages: list, res: OfflineResult
) -> list[tuple[int, int, EventBatch, object]]:
    items = []
    for i, m in enumerate(messages):
        try:
            msg = decode(m.payload)
        except ProtocolError:
            res.n_undecodable += 1
            continue
        if isinstance(msg, EventBatch):
            items.append((msg.t_ns, i, msg, m))
    items.sort(key=lambda it: (it[0], it[1]))
    return items


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
) -> OfflineResult:
    """Replay ``source`` through ``graph``; write ``out_path`` (MCAP) if given.

    ``keep_motor`` also returns the MotorCommands in ``result.motor`` (for tests)."""
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
        _run(eng, items, sink, res, map_input, status_period_s, copy_inputs, keep_motor, progress)
    finally:
        if sink is not None:
            sink.close()
    return res


def _load_graph(graph: str | Path | Graph) -> Graph:
    return graph if isinstance(graph, Graph) else Graph.load(graph)


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
) -> None:
    inputs = set(eng.input_names)
    m = eng.model
    in_scale = {n: float(m.unit_scale[m.node_off[m.index(n)]]) for n in inputs}
    rescalers: dict[tuple[str, str, float], _Rescaler] = {}
    t0 = items[0][0] if items else 0
    motor = _MotorWriter(eng, sink, keep_motor)
    motor.emit(eng.start(t0), t0, t0)
    status_period_ns = max(1, round(status_period_s * 1e9))
    next_status_ns = t0 + status_period_ns
    status_seq = 0
    last_cause = t0
    with Progress(len(items), "replay", enabled=progress) as bar:
        for t_ns, _i, batch, raw in items:
            bar.update()
            if sink is not None and copy_inputs:
                sink.write(raw.topic, raw.payload, t_ns, t_ns, raw.sequence)
            while t_ns >= next_status_ns:
                motor.emit(eng.advance(next_status_ns), next_status_ns, last_cause)
                _status(eng, sink, res, status_seq, next_status_ns)
                status_seq += 1
                next_status_ns += status_period_ns
            name = map_input.get(batch.input, batch.input)
            if name not in inputs:
                res.unknown_inputs[name] = res.unknown_inputs.get(name, 0) + 1
                continue
            channels, counts = batch.channels, batch.counts
            if batch.scale != in_scale[name]:
                key = (batch.sensor, batch.input, batch.scale)
                rs = rescalers.get(key)
                if rs is None:
                    n = int(m.node_size[m.index(name)])
                    rs = rescalers[key] = _Rescaler(n, batch.scale, in_scale[name])
                res.n_rescaled_batches += 1
                if channels.size and int(channels.max()) >= rs.total.size:
                    res.bad_batches["channel_out_of_range"] = (
                        res.bad_batches.get("channel_out_of_range", 0) + 1
                    )
                    continue
                channels, counts = rs.apply(channels, counts)
            res.n_batches += 1
            res.n_events_in += int(batch.channels.size)
            last_cause = _push(
                eng, motor, res, name, t_ns, channels, counts, batch.dt_ns, last_cause
            )
        t_end = items[-1][0] if items else t0
        motor.emit(eng.advance(max(t_end, eng.now)), t_end, last_cause)
        _status(eng, sink, res, status_seq, max(t_end, eng.now))
    res.n_motor_commands = motor.n
    res.motor = motor.kept
    res.counters = eng.counters
    res.t_first_ns = t0 if items else None
    res.t_last_ns = t_end if items else None


def _push(eng, motor, res, name, t_ns, channels, counts, dt_ns, last_cause) -> int:
    if dt_ns is None or channels.size == 0 or (dt_ns.size and not dt_ns.any()):
        groups = [(t_ns, channels, counts)]
    else:
        order = np.argsort(dt_ns, kind="stable")
        d = dt_ns[order]
        cut = np.flatnonzero(d[1:] != d[:-1]) + 1
        groups = [
            (t_ns + int(d[a]), channels[order[a:b]], counts[order[a:b]])
            for a, b in zip(
                np.concatenate(([0], cut)).tolist(),
                np.concatenate((cut, [d.size])).tolist(),
                strict=True,
            )
        ]
    for t, ch, co in groups:
        if t < eng.now:
            res.n_time_clamped += 1
            t = eng.now
        try:
            ev = eng.push(t, name, ch, co)
        except ValueError as exc:
            reason = "channel_out_of_range" if "channel" in str(exc) else "rejected_by_engine"
            res.bad_batches[reason] = res.bad_batches.get(reason, 0) + 1
            log.debug("batch of %s at %d skipped: %s", name, t, exc)
            continue
        res.n_pushes += 1
        motor.emit(ev, t, last_cause)
        last_cause = t
    return last_cause


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
