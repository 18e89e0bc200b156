"""CurveZMQ: key files (``spikefuse keygen``), the socket options of each side and the ZAP
allow-list of a receiver.

The *receiving* side (subscriber) is the CURVE server and accepts only the sender public
keys listed in ``allowed_client_keys`` (ZAP, through
``zmq.auth.thread.ThreadAuthenticator``); the sending side is the CURVE client and must
know the receiver's public key. A ``tcp://`` endpoint that is not loopback requires keys
unless ``insecure: true`` is configured explicitly; ``ipc://``, ``inproc://`` and loopback
may run in plaintext."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import zmq
import zmq.auth

from spikefuse.errors import BusError, ConfigError
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.endpoint import Endpoint

log = logging.getLogger(__name__)

ZAP_DOMAIN = "spikefuse"


def generate_keypair(key_dir: Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public) and ``<name>.key_secret`` (public + secret, created
    with mode 0600) into ``key_dir`` in ZeroMQ's certificate format; returns both paths."""
    if not zmq.has("curve"):
        raise BusError("this libzmq was built without CURVE support")
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r} must be non-empty, without '/' or leading '.'")
    key_dir = Path(key_dir)
    public_file, secret_file = key_dir / f"{name}.key", key_dir / f"{name}.key_secret"
    if not overwrite and (public_file.exists() or secret_file.exists()):
        raise ConfigError(f"{public_file} or {secret_file} exists (use --force to overwrite)")
    public, secret = zmq.curve_keypair()
    head = "#   spikefuse keygen: ZeroMQ CURVE {} certificate of '{}'\n\nmetadata\ncurve\n"
    body_public = f'    public-key = "{public.decode()}"\n'
    body_secret = body_public + f'    secret-key = "{secret.decode()}"\n'
    try:
        key_dir.mkdir(parents=True, exist_ok=True)
        _write_private(secret_file, head.format("secret", name) + body_secret, overwrite)
        public_file.write_text(head.format("public", name) + body_public, encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"cannot write key files: {exc}", str(key_dir)) from None
    return public_file, secret_file


def _write_private(path: Path, text: str, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.chmod(path, 0o600)  # also when overwriting a file that had wider permissions


def _load_key(path: Path, where: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CURVE key {path}: {exc}", where) from None
    if need_secret and not secret:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)", where)
    return public, secret


def check_plaintext(endpoints: Iterable[str], security: SecurityConfig | None) -> None:
    """A non-loopback tcp endpoint without keys and without ``insecure: true`` is an error."""
    if security is not None and (security.insecure or security.uses_curve):
        return
    remote = [e for e in endpoints if not Endpoint(e).is_local]
    if remote:
        raise ConfigError(
            f"tcp endpoint {remote[0]} is not loopback: it requires CurveZMQ keys or an "
            "explicit plaintext opt-in, in the process's 'security' setting (every socket of "
            "a driver, core, actuator or view takes it: 'security: {secret_key_file: ..., "
            "...}' or 'security: {insecure: true}'; a launch file: 'security: {key_dir: "
            "...}'; record/echo/replay: '--security FILE')",
            "security",
        )


class KeyList:
    """ZAP credentials provider: accepts only the listed client public keys (z85)."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys
        self.n_denied = 0
        self.n_allowed = 0
        self._denied_keys: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.keys
        if ok:
            self.n_allowed += 1
        else:
            self.n_denied += 1
            if key not in self._denied_keys and len(self._denied_keys) < 1000:
                self._denied_keys.add(key)  # log each unknown key once (peers retry often)
                log.warning("CURVE: refused a peer with unlisted public key %s", key.decode())
        return ok


def apply_client_security(sock: zmq.Socket, security: SecurityConfig) -> None:
    """Make ``sock`` a CURVE client (the sending side) with the process's keys."""
    if security.server_public_key_file is None:
        raise ConfigError(
            "a sending socket with keys needs server_public_key_file (the receiver's public key)",
            "security.server_public_key_file",
        )
    public, secret = _load_key(security.secret_key_file, "security.secret_key_file", True)
    server_public, _ = _load_key(
        security.server_public_key_file, "security.server_public_key_file", False
    )
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.curve_serverkey = server_public


def server_keys(security: SecurityConfig) -> tuple[bytes, bytes, set[bytes]]:
    """(public, secret, allowed client keys) of a receiving socket."""
    if security.server_secret_key_file is not None:
        public, secret = _load_key(
            security.server_secret_key_file, "security.server_secret_key_file", True
        )
    else:
        public, secret = _load_key(security.secret_key_file, "security.secret_key_file", True)
    if not security.allowed_client_keys:
        raise ConfigError(
            "a receiving socket with keys needs allowed_client_keys (the senders it accepts)",
            "security.allowed_client_keys",
        )
    allowed = set()
    for i, p in enumerate(security.allowed_client_keys):
        allowed.add(_load_key(p, f"security.allowed_client_keys[{i}]", False)[0])
    return public, secret, allowed


def apply_server_security(sock: zmq.Socket, security: SecurityConfig, owner) -> None:
    """Make ``sock`` a CURVE server (the receiving side) whose ZAP handler (started on
    ``owner``, a :class:`~spikefuse.transport.sockets.SocketOwner`) admits only the
    allowed client keys."""
    public, secret, allowed = server_keys(security)
    owner.start_auth(allowed)
    sock.zap_domain = ZAP_DOMAIN.encode()
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
