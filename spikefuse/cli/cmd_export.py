"""``spikefuse export FILE -o OUT.mcap --json``: JSON channels for Foxglove."""

from __future__ import annotations

import argparse
import json
import sys

from spikefuse.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a log with JSON channels (opens in Foxglove)")
    p.add_argument("file", help="the .mcap log to export")
    p.add_argument("-o", "--output", required=True, help="output .mcap with JSON channels")
    p.add_argument("--json", action="store_true", help="JSON message encoding (the only one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.recording.export import export_json

    if not args.json:
        raise ConfigError("export: give --json (JSON-encoded channels are the supported export)")
    counts = export_json(args.file, args.output)
    print(json.dumps(counts), file=sys.stderr)
    return 0
