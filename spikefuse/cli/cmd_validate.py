"""``spikefuse validate FILE [--kind K]``: check a launch file, a core / actuator / driver
config or a graph without starting anything. Exit 0 and a one-line summary if valid;
exit 2 with the precise error (file:line: field: expected ..., found ...) if not.

``--kind``: ``launch``, ``core``, ``graph``, ``agent``, ``actuator:<kind>``,
``driver:<kind>``;
by default the kind is recognised from the top-level keys."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check a launch/config/graph file without starting anything",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="the YAML (or .npz graph) file to check")
    p.add_argument(
        "--kind",
        default=None,
        help="launch | core | graph | agent | actuator:<kind> | driver:<kind>",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted key, YAML value); repeatable",
    )
    p.set_defaults(func=run)


_AGENT_KEYS = {"name", "endpoint", "run_dir", "security", "heartbeat_timeout_s"}


def _guess_kind(path: Path) -> str:
    from spikefuse.config import load_yaml
    from spikefuse.errors import ConfigError

    if path.suffix == ".npz":
        return "graph"
    data = load_yaml(path)
    if isinstance(data, dict):
        if "processes" in data:
            return "launch"
        if "nodes" in data:
            return "graph"
        if "graph" in data and "inputs" in data:
            return "core"
        if "endpoint" in data and set(data) <= _AGENT_KEYS:
            return "agent"
        if "port" in data:
            return "actuator:serial"
        if "deadman_ms" in data or "safe_values" in data:
            return "actuator:console"
    raise ConfigError(
        "cannot tell what kind of file this is (expected a launch file with 'processes', a "
        "core config with 'graph', a graph with 'nodes', ...); give --kind",
        str(path),
    )


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError

    kind = args.kind or _guess_kind(args.file)
    what, _, sub = kind.partition(":")
    if what == "launch":
        from spikefuse.launch import load_launch

        cfg = load_launch(args.file, args.overrides)
        desc = f"launch file, {len(cfg.processes)} processes: " + ", ".join(
            f"{p.name} ({p.kind}{':' + p.type if p.type else ''})" for p in cfg.processes
        )
    elif what == "core":
        from spikefuse.core.config import load_core_config
        from spikefuse.core.daemon import load_graph

        cfg = load_core_config(args.file, args.overrides)
        graph = load_graph(cfg)
        desc = f"core config, graph '{graph.name}' with {len(graph.nodes)} nodes, inputs {sorted(cfg.inputs)}"
    elif what == "agent":
        from spikefuse.agent.config import load_agent_config

        cfg = load_agent_config(args.file, args.overrides)
        desc = f"agent '{cfg.name}' on {cfg.endpoint}" + (
            ", CurveZMQ" if cfg.security is not None and cfg.security.uses_curve else ""
        )
    elif what == "graph":
        from spikefuse.graph import Graph

        g = Graph.load(args.file).resolve()
        desc = f"graph '{g.name}', {len(g.nodes)} nodes"
    elif what == "actuator" and sub:
        from spikefuse.actuators import load_actuator_config, resolve_actuator

        load_actuator_config(resolve_actuator(sub), args.file, args.overrides)
        desc = f"{sub} actuator config"
    elif what == "driver" and sub:
        from spikefuse.sdk.registry import load_driver_config, resolve_kind

        load_driver_config(resolve_kind(sub), args.file, args.overrides)
        desc = f"{sub} driver config"
    else:
        raise ConfigError(
            "--kind: expected launch, core, graph, agent, actuator:<kind> or driver:<kind>, "
            f"found {kind!r}"
        )
    print(f"{args.file}: OK ({desc})")
    return 0
