"""The asyncio variants of the publisher and subscriber (``zmq.asyncio``): the same
arguments, ``await pub.send(msg)``, ``await sub.recv(timeout_s)``, ``async with``."""

from __future__ import annotations

import time

import zmq
import zmq.asyncio

from spikefuse.errors import ConfigError
from spikefuse.protocol import Message, topic_of
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.queue import Policy
from spikefuse.transport.security import check_plaintext
from spikefuse.transport.sockets import SUB_LINGER_MS, Closes, SocketOwner
from spikefuse.transport.subscriber import DEFAULT_MAX_DRAIN, ReceiveCore


def _no_unix(endpoints: list[str]) -> None:
    for e in endpoints:
        if Endpoint(e).scheme == "unix":
            raise ConfigError(f"endpoint {e}: the asyncio variants take ZeroMQ endpoints only")


class AsyncPublisher(Publisher):
    """:class:`Publisher` for asyncio code: ``await pub.send(msg)`` (never blocks) and
    ``await pub.wait_for_subscribers(...)`` (waits on the socket through ``zmq.asyncio``)."""

    def __init__(self, endpoint: str, **kwargs) -> None:
        _no_unix([endpoint])
        super().__init__(endpoint, **kwargs)
        # an asyncio view of the same socket, used only to wait for subscriptions
        self._asock = zmq.asyncio.Socket.shadow(self._sock.underlying)

    async def send(self, msg: Message) -> bool:  # type: ignore[override]
        return self._send_frames(topic_of(msg), self._encoder.encode(msg))

    async def send_payload(self, topic: bytes, payload: bytes) -> bool:  # type: ignore[override]
        return self._send_frames(topic, payload)

    async def wait_for_subscribers(self, n: int = 1, timeout_s: float = 5.0) -> bool:  # type: ignore[override]
        deadline_s = time.monotonic() + timeout_s
        while self.poll_subscriptions() < n:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return False
            await self._asock.poll(max(1, int(remaining_s * 1000)), zmq.POLLIN)
        return True

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscriber(ReceiveCore, Closes):
    """:class:`Subscriber` for asyncio (``zmq.asyncio``): ``await sub.recv(timeout_s)``."""

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
        name: str = "subscriber",
    ) -> None:
        endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not endpoints:
            raise ConfigError("a subscriber needs at least one endpoint")
        _no_unix(endpoints)
        check_plaintext(endpoints, security)
        self._init_core(name, policy, max_queue, max_drain)
        secure = security is not None and security.uses_curve
        self._owner = SocketOwner(None, private=secure)
        self._actx = zmq.asyncio.Context.shadow(self._owner.ctx.underlying)
        try:
            self._asock = self._actx.socket(zmq.SUB)
            # the sync shadow drains without a Future per message; the async socket waits
            self._sock = self._owner.sock = zmq.Socket.shadow(self._asock.underlying)
            self.endpoints = self._setup_socket(
                self._owner, self._sock, endpoints, topics or [""], bind, hwm, security
            )
        except BaseException:
            self._close()
            raise

    @property
    def socket(self) -> zmq.asyncio.Socket:
        return self._asock

    async def _fill(self, timeout_s: float | None) -> None:
        """Drain what is ready; if nothing is queued, wait up to ``timeout_s``."""
        self._drain()
        if len(self.queue) or (timeout_s is not None and timeout_s <= 0):
            return
        deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
        while not len(self.queue):
            if deadline_s is None:
                wait_ms = None
            else:
                remaining_s = deadline_s - time.monotonic()
                if remaining_s <= 0:
                    return
                wait_ms = max(1, int(remaining_s * 1000 + 0.999))
            if await self._asock.poll(wait_ms, zmq.POLLIN):
                self._drain()

    async def recv(self, timeout_s: float | None = None) -> Message | None:
        await self._fill(timeout_s)
        return self.queue.pop()

    async def recv_many(self, timeout_s: float | None = None) -> list[Message]:
        await self._fill(timeout_s)
        return self.queue.pop_all()

    def _close(self) -> None:
        asock = getattr(self, "_asock", None)
        if asock is not None and not asock.closed:
            asock.close(linger=SUB_LINGER_MS)
        self._owner.sock = None
        self._owner.close(SUB_LINGER_MS)

    def close(self) -> None:
        self._close()

    @property
    def closed(self) -> bool:
        return self._asock.closed

    async def __aenter__(self) -> AsyncSubscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
