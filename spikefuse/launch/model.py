"""Launch files: the processes of one robot, their configs, topics, rates and restart policy.

Example (``launch/demo.yaml``)::

    name: demo
    run_dir: ${SPIKEFUSE_RUN_DIR:-/tmp/spikefuse-demo}   # ipc sockets live here
    processes:
      - name: imu
        kind: driver            # driver | core | actuator | record | exec
        type: imu               # the driver / actuator kind
        config: ../configs/drivers/imu.yaml   # relative to this launch file
        set: [groups.gyro.rate_hz=1000]
        outputs: [sensor/imu]
        restart: on-failure     # never | on-failure | always
      - {name: core, kind: core, config: ../configs/core/demo.yaml,
         inputs: [sensor/imu], outputs: [motor/motors, status/core]}

Paths are resolved relative to the launch file, including a driver file named in ``type``
(``type: my_driver.py:MY_DRIVER``). ``driver``/``core``/``actuator`` processes
get ``--set run_dir=<run_dir>`` and ``--set local_transport=<local_transport>`` (before
their own ``set`` entries) so every socket of one launch lives in one directory, on one
transport.

The transport of every same-host link, in one place (default ``zmq``)::

    local_transport: unix   # zmq: ZeroMQ ipc:// sockets; unix: spikefuse's own unix://
                            # (one wake per hop, docs/deploy.md "Same-host latency")

An endpoint a process names itself (``endpoint=...``, ``inputs.<x>.endpoint=...``, a
recorder's ``--endpoint``) wins over the default; links between hosts stay tcp. ``unix``
carries no CurveZMQ, so it does not go with ``security``. A ``record`` process without
``--endpoint`` in its ``args`` records the publishers of its ``inputs`` on its host.

CPU placement per process (applied between fork and exec, so every thread follows;
docs/deploy.md has the measured effect)::

      - {name: core, kind: core, config: core.yaml, cpu: [1], sched: {policy: fifo, priority: 10}}

CurveZMQ for the whole system, in one place::

    security:
      key_dir: keys/      # spikefuse keygen <name> --dir keys/  for every process name,
                          # plus 'bus' (the receiving key) and 'launch' (its status output)

Every driver, core, actuator and record process then gets ``security`` with its own key
pair, the shared receiving pair ``bus`` and the allow-list of every process's public key
(``--set security=...``; ``record`` gets ``--security FILE``). ``exec`` processes configure
their own sockets.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from spikefuse.config import (
    StrictModel,
    apply_overrides,
    line_of,
    load_yaml,
    validate_data,
)
from spikefuse.errors import ConfigError
from spikefuse.launch.placement import SchedSpec, check_cpus
from spikefuse.transport.config import SameHostConfig
from spikefuse.transport.endpoint import Endpoint

_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"
_TOPIC_RE = re.compile(r"^(sensor|motor|status)/[A-Za-z0-9_.\-]+$")
Kind = Literal["driver", "core", "actuator", "record", "exec"]


class ProcessSpec(StrictModel):
    name: str = Field(pattern=_NAME)
    kind: Kind
    type: str | None = None
    """driver kind (imu, camera, ...) or actuator kind (console, serial, ...)"""
    config: Path | None = None
    set: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    """extra command-line arguments (record: e.g. [-o, run.mcap, --endpoint, ...]);
    for kind exec: the whole command"""
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    restart: Literal["never", "on-failure", "always"] = "on-failure"
    max_restarts: int = Field(5, ge=0, le=1_000_000)
    backoff_s: float = Field(0.1, ge=0.0, le=3600.0)
    backoff_max_s: float = Field(5.0, ge=0.0, le=3600.0)
    required: bool = True
    stop_timeout_s: float = Field(1.5, gt=0.0, le=600.0)
    ends_launch: bool = False
    """when this process finishes by itself (exit code 0), the whole launch stops (e.g. a
    simulation that ends after a lap)"""
    host: str | None = Field(default=None, pattern=_NAME)
    """the ``hosts`` entry whose agent runs this process (none: the launcher's machine)"""
    cpu: list[int] | None = None
    """the CPUs the process (every thread of it) may run on, e.g. [0]; default: any"""
    sched: SchedSpec | None = None
    """scheduling policy (other | fifo | rr | batch | idle) and, for fifo/rr, priority 1-99"""

    _v_cpu = field_validator("cpu")(classmethod(lambda cls, v: check_cpus(v)))

    @field_validator("inputs", "outputs")
    @classmethod
    def _topics(cls, v: list[str]) -> list[str]:
        for t in v:
            if "://" in t:
                from spikefuse.transport.endpoint import Endpoint

                try:
                    Endpoint(t)
                except ConfigError as exc:
                    raise ValueError(str(exc)) from None
            elif not _TOPIC_RE.match(t):
                raise ValueError(
                    f"expected a topic like sensor/<name>, motor/<name>, status/<name> "
                    f"or an endpoint scheme://address, found {t!r}"
                )
        return v

    @model_validator(mode="after")
    def _check(self) -> ProcessSpec:
        if self.kind in ("driver", "actuator") and not self.type:
            raise ValueError(f"a {self.kind} process needs 'type' (its {self.kind} kind)")
        if self.kind in ("core", "record", "exec") and self.type:
            raise ValueError(f"'type' does not apply to a {self.kind} process")
        if self.kind == "core" and self.config is None:
            raise ValueError("a core process needs 'config'")
        if self.kind == "exec" and not self.args:
            raise ValueError("an exec process needs 'args' (the command)")
        return self


KEYED_KINDS = ("driver", "core", "actuator", "record")
CONFIGURED_KINDS = ("driver", "core", "actuator")
"""The kinds whose config the launch completes (run_dir, local_transport, security)."""
BUS_KEY = "bus"
LAUNCH_KEY = "launch"


class LaunchSecurity(StrictModel):
    """CurveZMQ for every process of the launch (see the module docstring)."""

    key_dir: Path
    """Folder of the key pairs (``spikefuse keygen``), relative to the launch file."""


class HostSpec(StrictModel):
    """One machine of a multi-host launch: its ``spikefuse agent`` (docs/multihost.md)."""

    endpoint: Endpoint
    """the agent's control endpoint, e.g. tcp://10.0.0.2:7600"""
    public_key: Path | None = None
    """the agent's public key file (relative to the launch file); required off loopback"""
    address: str | None = None
    """the interface address this host's cross-host sockets bind to (default: the host of
    ``endpoint``)"""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: Endpoint) -> Endpoint:
        if v.scheme != "tcp":
            raise ValueError(f"expected a tcp:// agent endpoint, found {v!r}")
        return v

    def bind_address(self) -> str:
        return self.address or self.endpoint.address.rsplit(":", 1)[0]


