"""``unix://`` endpoints: pub/sub over AF_UNIX SOCK_SEQPACKET, one wake per hop.

ZeroMQ hands each message from the sender's thread to its I/O thread, to the receiver's
I/O thread, to the receiver's thread. Here the sender's ``send`` syscall wakes the
receiver's ``poll`` directly: no thread in between (docs/protocol.md, "unix:// endpoints").

Wire format (the socket keeps message boundaries: one datagram is one message):

* publisher -> subscriber: ``b"M"``, the topic length (u32 little-endian), the topic, the
  payload. A message longer than :data:`INLINE_MAX_BYTES` goes as a ``b"F"`` datagram
  carrying a memfd (SCM_RIGHTS) that holds the same ``M`` datagram.
* subscriber -> publisher: ``b"\\x01" + prefix`` subscribes, ``b"\\x00" + prefix``
  unsubscribes (the notices of ZeroMQ's XPUB).

The publisher binds (the socket file is created owner-only, 0600; a stale file whose
process is gone is replaced, a live one is an error); subscribers connect, in any start
order, and reconnect every :data:`RECONNECT_S` while the publisher is away (in a thread
that carries no message: it only connects). Both sides
check the peer's uid (SO_PEERCRED) and refuse another user (counted, logged once per uid).
A subscriber's queue is its socket's buffer (SO_SNDBUF of the publisher's side, bytes, not
messages): when it is full the message is a drop for that subscriber, counted, and the
publisher never blocks."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import stat
import struct
import threading
from pathlib import Path

import zmq

from spikefuse.errors import BusError, ConfigError
from spikefuse.transport._unixfast import DatagramReader, DatagramSender
from spikefuse.transport.endpoint import Endpoint

log = logging.getLogger(__name__)

INLINE_MAX_BYTES = 64 * 1024
"""Longest message sent inline in its datagram; longer ones travel in a memfd."""
SNDBUF_BYTES = 4 * 1024 * 1024
"""SO_SNDBUF asked for on the publisher's side of each connection (the kernel caps it at
``net.core.wmem_max``): the subscriber's queue, in bytes."""
RECONNECT_S = 0.1
"""A subscriber retries a publisher that is not there (yet, or any more) this often."""
BACKLOG = 128
MAX_MSG_BYTES = 64 * 1024 * 1024
"""Largest message a subscriber takes from a memfd (as ZMQ_MAXMSGSIZE of the zmq side)."""

_HEAD = struct.Struct("<cI")
_INLINE = b"M"
_IN_FD = b"F"
_SUBSCRIBE = b"\x01"
_UNSUBSCRIBE = b"\x00"
_CRED = struct.Struct("3i")
_SEND_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)  # ints: an enum op costs a us
_FULL = (BlockingIOError, InterruptedError)
_GONE_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED)


def split_endpoints(endpoints: list[str]) -> tuple[list[str], list[Endpoint]]:
    """(the ZeroMQ endpoints, the ``unix://`` ones), each checked."""
    eps = [Endpoint(e) for e in endpoints]
    return [e for e in eps if e.scheme != "unix"], [e for e in eps if e.scheme == "unix"]


def check_unix_options(endpoints: list[Endpoint], security, bind: bool, publisher: bool) -> None:
    """CURVE keys and the reversed roles (a binding subscriber, a connecting publisher) do
    not apply to ``unix://``: a clear error naming the setting."""
    if not endpoints:
        return
    if security is not None and security.uses_curve:
        raise ConfigError(
            f"endpoint {endpoints[0]}: CurveZMQ keys do not apply to unix:// endpoints (same "
            "host only; the peer's uid is checked instead): use ipc:// or tcp:// for a socket "
            "with keys, or drop the keys",
            "security.secret_key_file",
        )
    if bind != publisher:
        role = "subscriber cannot bind" if publisher is False else "publisher cannot connect"
        raise ConfigError(
            f"endpoint {endpoints[0]}: a unix:// {role} (the publisher binds, subscribers "
            "connect); use ipc:// for fan-in",
            "bind",
        )


def _peer_uid(sock: socket.socket) -> int:
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[1]


