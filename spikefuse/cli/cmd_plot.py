"""``spikefuse plot FILE -o report.png|.html``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot a log: reconstructions, spike raster, motors, latency")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="report.png or report.html")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.recording.plot import plot_log

    print(plot_log(args.file, args.output))
    return 0
