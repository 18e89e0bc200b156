"""``spikefuse info FILE``: topics, counts, rates, duration, sequence gaps, indexed or not."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarize an MCAP log",
        description="Topics, message and event counts, rates, duration, sequence gaps, and "
        "whether the file was finished (indexed) or is a recorder's unfinished file.",
    )
    p.add_argument("file", help="the .mcap log (finished or not)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.recording.info import render, summarize

    info = summarize(args.file)
    if args.json:
        json.dump(info.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(info))
    return 0
