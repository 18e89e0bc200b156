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
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikefuse.errors import ConfigError, LogFileError, ProtocolError
from spikefuse.protocol import Encoder, MotorCommand, decode, stream_of
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
    while not stop.requested:
        base_ns = start_ns + iteration * round((span_ns + gap_ns) / rate)
        stamper = _Restamper(t0, base_ns, rate)
        for m in msgs:
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
        else:
            res.n_loops += 1
            iteration += 1
            if loop:
                continue
        break
    res.mean_late_ns = late_sum / res.n_sent if res.n_sent and not fast else 0.0
    res.duration_s = time.monotonic() - t_start_s
    return res
