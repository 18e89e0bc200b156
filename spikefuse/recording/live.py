"""Live replay: republish a log onto the bus with its original timing.

Messages go out in log-time order at monotonic deadlines ``start + (log_time - t0) / rate``
computed from the start for every message (no accumulated sleep error, so no drift over
long files). By default every message's acquisition time is re-stamped onto the replaying
host's CLOCK_MONOTONIC with the same mapping (``t_new = start + (t - t0) / rate``), so a
live core sees fresh, correctly spaced data it cannot tell from sensors; ``restamp=False``
sends the stored payloads byte for byte. ``fast`` sends as fast as subscribers take them
(back-pressure, never drops). ``loop`` repeats, continuing both the clock and the
sequence numbers
(per sequence stream, loop ``i`` adds ``i`` times the stream's seq span in the window, so
the numbers continue without gaps); the next loop starts one typical message interval after
the last message.

A replay ends its sensors' streams as a driver does: when it stops (the end of the file or
window, or a signal), every sensor it replayed whose last replayed message is not already an
end announcement gets one (a ``Heartbeat`` with state ``ended``, the next number of the
sensor's heartbeat stream, stamped at its last message's time), so a live core marks those
inputs ended instead of stale. Recorded end announcements are replayed as they were
recorded, in every loop too (a core then sees the sensor end and come back at each loop).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikefuse.errors import ConfigError, LogFileError, ProtocolError
from spikefuse.protocol import (
    HEARTBEAT_ENDED,
    Encoder,
    Heartbeat,
    MotorCommand,
    decode,
    encode,
    stream_of,
)
from spikefuse.recording.mcapio import LogFile, LogMessage, open_log
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.publisher import Publisher

SEND_RETRY_MS = 5
LEAD_NS = 20_000_000
"""Delay between starting and the first message (lets the first deadline be met)."""


@dataclass
class LiveResult:
    n_sent: int = 0
    n_loops: int = 0
    n_undecodable: int = 0
    n_send_retries: int = 0
    n_ends_announced: int = 0
    """end announcements the replay added (sensors whose replayed part did not end with one)"""
    max_late_ns: int = 0
    mean_late_ns: float = 0.0
    duration_s: float = 0.0


class _Restamper:
    def __init__(self, t0_ns: int, start_ns: int, rate: float) -> None:
        self.t0_ns = t0_ns
        self.start_ns = start_ns
        self.rate = rate
        self.encoder = Encoder()

    def map_ns(self, t_ns: int) -> int:
        return self.start_ns + round((t_ns - self.t0_ns) / self.rate)

    def payload(self, m: LogMessage, iteration: int, seq_span: dict[str, int]) -> bytes:
        msg = decode(m.payload)
        seq = msg.seq + iteration * seq_span.get(stream_of(msg), 0)
        changes = {"t_ns": self.map_ns(msg.t_ns), "seq": seq}
        if isinstance(msg, MotorCommand):
            changes["cause_t_ns"] = self.map_ns(msg.cause_t_ns)
        return self.encoder.encode(dataclasses.replace(msg, **changes))


def _seq_spans(msgs: list[LogMessage]) -> dict[str, int]:
    """Per sequence stream, ``max - min + 1`` of its seqs in the replayed window: loop ``i``
    adds ``i * span``, so every stream's numbers continue without a gap or a repeat."""
    lo: dict[str, int] = {}
    hi: dict[str, int] = {}
    for m in msgs:
        try:
            msg = decode(m.payload)
        except ProtocolError:
            continue
        k = stream_of(msg)
        lo[k] = min(lo.get(k, msg.seq), msg.seq)
        hi[k] = max(hi.get(k, msg.seq), msg.seq)
    return {k: hi[k] - lo[k] + 1 for k in lo}


def _end_announcements(
    msgs: list[LogMessage], upto: int, map_ns, seq_shift, detail: str
) -> list[tuple[bytes, bytes]]:
    """``[topic, payload]`` of an ``ended`` heartbeat for every sensor replayed in
    ``msgs[:upto]`` whose last replayed message is not one: the next number of its heartbeat
    stream (``seq_shift(stream, seq)``: the loop's renumbering), stamped ``map_ns`` of its
    last message's time. Walks back from the end, decoding only the sensors still open."""
    sensors = {m.topic for m in msgs[:upto] if m.topic.startswith("sensor/")}
    last_t: dict[str, int] = {}
    seq: dict[str, int] = {}
    for m in reversed(msgs[:upto]):
        if m.topic not in sensors or m.topic in seq:
            continue
        try:
            msg = decode(m.payload)
        except ProtocolError:
            continue
        if m.topic not in last_t:
            if isinstance(msg, Heartbeat) and msg.state == HEARTBEAT_ENDED:
                sensors.discard(m.topic)  # it ended as recorded
                continue
            last_t[m.topic] = msg.t_ns
        if isinstance(msg, Heartbeat):
            seq[m.topic] = seq_shift(stream_of(msg), msg.seq) + 1
            if len(seq) == len(sensors):
                break
    out = []
    for topic in sorted(sensors):
        name = topic[len("sensor/") :]
        hb = Heartbeat(name, seq.get(topic, 0), map_ns(last_t[topic]), HEARTBEAT_ENDED, detail)
        out.append((topic.encode(), encode(hb)))
    return out


