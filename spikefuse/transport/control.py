"""The request/reply control channel of ``spikefuse agent`` and the launcher that talks
to it (ROUTER/DEALER)."""

from __future__ import annotations

import os
from typing import Literal

import zmq

from spikefuse.errors import ConfigError
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.security import (
    apply_client_security,
    apply_server_security,
    check_plaintext,
)
from spikefuse.transport.sockets import MAX_MSG_BYTES, Closes, SocketOwner, bind_or_connect


class ControlSocket(Closes):
    """``server`` = ROUTER (binds; frames arrive as ``[peer_id, *frames]`` and go back the
    same way), ``client`` = DEALER (connects; sends and receives bare frames).

    Security like the rest of the transport: a server with keys is the CURVE server and
    accepts only ``allowed_client_keys`` (ZAP); a client with keys needs the server's
    public key; non-loopback tcp needs keys unless ``insecure: true``. A client keeps one
    routing id for its life and the server hands a reconnecting id over, so a session
    survives a dropped connection. Never blocks on send: a full or unroutable peer makes
    :meth:`send` return False."""

    def __init__(
        self,
        role: Literal["server", "client"],
        endpoint: str,
        *,
        security: SecurityConfig | None = None,
        hwm: int = 10000,
    ) -> None:
        check_plaintext([endpoint], security)
        secure = security is not None and security.uses_curve
        self._owner = SocketOwner(None, private=secure)
        try:
            if role == "server":
                sock = self._owner.sock = self._owner.ctx.socket(zmq.ROUTER)
                sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
                if secure:
                    apply_server_security(sock, security, self._owner)
            elif role == "client":
                sock = self._owner.sock = self._owner.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.ROUTING_ID, b"c" + os.urandom(15))
                if secure:
                    apply_client_security(sock, security)
            else:
                raise ConfigError(f"control socket role must be server or client, found {role!r}")
            sock.linger = 0
            sock.sndhwm = hwm
            sock.rcvhwm = hwm
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
            self.endpoint = bind_or_connect(sock, endpoint, role == "server")
        except BaseException:
            self._owner.close(0)
            raise
        self._sock = sock

    def send(self, frames: list[bytes] | tuple[bytes, ...]) -> bool:
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError):
            return False
        return True

    def recv(self, timeout_s: float | None = 0.0) -> list[bytes] | None:
        """The next multipart message, None after ``timeout_s`` (None: block)."""
        wait_ms = -1 if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self._sock.poll(wait_ms, zmq.POLLIN):
            return None
        try:
            return self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    def readable(self) -> bool:
        """Whether a message is waiting (check before sleeping on :meth:`fileno`)."""
        return bool(self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)

    def fileno(self) -> int:
        """Edge-triggered notification fd (select/epoll): after it signals, :meth:`recv`
        until None, and check :meth:`readable` again before sleeping."""
        return self._sock.getsockopt(zmq.FD)

    @property
    def n_auth_denied(self) -> int:
        return self._owner.keylist.n_denied if self._owner.keylist else 0

    def close(self) -> None:
        self._owner.close(0)
