"""A bare PUB/SUB socket with no protocol: the transport floor the benchmarks measure the
publisher and subscriber against, and a way to inject arbitrary frames in tests."""

from __future__ import annotations

import time
from typing import Literal

import zmq

from spikefuse.errors import ConfigError
from spikefuse.transport.security import check_plaintext
from spikefuse.transport.sockets import Closes, SocketOwner, bind_or_connect


class RawSocket(Closes):
    """A bare PUB (XPUB) or SUB socket moving byte frames with no protocol at all: no
    encoding, decoding or checks. It is the transport floor that benchmarks compare the
    Publisher/Subscriber against, and lets tests inject arbitrary frames."""

    def __init__(
        self,
        kind: Literal["pub", "sub"],
        endpoint: str,
        *,
        bind: bool,
        hwm: int = 10000,
        topics: list[bytes] | None = None,
    ) -> None:
        check_plaintext([endpoint], None)
        self._owner = SocketOwner(None, private=False)
        try:
            if kind == "pub":
                sock = self._owner.sock = self._owner.ctx.socket(zmq.XPUB)
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)
                sock.setsockopt(zmq.XPUB_NODROP, 1)  # full queue: send() returns False
                sock.sndhwm = hwm
            elif kind == "sub":
                sock = self._owner.sock = self._owner.ctx.socket(zmq.SUB)
                sock.rcvhwm = hwm
                for t in topics if topics is not None else [b""]:
                    sock.setsockopt(zmq.SUBSCRIBE, t)
            else:
                raise ConfigError(f"raw socket kind must be 'pub' or 'sub', found {kind!r}")
            sock.linger = 0
            self.endpoint = bind_or_connect(sock, endpoint, bind)
        except BaseException:
            self._owner.close(0)
            raise
        self._sock = sock
        self.n_subscriptions = 0

    def send(self, frames: list[bytes] | tuple[bytes, ...]) -> bool:
        """Send without blocking; False if a queue is full."""
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def recv(self, timeout_s: float | None = None) -> list[bytes] | None:
        """The next multipart message, or None after ``timeout_s``."""
        if timeout_s is not None and not self._sock.poll(max(0, int(timeout_s * 1000))):
            return None
        return self._sock.recv_multipart()

    def wait_for_subscribers(self, n: int = 1, timeout_s: float = 5.0) -> bool:
        deadline_s = time.monotonic() + timeout_s
        while self.n_subscriptions < n:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0 or not self._sock.poll(max(1, int(remaining_s * 1000))):
                return False
            if self._sock.recv()[:1] == b"\x01":
                self.n_subscriptions += 1
        return True

    def close(self) -> None:
        self._owner.close(0)
