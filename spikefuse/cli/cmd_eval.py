"""``spikefuse eval attitude LOG|DIR... [--json] [--preset NAME | --mapping FILE]``: score
the event-driven attitude graph on a recorded IMU log (layout detected from its columns)
against ground truth (BROAD form) or VQF, side by side with the same graph run densely, VQF
and gyro-only integration. Logs with a magnetometer also run the 9D graph (heading);
``--set with_mag=false`` skips it. With a folder or several files: one row per log and the
median / worst ratio to VQF."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from spikefuse.config import apply_overrides, validate_data
from spikefuse.errors import ConfigError
from spikefuse.tables import PRESETS, load_mapping, load_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score an estimator on a recorded log")
    esub = p.add_subparsers(dest="eval_name", metavar="NAME")
    esub.required = True
    a = esub.add_parser(
        "attitude",
        help="attitude RMSE (inclination; heading with a magnetometer), ops vs dense/VQF",
    )
    a.add_argument(
        "log",
        type=Path,
        nargs="+",
        help="IMU table log (.csv, .csv.gz, .npz), or a folder of them / several files (one "
        "row per log plus the median and worst ratio to VQF); the column layout is detected "
        f"from the header ({', '.join(sorted(PRESETS))}); ground truth as in BROAD, else VQF "
        "is the reference",
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    src = a.add_mutually_exclusive_group()
    src.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="column layout to use instead of the one detected from the header",
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
    a.add_argument(
        "--no-dense",
        action="store_true",
        help="skip the frame-by-frame run of the graph (the slowest baseline): its op count "
        "is fixed per sample, so ops_ratio_vs_dense is still given; dense_* RMSEs are not",
    )
    a.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw FILE.png|.html: estimated vs true inclination (and vqf) over time, "
        "the inclination error, the gimbal command and events/s against motion",
    )
    a.add_argument(
        "--start", dest="start_s", type=float, metavar="S", help="first second of the log to use"
    )
    a.add_argument(
        "--end", dest="end_s", type=float, metavar="S", help="last second of the log to use"
    )
    a.set_defaults(func=run_attitude)


def run_attitude(args: argparse.Namespace) -> int:
    from spikefuse.attitude.evaluate import evaluate_attitude
    from spikefuse.attitude.generate import AttitudeParams
    from spikefuse.attitude.suite import find_logs
    from spikefuse.graph import Graph

    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".html"):
        raise ConfigError(f"plot output must end in .png or .html, found {args.plot.name!r}")
    logs = find_logs(args.log)
    mapping = load_mapping(args.mapping) if args.mapping else None
    graph = Graph.load(args.graph) if args.graph else None
    if len(logs) > 1 or args.log[0].is_dir():
        return _run_suite(args, logs, mapping, graph)
    table = _time_slice(
        load_table(logs[0], mapping=mapping, preset=args.preset), args.start_s, args.end_s
    )
    data = apply_overrides({"rate_hz": table.rate_hz}, args.overrides)
    params = validate_data(AttitudeParams, data, "--set")
    report = evaluate_attitude(
        table, params, graph=graph, compare=not args.no_compare, dense=not args.no_dense
    )
    if args.json:
        json.dump(_finite(report.fields), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.render())
    sys.stdout.flush()
    if args.plot is not None:
        from spikefuse.attitude.plot import attitude_series, plot_attitude

        series = attitude_series(table, params, graph)
        span = f" {args.start_s or 0:g}-{args.end_s:g} s" if args.end_s else ""
        title = f"{Path(table.source).name}{span}: event-driven attitude"
        out = plot_attitude(series, args.plot, title=title, summary=report.fields)
        print(f"plot: {out}", file=sys.stderr)
    return 0


def _run_suite(args: argparse.Namespace, logs: list[Path], mapping, graph) -> int:
    """Several logs: one row (JSON: one object) per log, then the median / worst ratios."""
    from spikefuse.attitude.evaluate import evaluate_attitude
    from spikefuse.attitude.generate import AttitudeParams
    from spikefuse.attitude.suite import evaluate_logs

    for opt, val in (("--plot", args.plot), ("--start", args.start_s), ("--end", args.end_s)):
        if val is not None:
            raise ConfigError(f"{opt} takes a single log, found {len(logs)} logs", opt)

    def score(table) -> dict:
        data = apply_overrides({"rate_hz": table.rate_hz}, args.overrides)
        params = validate_data(AttitudeParams, data, "--set")
        return evaluate_attitude(
            table, params, graph=graph, compare=not args.no_compare, dense=not args.no_dense
        ).fields

    rep = evaluate_logs(logs, lambda p: load_table(p, mapping=mapping, preset=args.preset), score)
    if args.json:
        json.dump(_finite(rep.as_json()), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(rep.render())
    sys.stdout.flush()
    for f in rep.failed:
        print(f"spikefuse eval: error: {f['error']}", file=sys.stderr)
    return 1 if rep.failed else 0


def _time_slice(table, start_s: float | None, end_s: float | None):
    """Rows with ``start_s <= t - t0 <= end_s`` (seconds from the first sample)."""
    if start_s is None and end_s is None:
        return table
    rel_s = (table.t_ns - table.t_ns[0]) / 1e9
    lo = int(np.searchsorted(rel_s, start_s, "left")) if start_s is not None else 0
    hi = int(np.searchsorted(rel_s, end_s, "right")) if end_s is not None else len(table)
    if hi - lo < 2:
        raise ConfigError(
            f"--start/--end select {max(hi - lo, 0)} samples of {table.source} "
            f"(log spans 0-{rel_s[-1]:.3f} s)",
            "--start/--end",
        )
    return table.slice(lo, hi)


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
