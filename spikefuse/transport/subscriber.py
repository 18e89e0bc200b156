"""The receiving side: :class:`Subscriber`, a SUB socket on one or more endpoints.

Payloads are decoded by a counting :class:`~spikefuse.protocol.Decoder` (bad ones are
counted and logged, never raised), sequence gaps are counted per stream
(:class:`~spikefuse.transport.seq.SeqTracker`), and what is ready is drained into a
per-stream :class:`~spikefuse.transport.queue.InputQueue` with policy ``keep`` (bounded,
oldest dropped and counted) or ``coalesce`` (consecutive batches of one stream merged by
summing counts per channel: overload costs temporal resolution, never the signal).

``unix://`` endpoints (:mod:`spikefuse.transport.unix`) mix with the ZeroMQ ones: their
connections and the SUB socket are waited on in one poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from spikefuse.errors import ConfigError
from spikefuse.protocol import Decoder, Message, stream_of, topic_of
from spikefuse.transport.config import SecurityConfig, SubscriberConfig
from spikefuse.transport.queue import InputQueue, Policy
from spikefuse.transport.security import apply_server_security, check_plaintext
from spikefuse.transport.seq import SeqTracker
from spikefuse.transport.sockets import (
    MAX_MSG_BYTES,
    SUB_LINGER_MS,
    Closes,
    SocketOwner,
    bind_or_connect,
)
from spikefuse.transport.unix import UnixLinks, check_unix_options, split_endpoints

DEFAULT_MAX_DRAIN = 65536
"""Most messages pulled off a socket per drain (bounds one call's latency)."""

RawHandler = Callable[[bytes, bytes], bool]
"""Takes one received ``(topic, payload)`` as bytes; False: not taken (decode it)."""
MessageHandler = Callable[[Message], None]


def check_frames(decoder: Decoder, frames: list[bytes]) -> Message | None:
    """The message of one received ``[topic, payload]``, decoded and checked against its
    topic frame; None (counted by ``decoder``) when it is rejected."""
    if len(frames) != 2:
        decoder.reject("bad_frames", f"expected [topic, payload], got {len(frames)} frames")
        return None
    msg = decoder.decode(frames[1])
    if msg is None:
        return None
    if topic_of(msg) != frames[0]:
        decoder.reject("topic_mismatch", f"topic frame {frames[0][:80]!r} != {topic_of(msg)!r}")
        return None
    return msg


def _topic_bytes(topic: str | bytes) -> bytes:
    return topic.encode() if isinstance(topic, str) else bytes(topic)


@dataclass
class SubscriberStats:
    """Counters of a subscriber (a snapshot)."""

    n_received: int
    n_rejected: int
    rejected: dict[str, int]
    n_dropped: int
    n_coalesced: int
    seq_gaps: dict[str, int] = field(default_factory=dict)
    """stream -> number of messages missing according to sequence numbers"""
    seq_resets: dict[str, int] = field(default_factory=dict)
    """stream -> number of times seq did not advance (sender restarted, or duplicates)"""
    n_auth_denied: int = 0

    @property
    def n_seq_missing(self) -> int:
        return sum(self.seq_gaps.values())


class ReceiveCore:
    """Socket-independent receive logic shared by the sync and asyncio subscribers."""

    def _init_core(self, name: str, policy: Policy, max_queue: int, max_drain: int) -> None:
        self.decoder = Decoder(name)
        self.queue = InputQueue(policy, max_queue)
        self.max_drain = max_drain
        self.n_received = 0
        self._rcvtimeo_ms = -1
        self.seq = SeqTracker()
        self._unix: UnixLinks | None = None

    def _setup_socket(
        self,
        owner: SocketOwner,
        sock: zmq.Socket,
        endpoints: list[str],
        topics: list[str],
        bind: bool,
        hwm: int,
        security: SecurityConfig | None,
    ) -> list[str]:
        sock.linger = SUB_LINGER_MS
        sock.rcvhwm = hwm
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
        if security is not None and security.uses_curve:
            apply_server_security(sock, security, owner)
        for t in topics:
            sock.setsockopt(zmq.SUBSCRIBE, t.encode() if isinstance(t, str) else bytes(t))
        return [bind_or_connect(sock, e, bind) for e in endpoints]

    def accept(self, frames: list[bytes], *, track_seq: bool = True) -> Message | None:
        """The subscriber's checks on one received multipart message, for a consumer that
        takes raw frames (:meth:`Subscriber.recv_frames`, :meth:`Subscriber.dispatch`):
        two frames, a payload the counting decoder accepts, a topic frame equal to the
        message's topic. None when it is rejected (counted in ``stats.rejected``); an
        accepted message counts in ``n_received`` and, with ``track_seq``, its seq in the
        per-stream gap and reset counters (``stats.seq_gaps``, ``stats.seq_resets``)."""
        msg = check_frames(self.decoder, frames)
        if msg is None:
            return None
        self.n_received += 1
        if track_seq:
            self.seq.see(stream_of(msg), msg.seq)
        return msg

    def _recv_nowait(self) -> list[bytes] | None:
        """The next message's frames if one is ready, else None (never waits)."""
        try:
            return self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def _refresh(self) -> None:
        """Before taking what is ready without a wait (the ZeroMQ socket needs nothing)."""

    def _drain(self) -> int:
        """Move every ready message (at most ``max_drain``) into the queue."""
        self._refresh()
        n = 0
        while n < self.max_drain:
            frames = self._recv_nowait()
            if frames is None:
                break
            msg = self.accept(frames)
            if msg is not None:
                self.queue.put(msg)
            n += 1
        return n

    @property
    def stats(self) -> SubscriberStats:
        keylist = self._owner.keylist
        return SubscriberStats(
            n_received=self.n_received,
            n_rejected=self.decoder.n_rejected,
            rejected=dict(self.decoder.rejected),
            n_dropped=self.queue.n_dropped,
            n_coalesced=self.queue.n_coalesced,
            seq_gaps=dict(self.seq.gaps),
            seq_resets=dict(self.seq.resets),
            n_auth_denied=(keylist.n_denied if keylist else 0)
            + (self._unix.refusals.n_denied if self._unix is not None else 0),
        )


class Subscriber(ReceiveCore, Closes):
    """Receives decoded messages from one or more endpoints (connects by default;
    ``bind=True`` for fan-in). Never raises on bad payloads: they are counted in
    ``stats.rejected``. ``topics`` are prefixes (``""`` = everything, ``"sensor/imu"``)."""

    def __init__(
        self,
        endpoints: list[str] | str,
        topics: list[str] | None = None,
        *,
        bind: bool = False,
        hwm: int = 10000,
        security: SecurityConfig | None = None,
        policy: Policy = "keep",
        max_queue: int = 10000,
        max_drain: int = DEFAULT_MAX_DRAIN,
        context: zmq.Context | None = None,
        name: str = "subscriber",
    ) -> None:
        endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not endpoints:
            raise ConfigError("a subscriber needs at least one endpoint")
        check_plaintext(endpoints, security)
        zmq_eps, unix_eps = split_endpoints(endpoints)
        check_unix_options(unix_eps, security, bind, publisher=False)
        self._init_core(name, policy, max_queue, max_drain)
        secure = security is not None and security.uses_curve
        topics = topics or [""]
        self._owner = SocketOwner(context, private=secure)
        try:
            self._sock = self._owner.sock = self._owner.ctx.socket(zmq.SUB)
            bound = self._setup_socket(
                self._owner, self._sock, zmq_eps, topics, bind, hwm, security
            )
            if unix_eps:
                self._unix = UnixLinks(unix_eps, [_topic_bytes(t) for t in topics])
        except BaseException:
            self._owner.close(0)
            raise
        self._zpoll = self._sock if zmq_eps else None  # polled with the unix links
        self._z_ready = False
        self.endpoints = bound + [str(e) for e in unix_eps]

    @classmethod
    def from_config(cls, cfg: SubscriberConfig, **kwargs) -> Subscriber:
        return cls(
            cfg.endpoints,
            cfg.topics,
            bind=cfg.bind,
            hwm=cfg.hwm,
            security=cfg.security,
            policy=cfg.policy,
            max_queue=cfg.max_queue,
            **kwargs,
        )

    @property
    def socket(self) -> zmq.Socket:
        return self._sock

    def fileno(self) -> int:
        """The ZeroMQ socket's edge-triggered notification fd (for select/epoll
        integration): when it signals, call ``recv_many(0)`` until it returns ``[]``. It
        does not signal for ``unix://`` endpoints (those wait in the subscriber's poll)."""
        return self._sock.getsockopt(zmq.FD)

    def _recv_nowait(self) -> list[bytes] | None:
        if self._unix is None:
            try:
                return self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
        frames = self._unix.recv_ready()
        if frames is None and self._z_ready:
            try:
                return self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                self._z_ready = False
        return frames

    def _refresh(self) -> None:
        if self._unix is not None:
            self._poll_any(0)

    def _poll_any(self, wait_ms: float) -> None:
        self._z_ready = self._unix.poll(wait_ms, self._zpoll)[1]

    def _wait_any(self, deadline_s: float | None) -> list[bytes] | None:
        """The ``unix://`` links and the ZeroMQ socket (if it has endpoints) in one poll."""
        while True:
            frames = self._recv_nowait()
            if frames is not None:
                return frames
            if deadline_s is None:
                wait_ms = -1.0
            else:
                wait_ms = (deadline_s - time.monotonic()) * 1000
                if wait_ms <= 0:
                    return None
            self._poll_any(wait_ms)

    def _first(self, timeout_s: float | None) -> list[bytes] | None:
        """The first message's frames: waited for up to ``timeout_s`` (None: block), or
        taken if ready (``timeout_s <= 0``)."""
        if timeout_s is not None and timeout_s <= 0:
            self._refresh()
            return self._recv_nowait()
        return self._wait_frames(self._deadline(timeout_s))

    def _wait_frames(self, deadline_s: float | None) -> list[bytes] | None:
        """Block (up to the deadline) for the next multipart message, as raw frames. Uses
        RCVTIMEO on a blocking receive, which wakes up sooner than a poll followed by a
        receive."""
        if self._unix is not None:
            return self._wait_any(deadline_s)
        if deadline_s is None:
            wait_ms = -1
        else:
            wait_ms = int((deadline_s - time.monotonic()) * 1000 + 0.999)
            if wait_ms <= 0:
                return None
        if wait_ms != self._rcvtimeo_ms:
            self._sock.rcvtimeo = self._rcvtimeo_ms = wait_ms
        try:
            return self._sock.recv_multipart()
        except zmq.Again:
            return None

    def _wait_one(self, deadline_s: float | None) -> Message | None:
        """Block (up to the deadline) for the next accepted message; rejected ones are
        counted and waiting goes on."""
        while True:
            frames = self._wait_frames(deadline_s)
            if frames is None:
                return None
            msg = self.accept(frames)
            if msg is not None:
                return msg

    @staticmethod
    def _deadline(timeout_s: float | None) -> float | None:
        return None if timeout_s is None else time.monotonic() + timeout_s

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """The next message (``None`` after ``timeout_s``; a ``None`` timeout blocks).

        Messages already queued by :meth:`recv_many` come first; otherwise this takes one
        message off the socket without draining the rest (lowest latency). Consumers that
        can fall behind should use :meth:`recv_many`, which applies the queue policy."""
        if len(self.queue):
            return self.queue.pop()
        if timeout_s is not None and timeout_s <= 0:
            self._drain()
            return self.queue.pop()
        return self._wait_one(self._deadline(timeout_s))

    def recv_frames(self, timeout_s: float | None, max_n: int = 10000) -> list[list[bytes]]:
        """Raw ``[topic, payload]`` frame lists as they arrived (no decoding, no queue
        policy): for consumers that store bytes verbatim, such as the recorder. Waits up to
        ``timeout_s`` for the first, then takes what is ready (at most ``max_n``)."""
        first = self._first(timeout_s)
        if first is None:
            return []
        out: list[list[bytes]] = [first]
        while len(out) < max_n and (frames := self._recv_nowait()) is not None:
            out.append(frames)
        return out

    def dispatch(
        self,
        timeout_s: float | None,
        raw: RawHandler,
        handle: MessageHandler,
        max_n: int | None = None,
    ) -> int:
        """Hand messages over one at a time, in arrival order, as they come off the socket:
        wait up to ``timeout_s`` (None: block; <= 0: no wait) for the first, then take
        what is ready, at most ``max_n`` (default ``max_drain``). Returns how many were
        taken off the socket.

        Each ``[topic, payload]`` goes first to ``raw(topic, payload)``, a consumer's own
        decoder (the fusion core's compiled path); a message it takes counts in
        ``n_received``. When it returns False, the subscriber's checks run
        (:meth:`accept`: rejections counted) and an accepted message goes to ``handle``.

        No message waits in between, so the queue policy has nothing to merge or drop
        here (``n_coalesced`` and ``n_dropped`` stay as they are; messages already queued
        by :meth:`recv_many` go to ``handle`` first). Sequence numbers are not tracked:
        messages taken raw are never decoded here, and a per-stream tracker that saw only
        the others would count their seqs as gaps; the consumer checks sequence itself."""
        for msg in self.queue.pop_all():
            handle(msg)
        n_max = self.max_drain if max_n is None else max_n
        n = 0
        recv_nowait = self._recv_nowait
        while n < n_max:
            frames = self._first(timeout_s) if n == 0 else recv_nowait()
            if frames is None:
                break
            n += 1
            if len(frames) == 2 and raw(frames[0], frames[1]):
                self.n_received += 1
                continue
            msg = self.accept(frames, track_seq=False)
            if msg is not None:
                handle(msg)
        return n

    def recv_many(self, timeout_s: float | None = None) -> list[Message]:
        """Everything ready (waiting up to ``timeout_s`` for the first message), after the
        queue policy (keep / coalesce) was applied to it."""
        if not len(self.queue) and not (timeout_s is not None and timeout_s <= 0):
            first = self._wait_one(self._deadline(timeout_s))
            if first is None:
                return []
            self.queue.put(first)
        self._drain()
        return self.queue.pop_all()

    def unsubscribe(self, topics: list[str]) -> None:
        """Drop topic subscriptions (the publisher sees it: a clean leave, after which
        :meth:`recv_many` still returns what was already on its way)."""
        for t in topics:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, t.encode())
        if self._unix is not None:
            self._unix.unsubscribe([t.encode() for t in topics])

    def close(self) -> None:
        if self._unix is not None:
            self._unix.close()
        self._owner.close(SUB_LINGER_MS)

    @property
    def closed(self) -> bool:
        return self._sock.closed
