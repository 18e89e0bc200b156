"""The launcher's side of an agent: a DEALER control socket, heartbeats and the clock.

Clock offset (NTP-style, over the control socket): a :class:`Ping` carries the launcher's
monotonic send time t1; the agent stamps arrival t2 and departure t3 on its own monotonic
clock; the launcher notes arrival t4. Then ``offset = ((t2 - t1) + (t3 - t4)) / 2`` is the
agent's clock minus the launcher's, exact when both legs take equally long; the error is
at most half the round trip minus the agent's turnaround. :class:`ClockFilter` keeps the
estimate of the sample with the smallest round trip among the last ``window`` (the
least-queued exchange, NTP's minimum filter)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from spikefuse.agent.messages import (
    ControlMessage,
    Ping,
    Pong,
    ProcState,
    Reply,
    StateReport,
    decode_control,
    encode_control,
)
from spikefuse.errors import ProtocolError
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.control import ControlSocket


@dataclass(frozen=True)
class ClockSample:
    offset_ns: int
    rtt_ns: int
    t_ns: int


class ClockFilter:
    def __init__(self, window: int = 32) -> None:
        self.samples: deque[ClockSample] = deque(maxlen=window)
        self.n = 0

    def add(self, t1: int, t2: int, t3: int, t4: int) -> ClockSample:
        rtt = max(0, (t4 - t1) - (t3 - t2))
        s = ClockSample(((t2 - t1) + (t3 - t4)) // 2, rtt, t4)
        self.samples.append(s)
        self.n += 1
        return s

    @property
    def best(self) -> ClockSample | None:
        return min(self.samples, key=lambda s: s.rtt_ns) if self.samples else None

    @property
    def offset_ns(self) -> int:
        b = self.best
        return b.offset_ns if b is not None else 0


class AgentLink:
    """One agent as the launcher sees it."""

    def __init__(self, host: str, endpoint: str, security: SecurityConfig | None) -> None:
        self.host = host
        self.endpoint = endpoint
        self.sock = ControlSocket("client", endpoint, security=security)
        self.clock = ClockFilter()
        self.last_heard_ns: int | None = None
        self.last_ping_ns = 0
        self.table: dict[str, ProcState] = {}
        self.lost = False
        self.n_bad = 0

    def send(self, msg: ControlMessage) -> bool:
        return self.sock.send(encode_control(msg))

    def ping(self) -> None:
        self.last_ping_ns = time.monotonic_ns()
        self.send(Ping(t1_ns=self.last_ping_ns))

    def receive(self, timeout_s: float = 0.0) -> ControlMessage | None:
        """The next message (clock samples and the process table are taken in on the
        way); None when nothing came within ``timeout_s``."""
        while True:
            frames = self.sock.recv(timeout_s)
            if frames is None:
                return None
            t4 = time.monotonic_ns()
            try:
                msg = decode_control(frames)
            except ProtocolError:
                self.n_bad += 1
                continue
            self.last_heard_ns = t4
            if isinstance(msg, Pong):
                self.clock.add(msg.t1_ns, msg.t2_ns, msg.t3_ns, t4)
            elif isinstance(msg, StateReport):
                self.table = dict(msg.processes)
            return msg

    def measure_clock(self, n: int, timeout_s: float) -> bool:
        """``n`` ping/pong exchanges one after the other; False if the agent is silent."""
        for _ in range(n):
            self.ping()
            deadline = time.monotonic() + timeout_s
            while True:
                msg = self.receive(max(0.0, deadline - time.monotonic()))
                if msg is None:
                    return False
                if isinstance(msg, Pong):
                    break
        return True

    def wait_reply(self, request: str, timeout_s: float, on_other) -> Reply | None:
        """Wait for the :class:`Reply` to ``request``; other messages go to ``on_other``."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is None:
                return None
            if isinstance(msg, Reply) and msg.request in (request, "?"):
                return msg
            on_other(self, msg)
        return None

    def close(self) -> None:
        self.sock.close()