class LaunchFile(SameHostConfig):
    name: str = Field("launch", pattern=_NAME)
    security: LaunchSecurity | None = None
    hosts: dict[str, HostSpec] = Field(default_factory=dict)
    """name -> agent of each other machine; processes choose one with ``host:``"""
    local_address: str = "127.0.0.1"
    """the address this machine's cross-host sockets bind to (processes without ``host``)"""
    data_port: int = Field(7700, ge=1024, le=65000)
    """cross-host sockets use tcp ports data_port + the process's index"""
    heartbeat_timeout_s: float = Field(2.0, gt=0.0, le=3600.0)
    """an agent that does not answer for this long is lost (and stops its processes when
    the launcher is silent for this long)"""
    duration_s: float | None = Field(default=None, gt=0.0)
    status_period_s: float = Field(1.0, gt=0.0, le=3600.0)
    processes: list[ProcessSpec] = Field(min_length=1)

    _lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr("")

    @model_validator(mode="after")
    def _unique(self) -> LaunchFile:
        seen = set()
        for p in self.processes:
            if p.name in seen:
                raise ValueError(f"duplicate process name '{p.name}'")
            seen.add(p.name)
        return self

    def where(self, *loc: str | int) -> str:
        field = ".".join(str(x) for x in loc)
        line = self._lines.get(field)
        parent = field
        while not line and "." in parent:  # a missing key: the line of its block
            parent = parent.rsplit(".", 1)[0]
            line = self._lines.get(parent)
        return f"{self._source}:{line}: {field}" if line else f"{self._source}: {field}"

    def process_type(self, p: ProcessSpec) -> str | None:
        """``p.type`` with a driver file (``file.py:NAME``) made absolute against this launch
        file's folder, like every other path in it."""
        if p.type is None:
            return None
        head, sep, attr = p.type.rpartition(":")
        if sep and head.endswith(".py"):
            return f"{self.resolve_path(head)}:{attr}"
        return p.type

    def command(self, p: ProcessSpec) -> list[str]:
        """The argv that starts process ``p``."""
        if p.kind == "exec":
            return list(p.args)
        # -P: children run in the launch file's folder; without it ``-m`` would import a
        # ``spikefuse`` folder there (a source checkout) instead of the installed package
        argv = [sys.executable, "-P", "-m", "spikefuse", p.kind]
        if p.type:
            argv.append(self.process_type(p))
        if p.config is not None:
            argv += ["--config", str(self.resolve_path(p.config))]
        for s in [*self.launch_sets(p), *p.set]:
            argv += ["--set", s]
        if p.kind == "record" and self.security is not None:
            argv += ["--security", str(self.security_file(p.name))]
        if p.kind == "record" and "--endpoint" not in p.args:
            from spikefuse.launch.check import recorder_endpoints

            argv += [x for e in recorder_endpoints(self, p) for x in ("--endpoint", e)]
        return argv + list(p.args)

    def launch_sets(self, p: ProcessSpec) -> list[str]:
        """What the launch sets in the config of a driver, core or actuator before the
        process's own ``set``: its run_dir, local_transport and security."""
        if p.kind not in CONFIGURED_KINDS:
            return []
        sets = [
            f"run_dir={self.resolve_path(self.run_dir)}",
            f"local_transport={self.local_transport}",
        ]
        security = self.security_for(p.name)
        if security is not None:
            sets.append(f"security={json.dumps(security)}")
        return sets

    def status_endpoint(self) -> Endpoint:
        """Where the launcher publishes its Status (``status/launch-<name>``)."""
        return self.local_endpoint(f"launch-{self.name}")

    def key_names(self) -> list[str]:
        """Every key pair the launch's ``security`` needs in ``key_dir``."""
        keyed = [p.name for p in self.processes if p.kind in KEYED_KINDS]
        return [BUS_KEY, LAUNCH_KEY, *keyed]

    def security_for(self, name: str) -> dict[str, object] | None:
        """The ``security`` block of process ``name`` (or of the launcher, ``launch``):
        its own key pair to send with, the shared ``bus`` pair to receive with, and every
        process of the launch as an allowed sender."""
        if self.security is None:
            return None
        key_dir = self.resolve_path(self.security.key_dir)
        senders = [n for n in self.key_names() if n != BUS_KEY]
        return {
            "secret_key_file": str(key_dir / f"{name}.key_secret"),
            "server_public_key_file": str(key_dir / f"{BUS_KEY}.key"),
            "server_secret_key_file": str(key_dir / f"{BUS_KEY}.key_secret"),
            "allowed_client_keys": [str(key_dir / f"{n}.key") for n in senders],
        }

    def security_file(self, name: str) -> Path:
        """Where the launcher writes the security YAML of a process that takes a file."""
        return self.resolve_path(self.run_dir) / f"{name}.security.yaml"

    def write_security_files(self) -> None:
        """Write the security file of every ``record`` process (the others get --set)."""
        for p in self.processes:
            if p.kind == "record" and self.security is not None:
                path = self.security_file(p.name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(self.security_for(p.name)), encoding="utf-8")


