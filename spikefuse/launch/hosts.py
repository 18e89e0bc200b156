"""Multi-host launch files: which process runs where, and the sockets between hosts.

A process with ``host: <name>`` runs under the ``spikefuse agent`` of ``hosts.<name>``;
one without runs on the launcher's machine. Processes on one host keep their ipc sockets
(in that host's run folder). A topic whose producer and a consumer sit on different hosts
goes over tcp: the producer binds ``tcp://<its host's address>:<port>`` (``data_port`` +
2 x its index, +1 for a second socket of one process) and
every consumer of it connects there (a driver/core/actuator gets ``--set endpoint=...``,
a core ``--set inputs.<input>.endpoint=...`` for each graph input fed by that sensor, a
recorder ``--endpoint ...``). With ``security``, the launcher sends each agent the key
files its processes name (their own pair, the shared ``bus`` pair, every public key)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from spikefuse.errors import ConfigError
from spikefuse.launch.model import LaunchFile, ProcessSpec
from spikefuse.transport.endpoint import Endpoint

LOCAL = "local"
"""How the launcher's own machine is named in messages and tables."""
PRODUCER_KEYS: dict[tuple[str, str], tuple[str, int]] = {
    ("driver", ""): ("endpoint", 0),  # sensor/<name> and status/<name>: one publisher
    ("core", ""): ("endpoint", 0),  # motor/<actuator> and status/<core>
    ("actuator", "status/"): ("status_endpoint", 0),
    ("actuator", "motor/"): ("setpoint_endpoint", 1),  # the sim actuator's set-points
}
"""(kind, topic prefix) -> (the config key of the publisher of that topic, its port slot)"""
CONSUMER_KEYS: dict[tuple[str, str], str] = {
    ("actuator", "motor/"): "endpoint",
    ("driver", "motor/"): "setpoint_endpoint",  # the sim driver reads its wheels' set-points
    ("driver", "status/"): "report.core_endpoint",  # ... and the core's status (its report)
}
"""(kind, topic prefix) -> the config key naming the endpoint a consumer connects to (the
core and the recorder are handled apart: per graph input, and as ``--endpoint``)"""
PORT_SLOTS = 2


def host_of(p: ProcessSpec) -> str:
    return p.host or LOCAL


def is_multihost(cfg: LaunchFile) -> bool:
    return any(p.host for p in cfg.processes)


def address_of(cfg: LaunchFile, host: str) -> str:
    return cfg.local_address if host == LOCAL else cfg.hosts[host].bind_address()


def producers(cfg: LaunchFile) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, p in enumerate(cfg.processes):
        for t in p.outputs:
            out.setdefault(t, i)
    return out


@dataclass
class Wiring:
    """Extra ``--set`` entries and arguments per process index for cross-host topics."""

    sets: dict[int, list[str]] = field(default_factory=dict)
    args: dict[int, list[str]] = field(default_factory=dict)
    endpoints: dict[tuple[int, str], str] = field(default_factory=dict)
    """(producer index, config key) -> its tcp endpoint"""


def data_endpoint(cfg: LaunchFile, i: int, slot: int = 0) -> str:
    host = host_of(cfg.processes[i])
    return f"tcp://{address_of(cfg, host)}:{cfg.data_port + PORT_SLOTS * i + slot}"


def _lookup(table: dict, kind: str, topic: str):
    return table.get((kind, topic[: topic.index("/") + 1]), table.get((kind, "")))


def wiring(cfg: LaunchFile) -> Wiring:
    """The tcp rewiring of every topic that crosses hosts (see the module docstring): a
    producer read from another host binds tcp, and then every reader of that socket, on
    any host, connects there."""
    w = Wiring()
    made_by = producers(cfg)
    edges = [
        (j, t, made_by[t])
        for j, c in enumerate(cfg.processes)
        for t in sorted(c.inputs, key=lambda t: not t.startswith("sensor/"))
        if t in made_by
    ]
    for j, t, i in edges:
        if host_of(cfg.processes[i]) != host_of(cfg.processes[j]):
            _producer_endpoint(cfg, w, i, t)
    for j, t, i in edges:
        found = _lookup(PRODUCER_KEYS, cfg.processes[i].kind, t)
        if found is not None and (i, found[0]) in w.endpoints:
            _connect_consumer(cfg, w, j, t, w.endpoints[(i, found[0])])
    return w


