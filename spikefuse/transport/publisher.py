"""The sending side: :class:`Publisher`, an XPUB socket (PUB semantics) that sends
``[topic, payload]`` without blocking; with ``nodrop`` (default) a full high-water mark
makes ``send`` count a drop instead of ZeroMQ dropping silently. On a ``unix://``
endpoint it is :class:`~spikefuse.transport.unix.UnixPublisherSocket` underneath, with the
same methods."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import zmq

from spikefuse.errors import BusError
from spikefuse.protocol import Encoder, Message, topic_of
from spikefuse.transport.config import PublisherConfig, SecurityConfig
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.security import apply_client_security, check_plaintext
from spikefuse.transport.sockets import PUB_LINGER_MS, Closes, SocketOwner, bind_or_connect
from spikefuse.transport.unix import UnixPublisherSocket, check_unix_options

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
        self.n_sent = 0
        self.n_dropped = 0
        self.n_subscriptions = 0
        self._live: dict[bytes, int] = {}  # topic prefix -> subscriptions currently held
        self._encoder = Encoder()
        self._dropped: tuple[bytes, bytes] | None = None
        self._unix: UnixPublisherSocket | None = None
        ep = Endpoint(endpoint)
        if ep.scheme == "unix":
            check_unix_options([ep], security, bind, publisher=True)
            self._unix = UnixPublisherSocket(ep)
            self.endpoint = str(ep)
            self._sock = None
            return
        self._owner = SocketOwner(context, private=False)
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
        if self._sock is None:
            raise BusError(f"{self.endpoint}: a unix:// publisher has no ZeroMQ socket")
        return self._sock

    @property
    def n_auth_denied(self) -> int:
        """Subscribers refused (a ``unix://`` peer of another user)."""
        return 0 if self._unix is None else self._unix.refusals.n_denied

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
        if self._unix is not None:
            return self._count(self._unix.send(topic, payload))
        try:
            self._sock.send(topic, _MORE_NOBLOCK)
        except zmq.Again:
            self.n_dropped += 1
            self._dropped = (topic, payload)
            return False
        self._sock.send(payload, _NOBLOCK)
        self.n_sent += 1
        return True

    def retry_dropped(self) -> bool:
        """Send the message of the last ``send`` that returned False again, to whoever
        missed it (ZeroMQ: everyone, a full high-water mark queued nothing of it;
        ``unix://``: only the subscribers that were full), never twice to anyone. False
        (counted in ``n_dropped``) if it is missed again; True if nothing was missed."""
        if self._unix is not None:
            return self._count(self._unix.retry())
        dropped, self._dropped = self._dropped, None
        return True if dropped is None else self._send_frames(*dropped)

    def _count(self, ok: bool) -> bool:
        if ok:
            self.n_sent += 1
        else:
            self.n_dropped += 1
        return ok

    def wait_writable(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until a send would not hit the high-water mark (used by
        back-pressured senders such as fast replay)."""
        if self._unix is not None:
            return self._unix.wait_writable(timeout_s)
        return bool(self._sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLOUT))

    def wait_notice(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` for a subscriber's (un)subscription or arrival (then
        call :meth:`poll_subscriptions`); False on timeout."""
        if self._unix is not None:
            return self._unix.service(max(0.0, timeout_s))
        return bool(self._sock.poll(max(1, int(timeout_s * 1000)), zmq.POLLIN))

    def poll_subscriptions(self) -> int:
        """Read pending (un)subscription notices; returns the number of subscriptions seen."""
        if self._unix is not None:
            self._unix.service()
            self.n_subscriptions = self._unix.n_subscriptions
            return self.n_subscriptions
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
        if self._unix is not None:
            return self._unix.n_subscribed(topic)
        return sum(n for p, n in self._live.items() if topic.startswith(p))

    def has_subscriber(self, topic: bytes) -> bool:
        """Whether a subscription matching ``topic`` is held right now, as far as the
        notices read so far tell (call :meth:`poll_subscriptions` first): a message sent
        to a topic nobody holds reaches no one, which ZeroMQ does not count."""
        if self._unix is not None:
            return self._unix.n_subscribed(topic) > 0
        return any(n > 0 and topic.startswith(p) for p, n in self._live.items())

    def wait_for_subscribers(
        self,
        n: int = 1,
        timeout_s: float = 5.0,
        topics: Sequence[bytes] = (),
        stopping: Callable[[], bool] | None = None,
    ) -> bool:
        """Block until ``n`` subscribers are there (avoids losing the first messages to the
        'slow joiner' effect); False on timeout (or when ``stopping()`` turns true: it is
        asked at least every 50 ms). With ``topics``, a subscriber counts when it would
        receive one of them (the rule of :meth:`n_subscribed`: a process that also
        subscribed to a status topic counts once), else every subscription counts."""
        deadline_s = time.monotonic() + timeout_s
        while self._n_waited_for(topics) < n:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0 or (stopping is not None and stopping()):
                return False
            self.wait_notice(remaining_s if stopping is None else min(remaining_s, 0.05))
        return True

    def n_waited_for(self, topics: Sequence[bytes] = ()) -> int:
        """The count :meth:`wait_for_subscribers` compares with ``n``, as it stands now."""
        return self._n_waited_for(topics)

    def _n_waited_for(self, topics: Sequence[bytes]) -> int:
        n_all = self.poll_subscriptions()
        return max(self.n_subscribed(t) for t in topics) if topics else n_all

    def close(self) -> None:
        """Close; queued messages still get ``linger_s`` to leave (``unix://``: what the
        subscribers' sockets hold is theirs already)."""
        if self._unix is not None:
            self._unix.close()
            return
        self._owner.close(self._linger_ms)

    @property
    def closed(self) -> bool:
        return self._unix.closed if self._unix is not None else self._sock.closed
