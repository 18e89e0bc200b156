"""``spikefuse launch FILE [--duration S] [--set key=value ...]``.

``--view [PORT]`` adds a ``spikefuse view`` process (see ``docs/liveview.md``).
``--set duration_s=5`` changes the launch file; ``--set <process>.<key>=<value>`` is passed
to that process (e.g. ``--set imu.groups.gyro.rate_hz=500``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="start and supervise the processes of a launch file",
        description="Start the processes of a launch file (drivers, core, actuators, recorder, "
        "any command), print their output prefixed [name], restart them by their restart "
        "policy, and stop them all (reverse order) on SIGINT/SIGTERM, --duration or a "
        "required process failing for good; a summary table ends the run. Paths in the file "
        "are relative to it. Exit 0, 1 if a required process failed, 2 for an invalid file.",
    )
    p.add_argument("file", type=Path, help="launch file (YAML), e.g. launch/demo.yaml")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the launch file (e.g. duration_s=5) or, as PROCESS.KEY=VALUE, one "
        "process's config (e.g. imu.groups.gyro.rate_hz=500); YAML values; repeatable",
    )
    p.add_argument(
        "--view",
        nargs="?",
        type=int,
        const=9090,
        default=None,
        metavar="PORT",
        help="also serve a live view in the browser on 127.0.0.1:PORT (default 9090)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError
    from spikefuse.launch import Supervisor, load_launch

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration: expected a number > 0, found {args.duration}")
    launch = load_launch(args.file, args.overrides)
    if args.view is not None:
        from spikefuse.view.from_launch import add_view_process

        add_view_process(launch, args.file, args.overrides, args.view)
    from spikefuse.launch.hosts import is_multihost

    if is_multihost(launch):
        from spikefuse.launch.multihost import MultiHostSupervisor

        return MultiHostSupervisor(launch).run(args.duration)
    return Supervisor(launch).run(args.duration)
