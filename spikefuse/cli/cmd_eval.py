"""``spikefuse eval attitude LOG [--json] [--preset NAME | --mapping FILE]``: score the
event-driven attitude graph on a recorded IMU log against ground truth (BROAD form) or
VQF, side by side with the same graph run densely, VQF and gyro-only integration. Logs with
a magnetometer also run the 9D graph (heading); ``--set with_mag=false`` skips it."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from spikefuse.config import apply_overrides, validate_data
from spikefuse.tables import PRESETS, load_mapping, load_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score an estimator on a recorded log")
    esub = p.add_subparsers(dest="eval_name", metavar="NAME")
    esub.required = True
    a = esub.add_parser(
        "attitude",
        help="attitude RMSE (inclination; heading with a magnetometer), ops vs dense/VQF",
    )
    a.add_argument("log", type=Path, help="CSV / CSV.gz / NPZ log (BROAD columns by default)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    src = a.add_mutually_exclusive_group()
    src.add_argument(
        "--preset", choices=sorted(PRESETS), help="column layout (default: from the file name)"
    )
    src.add_argument("--mapping", type=Path, help="table mapping YAML (see configs/tables/)")
    a.add_argument("--graph", type=Path, help="run this graph file instead of generating one")
    a.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an AttitudeParams field, e.g. --set tau_acc_s=2",
    )
    a.add_argument("--no-compare", action="store_true", help="skip dense/VQF/gyro-only baselines")
    a.set_defaults(func=run_attitude)


def run_attitude(args: argparse.Namespace) -> int:
    from spikefuse.attitude.evaluate import evaluate_attitude
    from spikefuse.attitude.generate import AttitudeParams
    from spikefuse.graph import Graph

    mapping = load_mapping(args.mapping) if args.mapping else None
    table = load_table(args.log, mapping=mapping, preset=args.preset)
    data = apply_overrides({"rate_hz": table.rate_hz}, args.overrides)
    params = validate_data(AttitudeParams, data, "--set")
    graph = Graph.load(args.graph) if args.graph else None
    report = evaluate_attitude(table, params, graph=graph, compare=not args.no_compare)
    if args.json:
        json.dump(_finite(report.fields), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.render())
    return 0


def _finite(v):
    """JSON-safe copy: NaN/Inf become null, numpy scalars become Python numbers."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