def _producer_endpoint(cfg: LaunchFile, w: Wiring, i: int, topic: str) -> str:
    p = cfg.processes[i]
    found = _lookup(PRODUCER_KEYS, p.kind, topic)
    if found is None:
        raise ConfigError(
            f"'{p.name}' ({p.kind}) produces {topic} for another host, but the launcher "
            f"cannot move a {p.kind} process's {topic.partition('/')[0]} socket to tcp; "
            "run its consumers on its host",
            cfg.where(f"processes[{i}]", "outputs"),
        )
    key, slot = found
    if (i, key) not in w.endpoints:
        ep = w.endpoints[(i, key)] = data_endpoint(cfg, i, slot)
        w.sets.setdefault(i, []).append(f"{key}={ep}")
    return w.endpoints[(i, key)]


def _connect_consumer(cfg: LaunchFile, w: Wiring, j: int, topic: str, ep: str) -> None:
    from spikefuse.launch.check import check_process_config

    c = cfg.processes[j]
    key = _lookup(CONSUMER_KEYS, c.kind, topic)
    if c.kind == "record":
        if ep not in w.args.get(j, []):
            w.args.setdefault(j, []).extend(["--endpoint", ep])
    elif c.kind == "core" and topic.startswith("sensor/"):
        sensor = topic.partition("/")[2]
        core_cfg = check_process_config(cfg, j, c)
        for g, inp in core_cfg.inputs.items():
            if inp.sensor == sensor:
                w.sets.setdefault(j, []).append(f"inputs.{g}.endpoint={ep}")
    elif c.kind == "core" and ep in w.endpoints.values() and _reads_from(cfg, w, j, ep):
        pass  # a driver's status/<name> comes on its sensor socket, rewired already
    elif key is not None:
        entry = f"{key}={ep}"
        if entry not in w.sets.get(j, []):
            w.sets.setdefault(j, []).append(entry)
    else:
        raise ConfigError(
            f"'{c.name}' ({c.kind}) reads {topic} from another host, but the launcher cannot "
            f"point that input of a {c.kind} process at tcp; run it on the producer's host",
            cfg.where(f"processes[{j}]", "host"),
        )


def _reads_from(cfg: LaunchFile, w: Wiring, j: int, ep: str) -> bool:
    return any(s.endswith(f"={ep}") for s in w.sets.get(j, []))


def command(cfg: LaunchFile, i: int, w: Wiring) -> list[str]:
    """``cfg.command(p)`` plus the cross-host rewiring of process ``i``."""
    p = cfg.processes[i]
    argv = cfg.command(p)
    extra_sets = [x for s in w.sets.get(i, []) for x in ("--set", s)]
    if p.kind == "exec":
        return argv
    n_user = len(p.args)
    head, tail = argv[: len(argv) - n_user], argv[len(argv) - n_user :]
    return head + extra_sets + w.args.get(i, []) + tail


def remote_command(cfg: LaunchFile, i: int, w: Wiring) -> list[str]:
    """:func:`command` with this machine's Python, run folder and key folder replaced by
    the placeholders the agent fills in with its own."""
    argv = command(cfg, i, w)
    if argv and argv[0] == sys.executable:
        argv[0] = "@PYTHON@"
    subs = [(str(cfg.resolve_path(cfg.run_dir)), "@RUN_DIR@")]
    if cfg.security is not None:
        subs.insert(0, (str(cfg.resolve_path(cfg.security.key_dir)), "@KEY_DIR@"))
    out = []
    for a in argv:
        for old, new in subs:
            a = a.replace(old, new)
        out.append(a)
    return out


def key_files(cfg: LaunchFile, names: list[str]) -> dict[str, str]:
    """File name -> text of every key file the processes ``names`` are configured with."""
    out: dict[str, str] = {}
    for n in names:
        block = cfg.security_for(n)
        if block is None:
            continue
        paths = [block["secret_key_file"], block["server_public_key_file"]]
        paths += [block["server_secret_key_file"], *block["allowed_client_keys"]]
        for path in map(Path, paths):
            out[path.name] = path.read_text(encoding="ascii")
    return out


# ---------------------------------------------------------------- validation


