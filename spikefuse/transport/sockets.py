"""What every socket owner shares: binding or connecting, the context and ZAP handler it
owns, ``with`` support."""

from __future__ import annotations

import logging
from typing import Self

import zmq
from zmq.auth.thread import ThreadAuthenticator

from spikefuse.errors import BusError, ConfigError
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.security import ZAP_DOMAIN, KeyList

PUB_LINGER_MS = 200
"""Default time a closing publisher may still flush queued messages."""
SUB_LINGER_MS = 0
MAX_MSG_BYTES = 64 * 1024 * 1024
"""ZMQ_MAXMSGSIZE of subscribers: a peer sending a larger frame is disconnected."""


def bind_or_connect(sock: zmq.Socket, endpoint: str, bind: bool) -> str:
    """Bind (creating an ipc socket's folder) or connect; returns the endpoint actually
    bound (a ``tcp://...:*`` wildcard port resolved)."""
    ep = Endpoint(endpoint)
    if ep.scheme == "unix":
        raise ConfigError(
            f"endpoint {endpoint}: unix:// serves publishers and subscribers only; "
            "this socket needs ipc:// or tcp://"
        )
    try:
        if bind:
            if ep.ipc_path is not None:
                ep.ipc_path.parent.mkdir(parents=True, exist_ok=True)
            sock.bind(ep)
            return sock.getsockopt_string(zmq.LAST_ENDPOINT)
        sock.connect(ep)
        return str(ep)
    except zmq.ZMQError as exc:
        verb = "bind" if bind else "connect"
        raise BusError(f"cannot {verb} {endpoint}: {exc}") from None


class SocketOwner:
    """Owns a socket, its (possibly private) context and its ZAP authenticator."""

    def __init__(self, context: zmq.Context | None, private: bool) -> None:
        self.private = private
        self.ctx = zmq.Context() if private else (context or zmq.Context.instance())
        self.auth: ThreadAuthenticator | None = None
        self.keylist: KeyList | None = None
        self.sock: zmq.Socket | None = None

    def start_auth(self, keys: set[bytes]) -> None:
        self.keylist = KeyList(keys)
        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger(__name__ + ".zap"))
        self.auth.start()
        self.auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.keylist)

    def close(self, linger_ms: int) -> None:
        if self.sock is not None and not self.sock.closed:
            self.sock.close(linger=linger_ms)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        if self.private:
            self.ctx.term()


class Closes:
    """``with`` support for the socket owners: leaving the block closes."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
