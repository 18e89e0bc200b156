"""``spikefuse import SRC -o OUT.mcap --map CONFIG``: ROS bags, PX4 ULog, AEDAT4, Prophesee
EVT3, CSV/NPZ tables -> spikefuse EventBatch streams in MCAP."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import a robot log (ROS bag, ULog, AEDAT4, EVT3, CSV/NPZ)")
    p.add_argument("source", help="bag file/directory, .ulg, .aedat4, .raw (EVT3), .csv[.gz], .npz")
    p.add_argument("-o", "--output", required=True, help="output .mcap")
    p.add_argument("--map", required=True, help="import map YAML (configs/import/*.yaml)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a map field"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.recording.importers import import_log, load_import_map

    imap = load_import_map(args.map, args.set)
    res = import_log(args.source, args.output, imap)
    print(json.dumps(res.summary(), indent=1), file=sys.stderr)
    return 0
