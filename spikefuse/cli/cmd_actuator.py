"""``spikefuse actuator KIND --config FILE [--set key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "actuator",
        help="run an actuator (console, serial, ...) with a deadman",
        description="Run an actuator: apply the MotorCommands of its topic, and go to its "
        "safe values when no command arrived within the deadman time; until SIGINT/SIGTERM.",
    )
    p.add_argument("kind", help="actuator kind: console, serial, ...")
    p.add_argument("--config", "-c", type=Path, help="actuator config YAML")
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
    from spikefuse.actuators import load_actuator_config, resolve_actuator, run_actuator

    spec = resolve_actuator(args.kind)
    return run_actuator(spec, load_actuator_config(spec, args.config, args.overrides))
