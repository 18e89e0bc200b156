"""The ZeroMQ transport: the only spikefuse module that imports ``zmq``.

* :class:`Publisher` / :class:`AsyncPublisher`: an XPUB socket (PUB semantics) that sends
  ``[topic, payload]`` without blocking; with ``nodrop`` (default) a full high-water mark
  makes ``send`` count a drop instead of ZeroMQ dropping silently.
* :class:`Subscriber` / :class:`AsyncSubscriber`: a SUB socket on one or more endpoints.
  Payloads are decoded by a counting :class:`~spikefuse.protocol.Decoder` (bad ones are
  counted and logged, never raised), sequence gaps are counted per stream, and what is
  ready is drained into a per-stream queue with policy ``keep`` (bounded, oldest dropped
  and counted) or ``coalesce`` (consecutive batches of one stream merged by summing counts
  per channel: overload costs temporal resolution, never the signal).
* Security: CurveZMQ. The *receiving* side (subscriber) is the CURVE server and accepts
  only the sender public keys listed in ``allowed_client_keys`` (ZAP, through
  ``zmq.auth.thread.ThreadAuthenticator``); the sending side is the CURVE client and must
  know the receiver's public key. A ``tcp://`` endpoint that is not loopback requires keys
  unless ``insecure: true`` is configured explicitly; ``ipc://``, ``inproc://`` and
  loopback may run in plaintext.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import zmq
import zmq.asyncio
import zmq.auth
from pydantic import Field, field_validator, model_validator
from zmq.auth.thread import ThreadAuthenticator

from spikefuse.config import StrictModel, load_model
from spikefuse.errors import BusError, ConfigError
from spikefuse.protocol import (
    Decoder,
    Encoder,
    EventBatch,
    Heartbeat,
    Message,
    coalesce_many,
    stream_of,
    topic_of,
)

log = logging.getLogger(__name__)

Policy = Literal["keep", "coalesce"]

PUB_LINGER_MS = 200
"""Default time a closing publisher may still flush queued messages."""
SUB_LINGER_MS = 0
MAX_MSG_BYTES = 64 * 1024 * 1024
"""ZMQ_MAXMSGSIZE of subscribers: a peer sending a larger frame is disconnected."""
DEFAULT_MAX_DRAIN = 65536
"""Most messages pulled off a socket per drain (bounds one call's latency)."""
ZAP_DOMAIN = "spikefuse"
IPC_PATH_MAX = 107
_LOOPBACK_HOSTS = {"localhost", "::1", "[::1]", "ip6-localhost"}
_SCHEMES = ("ipc", "tcp", "inproc")


# --------------------------------------------------------------------------- config


def validate_endpoint(endpoint: str) -> str:
    """Check an endpoint string: ``ipc://path``, ``tcp://host:port`` or ``inproc://name``."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ConfigError(f"endpoint {endpoint!r} is not of the form scheme://address")
    scheme, _, address = endpoint.partition("://")
    if scheme not in _SCHEMES:
        raise ConfigError(f"endpoint {endpoint!r}: scheme must be one of {_SCHEMES}")
    if not address:
        raise ConfigError(f"endpoint {endpoint!r}: empty address")
    if scheme == "tcp" and ":" not in address:
        raise ConfigError(f"endpoint {endpoint!r}: tcp needs host:port")
    if scheme == "ipc" and len(address.encode()) > IPC_PATH_MAX:
        raise ConfigError(
            f"endpoint {endpoint!r}: ipc path longer than {IPC_PATH_MAX} bytes "
            "(the Unix socket limit); use a shorter run directory"
        )
    return endpoint


def is_loopback_or_local(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address (plaintext allowed)."""
    scheme, _, address = endpoint.partition("://")
    if scheme != "tcp":
        return True
    host = address.rsplit(":", 1)[0]
    host = host.split(";")[-1]  # "source;host" connect syntax: the remote part counts
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def default_ipc_endpoint(run_dir: Path, name: str) -> str:
    """The ipc endpoint ``ipc://<run_dir>/<name>.sock`` for a component on this host."""
    if not name or "/" in name or "\0" in name:
        raise ConfigError(f"endpoint name {name!r} must be non-empty without '/'")
    return validate_endpoint(f"ipc://{Path(run_dir).absolute() / name}.sock")


class SecurityConfig(StrictModel):
    """CurveZMQ settings of one process (every socket it opens takes the same block).

    Sender (publisher, CURVE client): ``secret_key_file`` (its own key pair, as written by
    ``spikefuse keygen``) and ``server_public_key_file`` (the receiver's public key).
    Receiver (subscriber, CURVE server): ``secret_key_file`` (or ``server_secret_key_file``
    when the process receives under another key pair than the one it sends with) and
    ``allowed_client_keys`` (the public key files of the senders it accepts).
    ``insecure: true`` explicitly allows plaintext on a non-loopback tcp endpoint."""

    insecure: bool = False
    secret_key_file: Path | None = None
    server_public_key_file: Path | None = None
    server_secret_key_file: Path | None = None
    """Key pair of the receiving side (default: ``secret_key_file``). A publisher talks to
    every receiver with one server key, so the receivers of one system share this pair
    (``spikefuse launch`` uses ``bus.key_secret``); senders stay told apart by their own
    keys in ``allowed_client_keys``."""
    allowed_client_keys: list[Path] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        has_keys = self.secret_key_file is not None
        if self.insecure and (has_keys or self.server_public_key_file or self.allowed_client_keys):
            raise ValueError("insecure: true cannot be combined with key files")
        if not has_keys and (
            self.server_public_key_file or self.allowed_client_keys or self.server_secret_key_file
        ):
            raise ValueError("secret_key_file is required when key files are given")
        return self

    @property
    def uses_curve(self) -> bool:
        return self.secret_key_file is not None

    def resolved(self, resolve: Callable[[Path], Path]) -> SecurityConfig:
        """A copy with every key path passed through ``resolve`` (a config file's
        ``resolve_path``: relative key paths follow the file that names them)."""

        def one(p: Path | None) -> Path | None:
            return None if p is None else resolve(p)

        return self.model_copy(
            update={
                "secret_key_file": one(self.secret_key_file),
                "server_public_key_file": one(self.server_public_key_file),
                "server_secret_key_file": one(self.server_secret_key_file),
                "allowed_client_keys": [resolve(p) for p in self.allowed_client_keys],
            }
        )


class PublisherConfig(StrictModel):
    endpoint: str
    bind: bool = True
    hwm: int = Field(10000, ge=1)
    nodrop: bool = True
    security: SecurityConfig | None = None

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        return _pydantic_endpoint(v)


class SubscriberConfig(StrictModel):
    endpoints: list[str] = Field(min_length=1)
    topics: list[str] = Field(default_factory=lambda: [""])
    bind: bool = False
    hwm: int = Field(10000, ge=1)
    policy: Policy = "keep"
    max_queue: int = Field(10000, ge=1)
    security: SecurityConfig | None = None

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, v: list[str]) -> list[str]:
        return [_pydantic_endpoint(e) for e in v]