def check_hosts(cfg: LaunchFile) -> None:
    """Unknown hosts, ipc endpoints across hosts, missing keys (file:line: field errors)."""
    for i, p in enumerate(cfg.processes):
        if p.host is not None and p.host not in cfg.hosts:
            known = ", ".join(sorted(cfg.hosts)) or "none: add a 'hosts:' block"
            raise ConfigError(
                f"unknown host {p.host!r} (hosts: {known})", cfg.where(f"processes[{i}]", "host")
            )
        if p.host is not None and p.kind == "record" and cfg.security is not None:
            raise ConfigError(
                "a recorder on another host cannot get its security file yet: run it on "
                "the launcher's machine (it reads the other hosts' topics over tcp)",
                cfg.where(f"processes[{i}]", "host"),
            )
    if LOCAL in cfg.hosts:
        raise ConfigError(
            f"'{LOCAL}' names the launcher's own machine; call the host something else",
            cfg.where(f"hosts.{LOCAL}"),
        )
    if cfg.data_port + PORT_SLOTS * len(cfg.processes) > 65535:
        raise ConfigError(
            f"data_port + {PORT_SLOTS} x the number of processes exceeds 65535",
            cfg.where("data_port"),
        )
    _check_ipc(cfg)
    _check_host_keys(cfg)
    if is_multihost(cfg):
        _check_rewired(cfg, wiring(cfg))


def _check_rewired(cfg: LaunchFile, w: Wiring) -> None:
    """Every process the launcher rewires still loads its config with the extra keys."""
    from spikefuse.launch.check import check_process_config

    for i, extra in w.sets.items():
        p = cfg.processes[i]
        if p.kind not in ("driver", "core", "actuator"):
            continue
        try:
            check_process_config(cfg, i, p.model_copy(update={"set": [*p.set, *extra]}))
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (the launcher sets {', '.join(extra)} to reach another host: run "
                f"'{p.name}' on the host of the topics it reads, or name them as endpoints)"
            ) from None


def _ipc_owner(cfg: LaunchFile, endpoint: str) -> int | None:
    """The process whose same-host socket (``ipc://`` or ``unix://``) ``endpoint`` is (by
    socket file name)."""
    if not endpoint.startswith(("ipc://", "unix://")):
        return None
    stem = endpoint.rsplit("/", 1)[-1].removesuffix(".sock")
    for i, p in enumerate(cfg.processes):
        if p.name == stem or f"sensor/{stem}" in p.outputs or f"motor/{stem}" in p.outputs:
            return i
    return None


def _check_ipc(cfg: LaunchFile) -> None:
    for j, c in enumerate(cfg.processes):
        given = [(f"inputs[{k}]", e) for k, e in enumerate(c.inputs) if "://" in e]
        given += [
            ("args", c.args[k + 1])
            for k, a in enumerate(c.args[:-1])
            if a == "--endpoint" and c.kind == "record"
        ]
        given += [
            ("set", s.partition("=")[2])
            for s in c.set
            if "endpoint=ipc://" in s or "endpoint=unix://" in s
        ]
        for field_name, e in given:
            i = _ipc_owner(cfg, e)
            if i is None or host_of(cfg.processes[i]) == host_of(c):
                continue
            head, _, rest = field_name.partition("[")
            where = cfg.where(f"processes[{j}]", head) + (f"[{rest}" if rest else "")
            scheme = e.partition("://")[0]
            raise ConfigError(
                f"{scheme} endpoint {e} is '{cfg.processes[i].name}' on host "
                f"{host_of(cfg.processes[i])}, but '{c.name}' runs on {host_of(c)}: {scheme} "
                "does not cross hosts (name the topic instead; the launcher makes it tcp)",
                where,
            )


def _check_host_keys(cfg: LaunchFile) -> None:
    used = {p.host for p in cfg.processes if p.host}
    remote = False
    for h, spec in cfg.hosts.items():
        remote |= not spec.endpoint.is_local
        remote |= not Endpoint(f"tcp://{spec.bind_address()}:1").is_local
        if spec.public_key is None:
            if h in used and not spec.endpoint.is_local:
                raise ConfigError(
                    f"agent endpoint {spec.endpoint} is not loopback: CurveZMQ is mandatory; "
                    f"give the agent's public key (spikefuse keygen {h} on that host)",
                    cfg.where(f"hosts.{h}", "public_key"),
                )
            continue
        path = cfg.resolve_path(spec.public_key)
        if not path.is_file():
            raise ConfigError(
                f"expected the agent's public key file, found nothing at {path}",
                cfg.where(f"hosts.{h}", "public_key"),
            )
        if cfg.security is None:
            raise ConfigError(
                "a host with public_key needs the launch's security.key_dir (the launcher "
                "talks to agents with its key pair launch.key_secret)",
                cfg.where(f"hosts.{h}", "public_key"),
            )
    if remote and cfg.security is None and used:
        raise ConfigError(
            "hosts on non-loopback addresses need 'security: {key_dir: ...}' (CurveZMQ "
            "between hosts is mandatory)",
            cfg.where("hosts"),
        )
