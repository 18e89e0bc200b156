"""The sending side: :class:`Publisher`, an XPUB socket (PUB semantics) that sends
``[topic, payload]`` without blocking; with ``nodrop`` (default) a full high-water mark
makes ``send`` count a drop instead of ZeroMQ dropping silently."""

from __future__ import annotations

import time
from collections.abc import Sequence

import zmq

from spikefuse.protocol import Encoder, Message, topic_of
from spikefuse.transport.config import PublisherConfig, SecurityConfig
from spikefuse.transport.security import apply_client_security, check_plaintext
from spikefuse.transport.sockets import PUB_LINGER_MS, Closes, SocketOwner, bind_or_connect

_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


class Publisher(Closes):
    """Sends messages as ``[topic, payload]`` frames without ever blocking.

    ``bind=True`` (default) binds the endpoint; subscribers connect. When the high-water
    mark of a connected subscriber is reached, ``send`` counts the message in
    ``n_dropped`` (``nodrop=True``) rather than letting ZeroMQ drop it silently."""

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = True,
        hwm: int = 10000,
        security: SecurityConfig | None = None,
        nodrop: bool = True,
        linger_s: float = PUB_LINGER_MS / 1000,
        context: zmq.Context | None = None,
    ) -> None:
        check_plaintext([endpoint], security)
        self._linger_ms = max(0, int(linger_s * 1000))
        self._owner = SocketOwner(context, private=False)
        self.n_sent = 0
        self.n_dropped = 0
        self.n_subscriptions = 0
        self._live: dict[bytes, int] = {}  # topic prefix -> subscriptions currently held
        self._encoder = Encoder()
        try:
            sock = self._owner.sock = self._owner.ctx.socket(zmq.XPUB)
            sock.linger = self._linger_ms
            sock.sndhwm = hwm
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every unsubscription too (a peer leaving)
            if nodrop:
                sock.setsockopt(zmq.XPUB_NODROP, 1)
            if security is not None and security.uses_curve:
                apply_client_security(sock, security)
            self.endpoint = bind_or_connect(sock, endpoint, bind)
        except BaseException:
            self._owner.close(0)
            raise
        self._sock = sock

    @classmethod
    def from_config(cls, cfg: PublisherConfig, **kwargs) -> Publisher:
        return cls(
            cfg.endpoint,
            bind=cfg.bind,
            hwm=cfg.hwm,
            nodrop=cfg.nodrop,
            security=cfg.security,
            **kwargs,
        )

    @property
    def socket(self) -> zmq.Socket:
        return self._sock

    def send(self, msg: Message) -> bool:
        """Encode and send; returns False (and counts ``n_dropped``) if a subscriber's queue
        is full. An invalid message raises ProtocolError(reason="encode")."""
        return self._send_frames(topic_of(msg), self._encoder.encode(msg))

    def send_payload(self, topic: bytes, payload: bytes) -> bool:
        """Send already-encoded frames (e.g. replay of recorded payloads), unchecked."""
        return self._send_frames(topic, payload)

    def _send_frames(self, topic: bytes, payload: bytes) -> bool:
        # two plain sends with int flags: a third of send_multipart's cost per message (the
        # flag enums and its loop). A message is atomic: only its first frame can hit the
        # high-water mark (EAGAIN), and then nothing of it was queued.
        try:
            self._sock.send(topic, _MORE_NOBLOCK)
        except zmq.Again:
            self.n_dropped += 1
            return False
        self._sock.send(payload, _NOBLOCK)
        self.n_sent += 1
        return True

    def wait_writable(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until a send would not hit the high-water mark (used by
        back-pressured senders such as fast replay)."""
        return bool(self._sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLOUT))

    def poll_subscriptions(self) -> int:
        """Read pending (un)subscription notices; returns the number of subscriptions seen."""
        sock = self._sock
        if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # none: no raised zmq.Again
            return self.n_subscriptions
        while True:
            try:
                frame = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.n_subscriptions
            prefix = frame[1:]
            if frame[:1] == b"\x01":
                self.n_subscriptions += 1
                self._live[prefix] = self._live.get(prefix, 0) + 1
            elif frame[:1] == b"\x00" and self._live.get(prefix, 0) > 0:
                self._live[prefix] -= 1

    def n_subscribed(self, topic: bytes) -> int:
        """How many subscriptions held right now would receive ``topic`` (call
        :meth:`poll_subscriptions` first). A process that subscribes to several topics of
        this socket (the core: ``sensor/x`` and ``status/x``) counts once for ``sensor/x``."""
        return sum(n for p, n in self._live.items() if topic.startswith(p))

    def has_subscriber(self, topic: bytes) -> bool:
        """Whether a subscription matching ``topic`` is held right now, as far as the
        notices read so far tell (call :meth:`poll_subscriptions` first): a message sent
        to a topic nobody holds reaches no one, which ZeroMQ does not count."""
        return any(n > 0 and topic.startswith(p) for p, n in self._live.items())

    def wait_for_subscribers(
        self, n: int = 1, timeout_s: float = 5.0, topics: Sequence[bytes] = ()
    ) -> bool:
        """Block until ``n`` subscribers are there (avoids losing the first messages to the
        'slow joiner' effect); False on timeout. With ``topics``, a subscriber counts when
        it would receive one of them (the rule of :meth:`n_subscribed`: a process that
        also subscribed to a status topic counts once), else every subscription counts."""
        deadline_s = time.monotonic() + timeout_s
        while self._n_waited_for(topics) < n:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return False
            self._sock.poll(max(1, int(remaining_s * 1000)), zmq.POLLIN)
        return True

    def _n_waited_for(self, topics: Sequence[bytes]) -> int:
        n_all = self.poll_subscriptions()
        return max(self.n_subscribed(t) for t in topics) if topics else n_all

    def close(self) -> None:
        """Close; queued messages still get ``linger_s`` to leave."""
        self._owner.close(self._linger_ms)

    @property
    def closed(self) -> bool:
        return self._sock.closed