class _Refusals:
    """Peers of another user refused: counted, each uid logged once."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.n_denied = 0
        self._logged: set[int] = set()

    def allowed(self, sock: socket.socket, where: str) -> bool:
        uid = _peer_uid(sock)
        if uid == os.getuid():
            return True
        self.n_denied += 1
        if uid not in self._logged and len(self._logged) < 1000:
            self._logged.add(uid)
            log.warning("%s %s: refused a peer of uid %d (not this user)", self.what, where, uid)
        return False


def endpoint_of_socket_file(path: str | Path) -> Endpoint:
    """``unix://path`` if a unix:// publisher listens there, else ``ipc://path`` (ZeroMQ's
    stream socket refuses a SEQPACKET peer; a stale file stays ``ipc://``, as before): how
    ``echo``, ``top`` and ``view`` name the ``*.sock`` files of a run folder."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(str(path))
    except OSError:
        return Endpoint(f"ipc://{path}")
    finally:
        probe.close()
    return Endpoint(f"unix://{path}")


# ------------------------------------------------------------------------- publisher


def _bind_path(path: Path) -> socket.socket:
    """A listening SEQPACKET socket at ``path``, mode 0600; a stale socket file (its
    process gone) is replaced, a live one or a file of another kind is an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BusError(f"cannot bind unix://{path}: {exc}") from None
    return sock


def _clear_stale(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BusError(f"cannot bind unix://{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # nobody listens: a dead process's file
        return
    except FileNotFoundError:
        return
    except OSError as exc:  # e.g. a ZeroMQ ipc:// listener (a stream socket), or no access
        raise BusError(
            f"cannot bind unix://{path}: a socket there is in use or not ours ({exc.strerror})"
        ) from None
    finally:
        probe.close()
    raise BusError(f"cannot bind unix://{path}: another process is publishing there")


class _Peer:
    __slots__ = ("sock", "prefixes", "matches")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.prefixes: dict[bytes, int] = {}
        self.matches: dict[bytes, bool] = {}

    def wants(self, topic: bytes) -> bool:
        hit = self.matches.get(topic)
        if hit is None:
            hit = self.matches[topic] = any(topic.startswith(p) for p in self.prefixes)
        return hit


class UnixPublisherSocket:
    """The publisher's side: the listening socket, its subscribers and their topics.

    ``send`` first takes in what changed (new subscribers, (un)subscriptions, leavers:
    one ``epoll_wait(0)``), then sends one datagram to each subscriber of the topic; a full
    one misses it. :meth:`retry` sends the last missed message again to only those that
    missed it (a retry never duplicates)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.path = Path(endpoint.address)
        self._listen = _bind_path(self.path)
        self._ino = self.path.stat().st_ino
        self._epoll = select.epoll()
        self._epoll.register(self._listen.fileno(), select.EPOLLIN)
        self.peers: dict[int, _Peer] = {}
        self.refusals = _Refusals("publisher")
        self.n_subscriptions = 0
        self.n_peer_drops = 0
        """(message, subscriber) pairs lost to a full subscriber"""
        self._heads: dict[bytes, bytes] = {}
        self._targets: dict[bytes, tuple[list[_Peer], tuple[int, ...]]] = {}
        """topic -> its subscribers and their fds (emptied whenever a peer or a
        subscription changes)"""
        self._sender = DatagramSender(self._epoll.fileno())
        self._missed: tuple[bytes, bytes, list[_Peer]] | None = None

    # -- taking in what the subscribers did

    def service(self, timeout_s: float = 0.0) -> bool:
        """Accept subscribers, read their notices, drop leavers (waiting up to
        ``timeout_s`` for something to happen); True if anything did."""
        events = self._epoll.poll(timeout_s)
        lfd = self._listen.fileno()
        for fd, ev in events:
            if fd == lfd:
                self._accept()
            else:
                self._read_notices(fd, ev)
        return bool(events)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listen.accept()
            except _FULL:
                return
            except OSError as exc:  # EMFILE and the like: leave it queued, log
                log.warning("publisher unix://%s: accept failed: %s", self.path, exc)
                return
            if not self.refusals.allowed(sock, f"unix://{self.path}"):
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
            self.peers[sock.fileno()] = _Peer(sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            self._targets.clear()

    def _read_notices(self, fd: int, ev: int) -> None:
        peer = self.peers.get(fd)
        if peer is None:
            return
        while True:
            try:
                note = peer.sock.recv(65536)
            except _FULL:
                break
            except OSError:
                note = b""
            if not note:  # the subscriber left
                self._drop_peer(peer)
                return
            self._note(peer, note[:1], note[1:])

    def _note(self, peer: _Peer, kind: bytes, prefix: bytes) -> None:
        if kind == _SUBSCRIBE:
            self.n_subscriptions += 1
            peer.prefixes[prefix] = peer.prefixes.get(prefix, 0) + 1
        elif kind == _UNSUBSCRIBE and peer.prefixes.get(prefix, 0) > 0:
            peer.prefixes[prefix] -= 1
            if not peer.prefixes[prefix]:
                del peer.prefixes[prefix]
        peer.matches.clear()
        self._targets.clear()

    def _drop_peer(self, peer: _Peer) -> None:
        fd = peer.sock.fileno()
        if self.peers.pop(fd, None) is not None:
            self._epoll.unregister(fd)
        peer.sock.close()
        self._targets.clear()

    # -- what the Publisher asks

    def n_subscribed(self, topic: bytes) -> int:
        return sum(1 for p in self.peers.values() if p.wants(topic))

    def prefixes(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for p in self.peers.values():
            for k in p.prefixes:
                out[k] = out.get(k, 0) + 1
        return out

    def send(self, topic: bytes, payload: bytes) -> bool:
        """One datagram to every subscriber of ``topic``; False if one (or more) missed it."""
        if self._sender.pending():
            self.service()
        self._missed = None
        targets = self._targets.get(topic)
        if targets is None:
            peers = [p for p in self.peers.values() if p.wants(topic)]
            targets = self._targets[topic] = (peers, tuple(p.sock.fileno() for p in peers))
        return self._send_to(targets[0], targets[1], topic, payload)

    def retry(self) -> bool:
        """Send the message of the last :meth:`send` that returned False again, to the
        subscribers that missed it and are still there; False if one misses it again."""
        missed, self._missed = self._missed, None
        if missed is None:
            return True
        topic, payload, peers = missed
        peers = [p for p in peers if p.sock.fileno() in self.peers]
        return self._send_to(peers, tuple(p.sock.fileno() for p in peers), topic, payload)

    def _send_to(
        self, targets: list[_Peer], fds: tuple[int, ...], topic: bytes, payload: bytes
    ) -> bool:
        if not targets:
            return True
        head = self._heads.get(topic)
        if head is None:
            head = self._heads[topic] = _HEAD.pack(_INLINE, len(topic)) + topic
        if len(head) + len(payload) > INLINE_MAX_BYTES:
            lost = self._send_memfd(targets, head + payload)
        else:
            failed = self._sender.send(fds, head, payload)
            lost = [] if failed is None else self._failed(targets, failed)
        if lost:
            self.n_peer_drops += len(lost)
            self._missed = (topic, payload, lost)
            return False
        return True

    def _failed(self, targets: list[_Peer], failed: list[tuple[int, int]]) -> list[_Peer]:
        """The subscribers that missed a datagram because they were full; those that left
        (not a drop: nobody is there to miss it) or failed otherwise are dropped."""
        lost = []
        for k, err in failed:
            peer = targets[k]
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                lost.append(peer)
            elif err in _GONE_ERRNOS:
                self._drop_peer(peer)
            else:
                log.warning(
                    "publisher unix://%s: send failed, subscriber dropped: %s",
                    self.path,
                    os.strerror(err),
                )
                self._drop_peer(peer)
        return lost

    def _send_one(self, peer: _Peer, data: bytes, anc) -> bool:
        try:
            peer.sock.sendmsg([data], anc, _SEND_FLAGS)
        except OSError as exc:
            return not self._failed([peer], [(0, exc.errno)])
        return True

    def _send_memfd(self, targets: list[_Peer], data: bytes) -> list[_Peer]:
        fd = os.memfd_create("spikefuse-msg", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            return [p for p in targets if not self._send_one(p, _IN_FD, anc)]
        finally:
            os.close(fd)

    def wait_writable(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until every subscriber of the last missed message can
        take more (True at once if none missed one)."""
        missed = self._missed
        if missed is None:
            return True
        poller = select.poll()
        for p in missed[2]:
            if p.sock.fileno() in self.peers:
                poller.register(p.sock.fileno(), select.POLLOUT)
        return bool(poller.poll(max(0.0, timeout_s) * 1000))

    def close(self) -> None:
        for peer in list(self.peers.values()):
            self._drop_peer(peer)
        self._epoll.close()
        self._listen.close()
        try:  # only our own file: a successor may have bound the path already
            if self.path.stat().st_ino == self._ino:
                self.path.unlink()
        except FileNotFoundError:
            pass

    @property
    def closed(self) -> bool:
        return self._listen.fileno() == -1


# ------------------------------------------------------------------------ subscriber


class _Link:
    """One subscriber connection to one ``unix://`` publisher."""

    __slots__ = ("endpoint", "path", "sock")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.path = endpoint.address
        self.sock: socket.socket | None = None


def _connect(link: _Link, topics: tuple[bytes, ...], refusals: _Refusals) -> socket.socket | None:
    """A connected, subscribed, non-blocking socket to ``link``'s publisher, or None (not
    there, or of another user)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(link.path)
        if refusals.allowed(sock, str(link.endpoint)):
            sock.setblocking(False)
            for t in topics:
                sock.send(_SUBSCRIBE + t, _SEND_FLAGS)
            return sock
    except OSError:
        pass
    sock.close()
    return None


class _Connector:
    """Connects the links that are down, in a thread of its own, every :data:`RECONNECT_S`
    until all are up (as ZeroMQ's I/O thread does): a subscriber connects whether or not it
    is waiting. It carries no message; a connected socket is handed over by :meth:`take`,
    and :attr:`wake_fd` is readable while one waits to be taken."""

    def __init__(self, topics: list[bytes], refusals: _Refusals) -> None:
        self._topics = topics
        self._refusals = refusals
        self._lock = threading.Lock()
        self._down: list[_Link] = []
        self._done: list[tuple[_Link, socket.socket, tuple[bytes, ...]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.wake_fd, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def add(self, link: _Link) -> None:
        with self._lock:
            self._down.append(link)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"unix-connect {link.endpoint}", daemon=True
                )
                self._thread.start()

    def take(self) -> list[tuple[_Link, socket.socket, tuple[bytes, ...]]]:
        """The links connected since the last call (with the topics they subscribed)."""
        try:
            os.read(self.wake_fd, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            done, self._done = self._done, []
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                todo = list(self._down)
            for link in todo:
                topics = tuple(self._topics)
                sock = _connect(link, topics, self._refusals)
                if sock is not None:
                    with self._lock:
                        self._down.remove(link)
                        self._done.append((link, sock, topics))
                    with contextlib.suppress(BlockingIOError):
                        os.write(self._wake_w, b"\0")
            with self._lock:
                if not self._down:
                    self._thread = None
                    return
            self._stop.wait(RECONNECT_S)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(5.0)
        for _, sock, _ in self.take():
            sock.close()
        os.close(self.wake_fd)
        os.close(self._wake_w)


class UnixLinks:
    """The connections of one subscriber to its ``unix://`` publishers: connecting and
    reconnecting (:class:`_Connector`), subscriptions, waiting (with a ZeroMQ socket in the
    same poll) and receiving one datagram at a time without blocking."""

    def __init__(self, endpoints: list[Endpoint], topics: list[bytes]) -> None:
        self.links = [_Link(e) for e in endpoints]
        self.topics = list(topics)
        self.refusals = _Refusals("subscriber")
        self.n_connects = 0
        self._reader = DatagramReader(INLINE_MAX_BYTES + 16, _INLINE, _HEAD.size, 16)
        self._by_fd: dict[int, _Link] = {}
        self._ready: list[_Link] = []
        self._poller: select.poll | zmq.Poller | None = None
        self._zsock: zmq.Socket | None = None
        self._connector = _Connector(self.topics, self.refusals)
        for link in self.links:  # at once: a publisher already there is there from now on
            sock = _connect(link, tuple(self.topics), self.refusals)
            if sock is None:
                self._connector.add(link)
            else:
                self._adopt(link, sock, tuple(self.topics))

    # -- connections

    def _adopt(self, link: _Link, sock: socket.socket, topics: tuple[bytes, ...]) -> None:
        link.sock = sock
        self._by_fd[sock.fileno()] = link
        self.n_connects += 1
        self._poller = None
        for t in topics:
            if t not in self.topics:  # unsubscribed while it was connecting
                self._send_note(link, _UNSUBSCRIBE + t)

    def _lost(self, link: _Link) -> None:
        sock = link.sock
        if sock is None:
            return
        self._by_fd.pop(sock.fileno(), None)
        sock.close()
        link.sock = None
        self._poller = None
        self._ready = [r for r in self._ready if r is not link]
        self._connector.add(link)  # at once: a restarted publisher may be there already

    def _send_note(self, link: _Link, note: bytes) -> None:
        try:
            link.sock.send(note, _SEND_FLAGS)
        except OSError:
            self._lost(link)

    def unsubscribe(self, topics: list[bytes]) -> None:
        for t in topics:
            if t in self.topics:
                self.topics.remove(t)
            for link in self.links:
                if link.sock is not None:
                    self._send_note(link, _UNSUBSCRIBE + t)

    # -- waiting

    def _make_poller(self, zsock: zmq.Socket | None):
        fds = [self._connector.wake_fd, *self._by_fd]
        if zsock is None:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
        else:
            poller = zmq.Poller()
            poller.register(zsock, zmq.POLLIN)
            for fd in fds:
                poller.register(fd, zmq.POLLIN)
        self._zsock = zsock
        return poller

    def poll(self, timeout_ms: float, zsock: zmq.Socket | None = None) -> tuple[bool, bool]:
        """Wait up to ``timeout_ms`` (negative: no limit) for a datagram on a link or a
        message on ``zsock`` (a ZeroMQ socket waited on in the same poll); returns
        (a link is ready, ``zsock`` is ready). A link that connected meanwhile is taken in
        (and waited on from then on)."""
        if self._poller is None or self._zsock is not zsock:
            self._poller = self._make_poller(zsock)
        events = self._poller.poll(None if timeout_ms < 0 else timeout_ms)
        z_ready = False
        ready = []
        for fd, _ in events:
            if fd is zsock:
                z_ready = True
            elif (link := self._by_fd.get(fd)) is not None:
                ready.append(link)
            elif fd == self._connector.wake_fd:
                for link, sock, topics in self._connector.take():
                    self._adopt(link, sock, topics)
                    ready.append(link)  # what it sent already
        self._ready = ready
        return bool(ready), z_ready

    # -- receiving

    def recv_ready(self) -> list[bytes] | None:
        """The next datagram of a link the last :meth:`poll` found ready, as ``[topic,
        payload]`` (a malformed one as a list of another length); None when they are
        drained."""
        ready = self._ready
        while ready:
            link = ready[0]
            frames = self._recv(link)
            if frames is not None:
                return frames
            ready.pop(0)
        return None

    def _recv(self, link: _Link) -> list[bytes] | None:
        sock = link.sock
        if sock is None:
            return None
        try:
            got = self._reader.recv(sock.fileno())
        except OSError:
            got = b""
        if type(got) is list:
            return got
        if got is None:
            return None
        if got == b"":  # the publisher went away (EOF)
            self._lost(link)
            return None
        return self._from_memfd(got, str(link.endpoint))

    def _from_memfd(self, fds: tuple[int, ...], where: str) -> list[bytes]:
        try:
            if len(fds) != 1:
                return []
            size = os.fstat(fds[0]).st_size
            if size > MAX_MSG_BYTES:
                log.warning(
                    "subscriber %s: a %d-byte message refused (limit %d)",
                    where,
                    size,
                    MAX_MSG_BYTES,
                )
                return []
            return self._reader.split(os.pread(fds[0], size, 0))
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        self._connector.close()
        for link in self.links:
            if link.sock is not None:
                link.sock.close()
                link.sock = None
        self._by_fd.clear()
        self._ready = []
        self._poller = None

    @property
    def n_connected(self) -> int:
        return len(self._by_fd)
