"""Checks of a launch file beyond its schema: each process's config file (validated with
that process's own model) and the topic wiring (every input topic has a producer)."""

from __future__ import annotations

from spikefuse.errors import ConfigError
from spikefuse.launch.model import LaunchFile, ProcessSpec


def check_process_config(cfg: LaunchFile, i: int, p: ProcessSpec) -> object | None:
    """Load ``p``'s config the way the process will (overrides and run_dir included);
    returns it (None for record and exec processes)."""
    sets = [f"run_dir={cfg.resolve_path(cfg.run_dir)}", *p.set]
    path = cfg.resolve_path(p.config) if p.config is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(
            f"config file not found: expected an existing file, found {str(path)!r}",
            cfg.where(f"processes[{i}]", "config"),
        )
    try:
        if p.kind == "core":
            from spikefuse.core.config import load_core_config
            from spikefuse.core.daemon import load_graph

            core_cfg = load_core_config(path, sets)
            load_graph(core_cfg)
            return core_cfg
        if p.kind == "actuator":
            from spikefuse.actuators import load_actuator_config, resolve_actuator

            return load_actuator_config(resolve_actuator(p.type), path, sets)
        if p.kind == "driver":
            from spikefuse.sdk.registry import load_driver_config, resolve_kind

            return load_driver_config(resolve_kind(p.type), path, sets)
    except ConfigError as exc:
        raise ConfigError(f"{exc}", cfg.where(f"processes[{i}]", "config")) from None
    return None


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


def check_launch(cfg: LaunchFile) -> None:
    for i, p in enumerate(cfg.processes):
        check_process_config(cfg, i, p)
    check_wiring(cfg)
