"""Checks of a launch file beyond its schema: each process's config file (validated with
that process's own model) and the topic wiring (every input topic has a producer)."""

from __future__ import annotations

from spikefuse.errors import ConfigError
from spikefuse.launch.model import LaunchFile, ProcessSpec
from spikefuse.sdk.config import DriverConfig
from spikefuse.transport.endpoint import Endpoint


def check_process_config(cfg: LaunchFile, i: int, p: ProcessSpec) -> object | None:
    """Load ``p``'s config the way the process will (overrides and run_dir included);
    returns it (None for record and exec processes)."""
    sets = [*cfg.launch_sets(p), *p.set]
    path = cfg.resolve_path(p.config) if p.config is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(
            f"config file not found: expected an existing file, found {str(path)!r}",
            cfg.where(f"processes[{i}]", "config"),
        )
    kind = _resolve_type(cfg, i, p)
    field = "config" if p.config is not None else "set"
    try:
        if p.kind == "core":
            from spikefuse.core.config import load_core_config
            from spikefuse.core.daemon import load_graph

            core_cfg = load_core_config(path, sets)
            load_graph(core_cfg)
            return core_cfg
        if p.kind == "actuator":
            from spikefuse.actuators import load_actuator_config

            return load_actuator_config(kind, path, sets)
        if p.kind == "driver":
            from spikefuse.sdk.registry import load_driver_config

            return load_driver_config(kind, path, sets)
    except ConfigError as exc:
        raise ConfigError(f"{exc}", cfg.where(f"processes[{i}]", field)) from None
    return None


def _resolve_type(cfg: LaunchFile, i: int, p: ProcessSpec) -> object:
    """The driver spec / actuator kind named by ``p.type``; errors name the ``type`` line."""
    try:
        if p.kind == "actuator":
            from spikefuse.actuators import resolve_actuator

            return resolve_actuator(p.type)
        if p.kind == "driver":
            from spikefuse.sdk.registry import resolve_kind

            return resolve_kind(cfg.process_type(p))
    except ConfigError as exc:
        raise ConfigError(f"{exc}", cfg.where(f"processes[{i}]", "type")) from None
    return None


def process_endpoints(cfg: LaunchFile, p: ProcessSpec, p_cfg: object) -> list[str]:
    """The publishers of process ``p`` (its config ``p_cfg`` as
    :func:`check_process_config` loads it): outputs named as endpoints, a driver's or
    core's endpoint, an actuator's status endpoint; a record or exec process publishing
    topics: ``<run_dir>/<name>.sock`` over ZeroMQ (they are not told ``local_transport``)."""
    out = [t for t in p.outputs if "://" in t]
    if isinstance(p_cfg, DriverConfig) or p.kind == "core":
        out.append(p_cfg.resolved_endpoint())  # type: ignore[union-attr]
    elif p.kind == "actuator":
        status = getattr(p_cfg, "status_endpoint", None)
        if status:
            out.append(status)
    elif any("://" not in t for t in p.outputs):
        out.append(Endpoint.local(cfg.resolve_path(cfg.run_dir), p.name, "zmq"))
    return out


def recorder_endpoints(cfg: LaunchFile, rec: ProcessSpec) -> list[str]:
    """What a ``record`` process without ``--endpoint`` records: its inputs named as
    endpoints and the publishers of the processes on its host that produce its input
    topics (those on other hosts come over tcp: :mod:`spikefuse.launch.hosts`)."""
    out = [t for t in rec.inputs if "://" in t]
    for i, p in enumerate(cfg.processes):
        if p.host != rec.host or not set(p.outputs) & set(rec.inputs):
            continue
        out += process_endpoints(cfg, p, check_process_config(cfg, i, p))
    return list(dict.fromkeys(out))


def check_recorders(cfg: LaunchFile) -> None:
    for i, p in enumerate(cfg.processes):
        if p.kind == "record" and "--endpoint" not in p.args and not p.inputs:
            raise ConfigError(
                "expected the topics to record (the publishers of these are recorded) or "
                "'--endpoint E' in args, found neither",
                cfg.where(f"processes[{i}]", "inputs"),
            )


def check_wiring(cfg: LaunchFile) -> None:
    produced = {t for p in cfg.processes for t in p.outputs}
    for i, p in enumerate(cfg.processes):
        for j, t in enumerate(p.inputs):
            if "://" in t or t in produced:
                continue
            raise ConfigError(
                f"expected a topic that some process lists in 'outputs' "
                f"({', '.join(sorted(produced)) or 'none'}), found {t!r}",
                cfg.where(f"processes[{i}]", "inputs") + f"[{j}]",
            )


def check_keys(cfg: LaunchFile) -> None:
    """With ``security``, every key pair the launch hands out must exist."""
    if cfg.security is None:
        return
    key_dir = cfg.resolve_path(cfg.security.key_dir)
    missing = [n for n in cfg.key_names() if not (key_dir / f"{n}.key_secret").is_file()]
    missing += [n for n in cfg.key_names() if not (key_dir / f"{n}.key").is_file()]
    if missing:
        names = sorted(set(missing))
        raise ConfigError(
            f"expected a key pair per name in {key_dir} (NAME.key and NAME.key_secret), "
            f"missing {', '.join(names)}; make them with: "
            + "; ".join(f"spikefuse keygen {n} --dir {key_dir}" for n in names),
            cfg.where("security", "key_dir"),
        )


def check_launch(cfg: LaunchFile) -> None:
    from spikefuse.launch.hosts import check_hosts

    check_keys(cfg)
    check_hosts(cfg)
    for i, p in enumerate(cfg.processes):
        check_process_config(cfg, i, p)
    check_wiring(cfg)
    check_recorders(cfg)
