"""``spikefuse info``: what a log holds, per topic and per sequence stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikefuse.errors import ProtocolError
from spikefuse.protocol import EventBatch, decode, stream_of
from spikefuse.recording.mcapio import LogFile, open_log
from spikefuse.transport.seq import SeqTracker


@dataclass
class StreamInfo:
    """One sequence stream (``sensor/<sensor>/<input>``, ``motor/<actuator>``, ...)."""

    stream: str
    topic: str
    kind: str
    n_messages: int = 0
    n_events: int = 0
    n_seq_missing: int = 0
    n_seq_resets: int = 0
    rate_hz: float = float("nan")
    """1 / median interval of acquisition times (robust to missing samples)"""
    mean_rate_hz: float = float("nan")
    _t_ns: list[int] = field(default_factory=list, repr=False)


@dataclass
class LogInfo:
    path: str
    indexed: bool
    n_messages: int
    n_events: int
    n_undecodable: int
    duration_s: float
    topics: dict[str, int]
    streams: list[StreamInfo]
    metadata: dict[str, dict[str, str]]
    problem: str = ""
    truncated_bytes: int = 0
    undecodable: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "indexed": self.indexed,
            "n_messages": self.n_messages,
            "n_events": self.n_events,
            "n_undecodable": self.n_undecodable,
            "duration_s": self.duration_s,
            "topics": self.topics,
            "streams": [
                {
                    "stream": s.stream,
                    "topic": s.topic,
                    "kind": s.kind,
                    "n_messages": s.n_messages,
                    "n_events": s.n_events,
                    "rate_hz": _finite_or_none(s.rate_hz),
                    "mean_rate_hz": _finite_or_none(s.mean_rate_hz),
                    "n_seq_missing": s.n_seq_missing,
                    "n_seq_resets": s.n_seq_resets,
                }
                for s in self.streams
            ],
            "metadata": self.metadata,
            "problem": self.problem,
            "truncated_bytes": self.truncated_bytes,
        }

    def stream(self, name: str) -> StreamInfo:
        for s in self.streams:
            if s.stream == name:
                return s
        raise KeyError(f"{self.path}: no stream {name!r} (have {[s.stream for s in self.streams]})")


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _rates(t_ns: list[int]) -> tuple[float, float]:
    if len(t_ns) < 2:
        return float("nan"), float("nan")
    t = np.sort(np.asarray(t_ns, np.int64))
    d = np.diff(t)
    d = d[d > 0]
    median = 1e9 / float(np.median(d)) if d.size else float("nan")
    span = float(t[-1] - t[0])
    mean = (len(t) - 1) * 1e9 / span if span > 0 else float("nan")
    return median, mean


def summarize(log: LogFile | str | Path) -> LogInfo:
    if not isinstance(log, LogFile):
        log = open_log(log)
    streams: dict[str, StreamInfo] = {}
    topics: dict[str, int] = {}
    undecodable: dict[str, int] = {}
    n_events = 0
    seq = SeqTracker()
    for m in log.messages:
        topics[m.topic] = topics.get(m.topic, 0) + 1
        try:
            msg = decode(m.payload)
        except ProtocolError as exc:
            undecodable[exc.reason] = undecodable.get(exc.reason, 0) + 1
            continue
        key = stream_of(msg)
        s = streams.get(key)
        if s is None:
            s = streams[key] = StreamInfo(key, m.topic, type(msg).__name__)
        s.n_messages += 1
        if isinstance(msg, EventBatch):
            s.n_events += len(msg.channels)
            n_events += len(msg.channels)
        s._t_ns.append(msg.t_ns)
        seq.see(key, msg.seq)
    for key, s in streams.items():
        s.n_seq_missing = seq.gaps.get(key, 0)
        s.n_seq_resets = seq.resets.get(key, 0)
        s.rate_hz, s.mean_rate_hz = _rates(s._t_ns)
        s._t_ns = []
    times = [m.log_time_ns for m in log.messages]
    duration_s = (max(times) - min(times)) / 1e9 if times else 0.0
    return LogInfo(
        path=str(log.path),
        indexed=log.indexed,
        n_messages=len(log.messages),
        n_events=n_events,
        n_undecodable=sum(undecodable.values()),
        duration_s=duration_s,
        topics=dict(sorted(topics.items())),
        streams=sorted(streams.values(), key=lambda s: s.stream),
        metadata=log.metadata,
        problem=log.problem,
        truncated_bytes=log.truncated_bytes,
        undecodable=undecodable,
    )


def render(info: LogInfo) -> str:
    lines = [
        f"file:       {info.path}",
        f"indexed:    {'yes' if info.indexed else 'NO (unfinished file; spikefuse recover makes an indexed copy)'}",
    ]
    if info.problem:
        lines.append(f"problem:    {info.problem} ({info.truncated_bytes} bytes unreadable)")
    lines += [
        f"duration:   {info.duration_s:.3f} s",
        f"messages:   {info.n_messages} ({info.n_undecodable} undecodable)",
        f"events:     {info.n_events}",
        "",
        f"{'stream':<40} {'kind':<12} {'messages':>9} {'events':>10} {'rate_hz':>9} {'gaps':>6}",
    ]
    for s in info.streams:
        rate = f"{s.rate_hz:9.2f}" if np.isfinite(s.rate_hz) else f"{'-':>9}"
        lines.append(
            f"{s.stream:<40} {s.kind:<12} {s.n_messages:>9} {s.n_events:>10} {rate} {s.n_seq_missing:>6}"
        )
    return "\n".join(lines) + "\n"
