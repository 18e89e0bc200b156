"""``spikefuse core --config FILE [--set key=value ...]``: the fusion daemon."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "core",
        help="run the fusion daemon (sensor events -> motor commands)",
        description="Run the fusion daemon: subscribe to the drivers' change-events, run "
        "the config's graph event by event, publish MotorCommands and Status, until "
        "SIGINT/SIGTERM (exit 0; 2 for an invalid config).",
    )
    p.add_argument("--config", "-c", type=Path, required=True, help="core config YAML")
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
    from spikefuse.core import load_core_config, run_core

    return run_core(load_core_config(args.config, args.overrides))
