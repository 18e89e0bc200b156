"""``spikefuse driver KIND [--config FILE] [--set key=value ...]``: run a sensor driver.

KIND is a built-in kind (``imu``, ``camera``, ``event_camera``), ``package.module:attr`` or
``path/to/file.py:attr`` naming a :class:`~spikefuse.sdk.DriverSpec`. The driver publishes
on its endpoint until its source ends or SIGINT/SIGTERM (exit 0)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from spikefuse.drivers import KINDS

    p = sub.add_parser(
        "driver",
        help="run a sensor driver (publishes change-events)",
        description="Run a sensor driver: it publishes the sensor's sigma-delta "
        "change-events, heartbeats and status on its endpoint until its source ends or "
        "SIGINT/SIGTERM (exit 0; 2 for an invalid config). KIND is a built-in kind, "
        "package.module:attr or path/to/file.py:attr naming a DriverSpec "
        "(docs/writing-a-driver.md).",
    )
    p.add_argument(
        "kind",
        metavar="KIND",
        help=f"one of {', '.join(sorted(KINDS))}, or module:attr / file.py:attr",
    )
    from spikefuse.sdk.registry import add_driver_arguments

    add_driver_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.sdk.registry import resolve_kind, run_from_args

    return run_from_args(resolve_kind(args.kind), args)