def _pydantic_endpoint(v: str) -> str:
    try:
        return validate_endpoint(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def load_security(path: str | Path | None) -> SecurityConfig | None:
    """A ``SecurityConfig`` YAML file (``--security FILE`` of the command-line tools);
    relative key paths in it follow the file."""
    if path is None:
        return None
    path = Path(path)
    cfg = load_model(SecurityConfig, path)
    return cfg.resolved(lambda p: p if p.expanduser().is_absolute() else path.parent / p)


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


def _check_plaintext(endpoints: Iterable[str], security: SecurityConfig | None) -> None:
    if security is not None and (security.insecure or security.uses_curve):
        return
    remote = [e for e in endpoints if not is_loopback_or_local(e)]
    if remote:
        raise ConfigError(
            f"tcp endpoint {remote[0]} is not loopback: it requires CurveZMQ keys "
            "(security.secret_key_file, ...) or an explicit 'security: {insecure: true}'",
            "security",
        )


class _KeyList:
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


# --------------------------------------------------------------------------- sockets


def _bind_or_connect(sock: zmq.Socket, endpoint: str, bind: bool) -> str:
    validate_endpoint(endpoint)
    try:
        if bind:
            if endpoint.startswith("ipc://"):
                Path(endpoint[6:]).parent.mkdir(parents=True, exist_ok=True)
            sock.bind(endpoint)
            return sock.getsockopt_string(zmq.LAST_ENDPOINT)
        sock.connect(endpoint)
        return endpoint
    except zmq.ZMQError as exc:
        verb = "bind" if bind else "connect"
        raise BusError(f"cannot {verb} {endpoint}: {exc}") from None


class _Sockets:
    """Owns a socket, its (possibly private) context and its ZAP authenticator."""

    def __init__(self, context: zmq.Context | None, private: bool) -> None:
        self.private = private
        self.ctx = zmq.Context() if private else (context or zmq.Context.instance())
        self.auth: ThreadAuthenticator | None = None
        self.keylist: _KeyList | None = None
        self.sock: zmq.Socket | None = None

    def start_auth(self, keys: set[bytes]) -> None:
        self.keylist = _KeyList(keys)
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


def _apply_client_security(sock: zmq.Socket, security: SecurityConfig) -> None:
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


def _server_keys(security: SecurityConfig) -> tuple[bytes, bytes, set[bytes]]:
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


# --------------------------------------------------------------------------- publisher


class _Closes:
    """``with`` support for the socket owners below: leaving the block closes."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Publisher(_Closes):
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
        _check_plaintext([endpoint], security)
        self._linger_ms = max(0, int(linger_s * 1000))
        self._owner = _Sockets(context, private=False)
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
                _apply_client_security(sock, security)
            self.endpoint = _bind_or_connect(sock, endpoint, bind)
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
        try:
            self._sock.send_multipart((topic, payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.n_dropped += 1
            return False
        self.n_sent += 1
        return True

    def wait_writable(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until a send would not hit the high-water mark (used by
        back-pressured senders such as fast replay)."""
        return bool(self._sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLOUT))

    def poll_subscriptions(self) -> int:
        """Read pending (un)subscription notices; returns the number of subscriptions seen."""
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

    def wait_for_subscribers(self, n: int = 1, timeout_s: float = 5.0) -> bool:
        """Block until ``n`` subscriptions arrived (avoids losing the first messages to the
        'slow joiner' effect); False on timeout."""
        deadline_s = time.monotonic() + timeout_s
        while self.poll_subscriptions() < n:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return False
            self._sock.poll(max(1, int(remaining_s * 1000)), zmq.POLLIN)
        return True

    def close(self) -> None:
        """Close; queued messages still get ``linger_s`` to leave."""
        self._owner.close(self._linger_ms)

    @property
    def closed(self) -> bool:
        return self._sock.closed