def _route_overrides(data: Any, overrides: list[str]) -> list[str]:
    """``<process>.key=value`` goes to that process's ``set`` list; the rest is returned."""
    rest = []
    procs = data.get("processes") if isinstance(data, dict) else None
    by_name = {p.get("name"): p for p in procs or [] if isinstance(p, dict)}
    for item in overrides:
        head, dot, tail = item.partition(".")
        if dot and head in by_name and "=" in tail:
            by_name[head].setdefault("set", [])
            if isinstance(by_name[head]["set"], list):
                by_name[head]["set"].append(tail)
                continue
        rest.append(item)
    return rest


def _record_lines(cfg: LaunchFile, data: Any) -> None:
    lines = {}
    procs = data.get("processes") if isinstance(data, dict) else None
    for i, p in enumerate(procs or []):
        if not isinstance(p, dict):
            continue
        for k in p:
            line = line_of(data, ("processes", i, k))
            if line:
                lines[f"processes[{i}].{k}"] = line
        lines[f"processes[{i}]"] = line_of(data, ("processes", i)) or 0
    hosts = data.get("hosts") if isinstance(data, dict) else None
    for h, spec in (hosts or {}).items() if isinstance(hosts, dict) else ():
        lines[f"hosts.{h}"] = line_of(data, ("hosts", h)) or 0
        for k in spec if isinstance(spec, dict) else ():
            lines[f"hosts.{h}.{k}"] = line_of(data, ("hosts", h, k)) or 0
    for k in ("security", "hosts", "local_address", "data_port", "local_transport"):
        lines[k] = line_of(data, (k,)) or 0
    cfg._lines = lines


def _check_transport(cfg: LaunchFile) -> None:
    if cfg.local_transport == "unix" and cfg.security is not None:
        raise ConfigError(
            "expected zmq with 'security' (unix:// carries no CurveZMQ: its sockets are "
            "owner-only and check the peer's uid instead), found unix; drop one of the two",
            cfg.where("local_transport"),
        )


def load_launch(
    path: str | Path, overrides: list[str] | None = None, check_configs: bool = True
) -> LaunchFile:
    """Load and validate a launch file (and, with ``check_configs``, every process's config
    file and topic wiring). Every error names file:line, the field, expected and found."""
    path = Path(path)
    data = load_yaml(path)
    if data is None:
        raise ConfigError("empty launch file", str(path))
    if overrides:
        data = apply_overrides(data, _route_overrides(data, list(overrides)))
    cfg = validate_data(LaunchFile, data, str(path))
    cfg.set_base_dir(path.resolve().parent)
    cfg._source = str(path)
    _record_lines(cfg, data)
    _check_transport(cfg)
    if check_configs:
        from spikefuse.launch.check import check_launch

        check_launch(cfg)
    return cfg
