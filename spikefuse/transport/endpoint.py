"""Endpoints: one type for every ZeroMQ address spikefuse binds or connects (no zmq here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic_core import core_schema

from spikefuse.errors import ConfigError

IPC_PATH_MAX = 107
"""Longest ipc:// or unix:// path in bytes (the Unix socket limit, ``sun_path`` minus its
NUL)."""
SCHEMES = ("ipc", "tcp", "inproc", "unix")
_PATH_SCHEMES = ("ipc", "unix")
_LOOPBACK_HOSTS = {"localhost", "::1", "[::1]", "ip6-localhost"}
LocalTransport = Literal["zmq", "unix"]
"""The transport of same-host links (``local_transport``): ``zmq`` (ZeroMQ ``ipc://``) or
``unix`` (spikefuse's own ``unix://``, one wake per hop; no CurveZMQ)."""


class Endpoint(str):
    """A checked endpoint string: ``ipc://path``, ``tcp://host:port``, ``inproc://name``
    (ZeroMQ) or ``unix://path`` (spikefuse's own same-host transport, one wake per hop:
    :mod:`spikefuse.transport.unix`).

    ``Endpoint(text)`` raises :class:`ConfigError` naming what is wrong. It is a ``str``, so
    it goes wherever an endpoint string goes; as a pydantic field type (``endpoint:
    Endpoint | None``) a bad value is a validation error of that field."""

    __slots__ = ()

    def __new__(cls, text: object) -> Endpoint:
        if isinstance(text, Endpoint):
            return text
        if not isinstance(text, str) or "://" not in text:
            raise ConfigError(f"endpoint {text!r} is not of the form scheme://address")
        scheme, _, address = text.partition("://")
        if scheme not in SCHEMES:
            raise ConfigError(f"endpoint {text!r}: scheme must be one of {SCHEMES}")
        if not address:
            raise ConfigError(f"endpoint {text!r}: empty address")
        if scheme == "tcp" and ":" not in address:
            raise ConfigError(f"endpoint {text!r}: tcp needs host:port")
        if scheme in _PATH_SCHEMES and len(address.encode()) > IPC_PATH_MAX:
            raise ConfigError(
                f"endpoint {text!r}: {scheme} path longer than {IPC_PATH_MAX} bytes "
                "(the Unix socket limit); use a shorter run directory"
            )
        if scheme == "unix" and ("\0" in address or address.endswith("/")):
            raise ConfigError(f"endpoint {text!r}: unix needs a socket file path")
        return super().__new__(cls, text)

    @classmethod
    def ipc(cls, run_dir: str | Path, name: str) -> Endpoint:
        """``ipc://<run_dir>/<name>.sock``: the default endpoint of a component on this host."""
        if not name or "/" in name or "\0" in name:
            raise ConfigError(f"endpoint name {name!r} must be non-empty without '/'")
        return cls(f"ipc://{Path(run_dir).absolute() / name}.sock")

    @classmethod
    def unix(cls, run_dir: str | Path, name: str) -> Endpoint:
        """``unix://<run_dir>/<name>.sock``: the same socket file as :meth:`ipc` on
        spikefuse's own same-host transport."""
        return cls("unix://" + cls.ipc(run_dir, name).address)

    @classmethod
    def local(cls, run_dir: str | Path, name: str, transport: LocalTransport = "zmq") -> Endpoint:
        """The default endpoint of process or topic ``name`` on this host: the socket file
        ``<run_dir>/<name>.sock`` over ``transport`` (``zmq``: ``ipc://``, ``unix``:
        ``unix://``). Every default same-host endpoint of spikefuse comes from here."""
        if transport == "unix":
            return cls.unix(run_dir, name)
        if transport == "zmq":
            return cls.ipc(run_dir, name)
        raise ConfigError(f"local_transport must be 'zmq' or 'unix', found {transport!r}")

    @property
    def scheme(self) -> str:
        return self.partition("://")[0]

    @property
    def address(self) -> str:
        return self.partition("://")[2]

    @property
    def ipc_path(self) -> Path | None:
        """The socket file of an ``ipc://`` endpoint (None for the other schemes)."""
        return Path(self.address) if self.scheme == "ipc" else None

    @property
    def socket_path(self) -> Path | None:
        """The socket file of an ``ipc://`` or ``unix://`` endpoint (None for the others)."""
        return Path(self.address) if self.scheme in _PATH_SCHEMES else None

    @property
    def is_local(self) -> bool:
        """True for ipc://, unix://, inproc:// and tcp:// on a loopback address: plaintext
        allowed."""
        if self.scheme != "tcp":
            return True
        host = self.address.rsplit(":", 1)[0]
        host = host.split(";")[-1]  # "source;host" connect syntax: the remote part counts
        return host in _LOOPBACK_HOSTS or host.startswith("127.")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )
