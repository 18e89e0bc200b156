"""Config models of the transport (no zmq here: any config may use these types)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, model_validator

from spikefuse.config import FileConfig, StrictModel, load_model
from spikefuse.transport.endpoint import Endpoint, LocalTransport
from spikefuse.transport.queue import Policy

DEFAULT_RUN_DIR = Path(tempfile.gettempdir()) / "spikefuse"


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


class SameHostConfig(FileConfig):
    """Base of the config of every process that has default endpoints on its host
    (drivers, the core, actuators): the socket files live in ``run_dir``, over
    ``local_transport``. An endpoint named in the config always wins over its default."""

    run_dir: Path = DEFAULT_RUN_DIR
    local_transport: LocalTransport = "zmq"
    """``zmq``: default endpoints are ZeroMQ ``ipc://<run_dir>/<name>.sock``; ``unix``:
    ``unix://<run_dir>/<name>.sock`` (one wake per hop, docs/deploy.md "Same-host
    latency"; no CurveZMQ, so not with ``security`` keys). A launch passes its own
    ``local_transport`` down to every process."""

    @model_validator(mode="after")
    def _unix_without_curve(self) -> SameHostConfig:
        security = getattr(self, "security", None)
        if self.local_transport == "unix" and isinstance(security, SecurityConfig):
            if security.uses_curve:
                raise ValueError(
                    "local_transport: unix carries no CurveZMQ, but security names keys: "
                    "use local_transport: zmq with security (or drop the keys)"
                )
        return self

    def local_endpoint(self, name: str) -> Endpoint:
        """The default endpoint of process or topic ``name`` on this host."""
        return Endpoint.local(self.resolve_path(self.run_dir), name, self.local_transport)


class PublisherConfig(StrictModel):
    endpoint: Endpoint
    bind: bool = True
    hwm: int = Field(10000, ge=1)
    nodrop: bool = True
    security: SecurityConfig | None = None


class SubscriberConfig(StrictModel):
    endpoints: list[Endpoint] = Field(min_length=1)
    topics: list[str] = Field(default_factory=lambda: [""])
    bind: bool = False
    hwm: int = Field(10000, ge=1)
    policy: Policy = "keep"
    max_queue: int = Field(10000, ge=1)
    security: SecurityConfig | None = None


def load_security(path: str | Path | None) -> SecurityConfig | None:
    """A ``SecurityConfig`` YAML file (``--security FILE`` of the command-line tools);
    relative key paths in it follow the file."""
    if path is None:
        return None
    path = Path(path)
    cfg = load_model(SecurityConfig, path)
    return cfg.resolved(lambda p: p if p.expanduser().is_absolute() else path.parent / p)