class AsyncPublisher(Publisher):
    """:class:`Publisher` for asyncio code: ``await pub.send(msg)`` (never blocks) and
    ``await pub.wait_for_subscribers(...)`` (waits on the socket through ``zmq.asyncio``)."""

    def __init__(self, endpoint: str, **kwargs) -> None:
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


class RawSocket(_Closes):
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
        _check_plaintext([endpoint], None)
        self._owner = _Sockets(None, private=False)
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
            self.endpoint = _bind_or_connect(sock, endpoint, bind)
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


# --------------------------------------------------------------------------- queue


FOLD_EVERY = 64
"""A coalescing slot folds its merged batches into one every this many (bounded memory)."""


class _Slot:
    __slots__ = ("msg", "key", "extra", "open", "last_seq")

    def __init__(self, msg: Message, key: str) -> None:
        self.msg: Message | None = msg
        self.key = key
        self.extra: list[EventBatch] | None = None
        self.last_seq = msg.seq
        """seq of the newest batch merged in (a restarted sender's lower seq never merges)"""
        self.open = True
        """later batches may still merge in (until a heartbeat of its sensor queues up)"""

    def resolve(self) -> Message:
        msg = self.msg
        if self.extra:
            return coalesce_many([msg, *self.extra])  # type: ignore[list-item]
        return msg  # type: ignore[return-value]


