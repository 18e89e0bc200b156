"""``spikefuse agent --config FILE``: the per-host daemon of a multi-host launch: starts,
supervises and stops the processes a launcher sends it (see docs/multihost.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent",
        help="per-host daemon that runs a launcher's processes on this host",
        description="Serve start/stop/status requests of 'spikefuse launch' (CurveZMQ "
        "mandatory off loopback: security.allowed_client_keys names the launchers) and run "
        "the processes it sends exactly as a local launch would (restart policies, output "
        "streamed back prefixed [name]); stop them all when the launcher goes silent for "
        "heartbeat_timeout_s. Exit 0 on SIGINT/SIGTERM, 2 for an invalid config.",
    )
    p.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (dotted key, YAML value); repeatable",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.agent.config import load_agent_config
    from spikefuse.agent.daemon import run_agent

    return run_agent(load_agent_config(args.config, args.overrides))