def _send(pub: Publisher, topic: bytes, payload: bytes, stop: StopSignal, res: LiveResult) -> bool:
    ok = pub.send_payload(topic, payload)
    while not ok:
        res.n_send_retries += 1
        pub.n_dropped -= 1  # not a drop: we retry until the subscriber takes it
        if stop.requested:
            return False
        pub.wait_writable(SEND_RETRY_MS / 1000)
        ok = pub.retry_dropped()  # to whoever missed it: never twice to anyone
    return True


def _end_streams(pub, msgs, replayed, seq_span, restamp: bool, detail: str, res) -> None:
    """Announce the end of every replayed sensor stream that did not end as recorded (one
    non-blocking send each: the replay is over)."""
    iteration, upto, stamper = replayed
    if not upto:
        return

    def map_ns(t_ns: int) -> int:
        return stamper.map_ns(t_ns) if restamp else t_ns

    def seq_shift(stream: str, seq: int) -> int:
        return seq + iteration * seq_span.get(stream, 0)

    for topic, payload in _end_announcements(msgs, upto, map_ns, seq_shift, detail):
        if pub.send_payload(topic, payload):
            res.n_ends_announced += 1


def replay_live(
    source: str | Path | LogFile,
    pub: Publisher,
    stop: StopSignal,
    *,
    rate: float = 1.0,
    fast: bool = False,
    loop: bool = False,
    topics: list[str] | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    restamp: bool = True,
) -> LiveResult:
    if not (np.isfinite(rate) and rate > 0):
        raise ConfigError(f"replay rate must be a finite number > 0, found {rate}")
    log = source if isinstance(source, LogFile) else open_log(source)
    msgs = sorted(log.select(topics, start_s, end_s), key=lambda m: m.log_time_ns)
    if not msgs:
        raise LogFileError(
            f"{log.path}: no messages to replay (topics {topics}, window {start_s}..{end_s} s)"
        )
    t0 = msgs[0].log_time_ns
    span_ns = msgs[-1].log_time_ns - t0
    steps = np.diff([m.log_time_ns for m in msgs])
    steps = steps[steps > 0]  # messages sharing a time (gyro + accel) are not a gap
    gap_ns = int(np.median(steps)) if steps.size else 1_000_000
    seq_span = _seq_spans(msgs) if loop and restamp else {}
    res = LiveResult()
    late_sum = 0
    t_start_s = time.monotonic()
    start_ns = time.monotonic_ns() + LEAD_NS
    iteration = 0
    replayed = (0, 0, None)  # (loop, messages sent of it, its restamper): where it ends
    while not stop.requested:
        base_ns = start_ns + iteration * round((span_ns + gap_ns) / rate)
        stamper = _Restamper(t0, base_ns, rate)
        for k, m in enumerate(msgs):
            due_ns = stamper.map_ns(m.log_time_ns)
            if not fast:
                wait_ns = due_ns - time.monotonic_ns()
                if wait_ns > 0 and stop.wait(wait_ns / 1e9):
                    break
                late = time.monotonic_ns() - due_ns
                res.max_late_ns = max(res.max_late_ns, late)
                late_sum += late
            if stop.requested:
                break
            payload = m.payload
            if restamp:
                try:
                    payload = stamper.payload(m, iteration, seq_span)
                except ProtocolError:
                    res.n_undecodable += 1
                    continue
            if not _send(pub, m.topic.encode(), payload, stop, res):
                break
            res.n_sent += 1
            replayed = (iteration, k + 1, stamper)
        else:
            res.n_loops += 1
            iteration += 1
            if loop:
                continue
        break
    _end_streams(
        pub, msgs, replayed, seq_span, restamp, f"the replay of {log.path.name} ended", res
    )
    res.mean_late_ns = late_sum / res.n_sent if res.n_sent and not fast else 0.0
    res.duration_s = time.monotonic() - t_start_s
    return res