class InputQueue:
    """Arrival-ordered queue of received messages with a per-stream policy.

    ``keep``: each stream holds at most ``max_queue`` messages; the oldest is dropped
    (counted in ``n_dropped``). ``coalesce``: an EventBatch arriving while an earlier batch
    of the same stream (same sensor, input and scale) is still queued is merged into it
    (counted in ``n_coalesced``); the merged batch sums counts per channel, so the
    integrated value of every channel is exactly preserved. Batches are not merged across
    a scale change, a sequence number that does not advance (a restarted sender), or a
    Heartbeat of their sensor: its totals count the batches sent before it, so a batch
    sent after it must not be applied before it (the keyframe would undo it)."""

    def __init__(self, policy: Policy = "keep", max_queue: int = 10000) -> None:
        if policy not in ("keep", "coalesce"):
            raise ConfigError(f"queue policy must be 'keep' or 'coalesce', found {policy!r}")
        if max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1, found {max_queue}")
        self.policy = policy
        self.max_queue = max_queue
        self.n_dropped = 0
        self.n_coalesced = 0
        self._order: deque[_Slot] = deque()
        self._streams: dict[str, deque[_Slot]] = {}
        self._n_live = 0

    def __len__(self) -> int:
        return self._n_live

    def put(self, msg: Message) -> None:
        key = stream_of(msg)
        if isinstance(msg, Heartbeat) and self.policy == "coalesce":
            self._close_batches_of(msg.sensor)
        sq = self._streams.get(key)
        if sq is None:
            sq = self._streams[key] = deque()
        elif self.policy == "coalesce" and isinstance(msg, EventBatch) and sq and sq[-1].open:
            slot = sq[-1]
            last = slot.msg
            # never across a scale change or a sender restart (seq not advancing)
            if isinstance(last, EventBatch) and last.scale == msg.scale and msg.seq > slot.last_seq:
                if slot.extra is None:
                    slot.extra = [msg]
                else:
                    slot.extra.append(msg)
                slot.last_seq = msg.seq
                if len(slot.extra) >= FOLD_EVERY:  # a consumer far behind: memory stays bounded
                    slot.msg, slot.extra = slot.resolve(), None
                self.n_coalesced += 1
                return
        slot = _Slot(msg, key)
        sq.append(slot)
        self._order.append(slot)
        self._n_live += 1
        if len(sq) > self.max_queue:
            old = sq.popleft()
            self.n_dropped += 1 + (len(old.extra) if old.extra else 0)
            old.msg = None
            old.extra = None
            self._n_live -= 1

    def _close_batches_of(self, sensor: str) -> None:
        prefix = f"sensor/{sensor}/"
        for key, sq in self._streams.items():
            if sq and key.startswith(prefix):
                sq[-1].open = False

    def pop(self) -> Message | None:
        while self._order:
            slot = self._order.popleft()
            if slot.msg is None:
                continue
            sq = self._streams[slot.key]
            sq.popleft()
            if not sq:
                del self._streams[slot.key]
            self._n_live -= 1
            return slot.resolve()
        return None

    def pop_all(self) -> list[Message]:
        out = []
        while (m := self.pop()) is not None:
            out.append(m)
        return out


# --------------------------------------------------------------------------- subscriber


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


