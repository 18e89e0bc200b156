"""``spikefuse launch FILE [--duration S] [--set key=value ...]``.

``--set duration_s=5`` changes the launch file; ``--set <process>.<key>=<value>`` is passed
to that process (e.g. ``--set imu.groups.gyro.rate_hz=500``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="start and supervise the processes of a launch file")
    p.add_argument("file", type=Path, help="launch file (YAML)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError
    from spikefuse.launch import Supervisor, load_launch

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration: expected a number > 0, found {args.duration}")
    launch = load_launch(args.file, args.overrides)
    return Supervisor(launch).run(args.duration)