class _SubscriberCore:
    """Socket-independent receive logic shared by the sync and asyncio subscribers."""

    def _init_core(self, name: str, policy: Policy, max_queue: int, max_drain: int) -> None:
        self.decoder = Decoder(name)
        self.queue = InputQueue(policy, max_queue)
        self.max_drain = max_drain
        self.n_received = 0
        self._rcvtimeo_ms = -1
        self._last_seq: dict[str, int] = {}
        self._gaps: dict[str, int] = {}
        self._resets: dict[str, int] = {}

    def _setup_socket(
        self,
        owner: _Sockets,
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
            public, secret, allowed = _server_keys(security)
            owner.start_auth(allowed)
            sock.zap_domain = ZAP_DOMAIN.encode()
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        for t in topics:
            sock.setsockopt(zmq.SUBSCRIBE, t.encode() if isinstance(t, str) else bytes(t))
        return [_bind_or_connect(sock, e, bind) for e in endpoints]

    def _accept(self, frames: list[bytes]) -> Message | None:
        """Decode and check one received multipart message and track its sequence number;
        None (counted) if it is rejected."""
        if len(frames) != 2:
            self.decoder.reject(
                "bad_frames", f"expected [topic, payload], got {len(frames)} frames"
            )
            return None
        msg = self.decoder.decode(frames[1])
        if msg is None:
            return None
        if topic_of(msg) != frames[0]:
            self.decoder.reject(
                "topic_mismatch", f"topic frame {frames[0][:80]!r} != {topic_of(msg)!r}"
            )
            return None
        self.n_received += 1
        stream = stream_of(msg)
        last = self._last_seq.get(stream)
        if last is not None and msg.seq != last + 1:
            if msg.seq > last + 1:
                self._gaps[stream] = self._gaps.get(stream, 0) + msg.seq - last - 1
            else:
                self._resets[stream] = self._resets.get(stream, 0) + 1
        self._last_seq[stream] = msg.seq
        return msg

    def _drain(self, sock: zmq.Socket) -> int:
        """Move every ready message (at most ``max_drain``) into the queue."""
        n = 0
        while n < self.max_drain:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            msg = self._accept(frames)
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
            seq_gaps=dict(self._gaps),
            seq_resets=dict(self._resets),
            n_auth_denied=keylist.n_denied if keylist else 0,
        )


class Subscriber(_SubscriberCore, _Closes):
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
        _check_plaintext(endpoints, security)
        self._init_core(name, policy, max_queue, max_drain)
        secure = security is not None and security.uses_curve
        self._owner = _Sockets(context, private=secure)
        try:
            self._sock = self._owner.sock = self._owner.ctx.socket(zmq.SUB)
            self.endpoints = self._setup_socket(
                self._owner, self._sock, endpoints, topics or [""], bind, hwm, security
            )
        except BaseException:
            self._owner.close(0)
            raise

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
        """The socket's edge-triggered notification fd (for select/epoll integration):
        when it signals, call ``recv_many(0)`` until it returns ``[]``."""
        return self._sock.getsockopt(zmq.FD)

    def _wait_one(self, deadline_s: float | None) -> Message | None:
        """Block (up to the deadline) for the next accepted message; rejected ones are
        counted and waiting goes on. Uses RCVTIMEO on a blocking receive, which wakes up
        sooner than a poll followed by a receive."""
        sock = self._sock
        while True:
            if deadline_s is None:
                wait_ms = -1
            else:
                wait_ms = int((deadline_s - time.monotonic()) * 1000 + 0.999)
                if wait_ms <= 0:
                    return None
            if wait_ms != self._rcvtimeo_ms:
                sock.rcvtimeo = self._rcvtimeo_ms = wait_ms
            try:
                frames = sock.recv_multipart()
            except zmq.Again:
                return None
            msg = self._accept(frames)
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
            self._drain(self._sock)
            return self.queue.pop()
        return self._wait_one(self._deadline(timeout_s))

    def recv_frames(self, timeout_s: float | None, max_n: int = 10000) -> list[list[bytes]]:
        """Raw ``[topic, payload]`` frame lists as they arrived (no decoding, no queue
        policy): for consumers that store bytes verbatim, such as the recorder. Waits up to
        ``timeout_s`` for the first, then takes what is ready (at most ``max_n``)."""
        sock = self.socket
        wait_ms = -1 if timeout_s is None else max(0, int(timeout_s * 1000))
        if not sock.poll(wait_ms, zmq.POLLIN):
            return []
        out: list[list[bytes]] = []
        while len(out) < max_n:
            try:
                out.append(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return out

    def recv_many(self, timeout_s: float | None = None) -> list[Message]:
        """Everything ready (waiting up to ``timeout_s`` for the first message), after the
        queue policy (keep / coalesce) was applied to it."""
        if not len(self.queue) and not (timeout_s is not None and timeout_s <= 0):
            first = self._wait_one(self._deadline(timeout_s))
            if first is None:
                return []
            self.queue.put(first)
        self._drain(self._sock)
        return self.queue.pop_all()

    def unsubscribe(self, topics: list[str]) -> None:
        """Drop topic subscriptions (the publisher sees it: a clean leave, after which
        :meth:`recv_many` still returns what was already on its way)."""
        for t in topics:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, t.encode())

    def close(self) -> None:
        self._owner.close(SUB_LINGER_MS)

    @property
    def closed(self) -> bool:
        return self._sock.closed


class AsyncSubscriber(_SubscriberCore, _Closes):
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
        _check_plaintext(endpoints, security)
        self._init_core(name, policy, max_queue, max_drain)
        secure = security is not None and security.uses_curve
        self._owner = _Sockets(None, private=secure)
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
        self._drain(self._sock)
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
                self._drain(self._sock)

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


# --------------------------------------------------------------------------- control


class ControlSocket(_Closes):
    """A request/reply control channel: ``server`` = ROUTER (binds; frames arrive as
    ``[peer_id, *frames]`` and go back the same way), ``client`` = DEALER (connects; sends
    and receives bare frames). Used by ``spikefuse agent`` and the launcher that talks to it.

    Security like the rest of the bus: a server with keys is the CURVE server and accepts
    only ``allowed_client_keys`` (ZAP); a client with keys needs the server's public key.
    Non-loopback tcp needs keys unless ``insecure: true``. Never blocks on send: a full or
    unroutable peer makes :meth:`send` return False."""

    def __init__(
        self,
        role: Literal["server", "client"],
        endpoint: str,
        *,
        security: SecurityConfig | None = None,
        hwm: int = 10000,
    ) -> None:
        _check_plaintext([endpoint], security)
        secure = security is not None and security.uses_curve
        self._owner = _Sockets(None, private=secure)
        try:
            if role == "server":
                sock = self._owner.sock = self._owner.ctx.socket(zmq.ROUTER)
                sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting keeps its id
                if secure:
                    public, secret, allowed = _server_keys(security)
                    self._owner.start_auth(allowed)
                    sock.zap_domain = ZAP_DOMAIN.encode()
                    sock.curve_server = True
                    sock.curve_publickey = public
                    sock.curve_secretkey = secret
            elif role == "client":
                sock = self._owner.sock = self._owner.ctx.socket(zmq.DEALER)
                # one id for the socket's life: after a dropped connection the server still
                # knows who is talking (a session survives a network blip)
                sock.setsockopt(zmq.ROUTING_ID, b"c" + os.urandom(15))
                if secure:
                    _apply_client_security(sock, security)
            else:
                raise ConfigError(f"control socket role must be server or client, found {role!r}")
            sock.linger = 0
            sock.sndhwm = hwm
            sock.rcvhwm = hwm
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
            self.endpoint = _bind_or_connect(sock, endpoint, role == "server")
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
