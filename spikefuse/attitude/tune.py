"""Coarse tuning of the attitude graph on a set of logs with ONE parameter set, and the
leave-one-log-out check of that choice.

``python -m spikefuse.attitude.tune DIR|FILE... [--grid KEY=V1,V2,...]... [--json]``

Every grid point is scored on every log (6D graph on the engine, full rate and multi-rate,
inclination RMSE over VQF 6D's in the same run; 9D heading over VQF 9D's with ``--heading``,
which adds the same choice and leave-one-out check on the heading ratio).
The choice minimises the objective over the logs (mean log-ratio plus the worst log-ratio:
good on the median, no log left behind). Leave-one-out: for each log, the choice made on
the others, and that log's ratio under it next to its ratio under the all-log choice. The
grid is scored once; every choice is then read off the same matrix. Runs ``nice``-friendly
and single-threaded; ``--seconds`` crops each log to its first seconds for a quick look.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.attitude.evaluate import (
    MULTIRATE_ACCEL_HZ,
    MULTIRATE_MAG_HZ,
    _held_mag,
    _initial_state,
    _rest_masks,
    _rest_ops_per_s,
    _scored_mask,
)
from spikefuse.attitude.generate import AttitudeParams, build_attitude_graph
from spikefuse.attitude.quat import (
    heading_error_rad,
    inclination_error_rad,
    quat_from_up,
    quat_from_up_and_mag,
)
from spikefuse.attitude.run import Stream, decimate, hold_nonfinite, run_events, run_vqf
from spikefuse.attitude.suite import find_logs
from spikefuse.config import apply_overrides, validate_data
from spikefuse.engine.dense import DenseExecutor
from spikefuse.errors import ConfigError
from spikefuse.recording.progress import Progress
from spikefuse.tables import Table, load_table


@dataclass
class Log:
    """A log prepared once: inputs, scored mask, ground truth, VQF's errors."""

    name: str
    table: Table
    gyro: np.ndarray
    accel: np.ndarray
    mag: np.ndarray | None
    mask: np.ndarray
    gt: np.ndarray
    vqf: dict[str, float]


def _rmse_deg(err: np.ndarray) -> float:
    return float(np.degrees(np.sqrt(np.mean(err**2))))


def prepare(path: Path, seconds: float | None = None, start_s: float = 0.0) -> Log:
    """Load ``path`` (optionally ``seconds`` from ``start_s`` only) and run VQF on it."""
    table = load_table(path)
    lo = int(start_s * table.rate_hz)
    hi = len(table) if seconds is None else min(len(table), lo + int(seconds * table.rate_hz))
    if lo or hi < len(table):
        table = table.slice(lo, hi)
    mask, gt = _scored_mask(table)
    if gt is None or not mask.any():
        raise ConfigError(f"{path}: tuning needs ground truth (gt_quat) on some samples")
    gyro, _ = hold_nonfinite(table.groups["gyro"])
    accel, _ = hold_nonfinite(table.groups["accel"], fallback=np.array([0.0, 0.0, 9.80665]))
    mag = _held_mag(table.groups.get("mag"))
    t = table.t_ns
    vqf: dict[str, float] = {}
    acc_due = decimate(t, MULTIRATE_ACCEL_HZ)
    q6 = run_vqf(t, gyro, accel)
    q6m = run_vqf(t, gyro, accel, acc_due)
    vqf["incl"] = _rmse_deg(inclination_error_rad(q6[mask], gt[mask]))
    vqf["incl_multirate"] = _rmse_deg(inclination_error_rad(q6m[mask], gt[mask]))
    if mag is not None:
        _, q9 = run_vqf(t, gyro, accel, mag=mag)
        vqf["heading"] = _rmse_deg(heading_error_rad(q9[mask], gt[mask]))
    return Log(Path(path).name, table, gyro, accel, mag, mask, gt, vqf)


def score(
    log: Log, p: AttitudeParams, heading: bool = False, multirate: bool = True
) -> dict[str, float]:
    """Ratios to VQF, the ops ratio of the graph for ``p`` on ``log`` and (where the log
    marks still samples, ``movement == 0``) its synaptic ops per second at rest: on those
    samples (``rest_ops_per_s``) and on those where VQF also detects rest
    (``rest_detected_ops_per_s``)."""
    t = log.table.t_ns
    p = _initial_state(p.model_copy(update={"rate_hz": log.table.rate_hz}), log.accel, log.mag)
    p = p.model_copy(update={"with_mag": heading and log.mag is not None})
    g = build_attitude_graph(p)
    out: dict[str, float] = {}
    runs = (("", None), ("_multirate", MULTIRATE_ACCEL_HZ))
    for sfx, acc_hz in runs if multirate else runs[:1]:
        st = {
            "gyro": Stream(log.gyro, decimate(t, None), p.encoder_options("gyro")),
            "accel": Stream(log.accel, decimate(t, acc_hz), p.encoder_options("accel", acc_hz)),
        }
        if p.with_mag:
            mag_due = decimate(t, MULTIRATE_MAG_HZ if acc_hz else None)
            mag_hz = MULTIRATE_MAG_HZ if acc_hz else None
            st["mag"] = Stream(log.mag, mag_due, p.encoder_options("mag", mag_hz))
        ev = run_events(g, t, st)
        up = ev.outputs["gravity"]
        incl = _rmse_deg(inclination_error_rad(quat_from_up(up)[log.mask], log.gt[log.mask]))
        out[f"incl_ratio{sfx}"] = incl / log.vqf[f"incl{sfx}"]
        if not sfx:
            out["ops_ratio_vs_dense"] = ev.syn_ops[-1] / (
                DenseExecutor(g).ops_per_step * len(log.table)
            )
            out["gravity_norm_max_dev"] = float(np.max(np.abs(np.linalg.norm(up, axis=1) - 1)))
            mv = log.table.extra.get("movement")
            if mv is not None and not np.all(np.asarray(mv) != 0):
                for kind, rest in _rest_masks(log.table, log.gyro, log.accel, True).items():
                    rate = log.table.rate_hz
                    out[f"rest{kind}_ops_per_s"] = _rest_ops_per_s(ev.syn_ops, rest, rate)
            if p.with_mag:
                q9 = quat_from_up_and_mag(up, ev.outputs["north"])
                h = _rmse_deg(heading_error_rad(q9[log.mask], log.gt[log.mask]))
                out["heading_ratio"] = h / log.vqf["heading"]
    return out


def objective(ratios: np.ndarray) -> float:
    """Mean log-ratio plus the worst log-ratio over the logs (lower is better)."""
    lr = np.log(np.asarray(ratios, dtype=np.float64))
    return float(np.mean(lr) + np.max(lr))


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for it in items:
        key, sep, vals = it.partition("=")
        if not sep or not vals:
            raise ConfigError(f"--grid {it!r}: expected KEY=V1,V2,...", "--grid")
        grid[key.strip()] = [v.strip() for v in vals.split(",")]
    return grid


def grid_points(grid: dict[str, list[Any]], base: list[str]) -> list[AttitudeParams]:
    keys = list(grid)
    pts = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        over = base + [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        pts.append(validate_data(AttitudeParams, apply_overrides({}, over), "--grid"))
    return pts


def leave_one_out(obj_key: str, mat: list[list[dict[str, float]]]) -> list[dict[str, Any]]:
    """``mat[point][log]``: for each log the point chosen on the others, and its ratio."""
    r = np.array([[m[obj_key] for m in row] for row in mat])  # (points, logs)
    best_all = int(np.argmin([objective(row) for row in r]))
    out = []
    for j in range(r.shape[1]):
        others = np.delete(r, j, axis=1)
        best = int(np.argmin([objective(row) for row in others]))
        out.append(
            {
                "log": j,
                "point": best,
                "ratio_held_out": float(r[best, j]),
                "ratio_tuned_on_all": float(r[best_all, j]),
                "held_out_over_all": float(r[best, j] / r[best_all, j]),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m spikefuse.attitude.tune", description=__doc__.split("\n")[0]
    )
    ap.add_argument("logs", type=Path, nargs="+", help="log files or folders (with ground truth)")
    ap.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="AttitudeParams values"
    )
    ap.add_argument("--set", dest="base", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seconds", type=float, help="use only the first seconds of every log")
    ap.add_argument("--heading", action="store_true", help="also run the 9D graph (heading)")
    ap.add_argument(
        "--no-multirate", action="store_true", help="score the full-rate run only (half the time)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        points = grid_points(parse_grid(args.grid), args.base)
        paths = find_logs(args.logs)
        logs = [prepare(pth, args.seconds) for pth in paths]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mat: list[list[dict[str, float]]] = []
    with Progress(len(points) * len(logs), "tune") as bar:
        for p in points:
            row = []
            for lg in logs:
                row.append(score(lg, p, args.heading, not args.no_multirate))
                bar.update(1)
            mat.append(row)
    result = _result(args, points, logs, mat)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_render(result))
    return 0


def _result(args, points, logs, mat) -> dict[str, Any]:
    keys = list(parse_grid(args.grid))
    objs = [objective([m["incl_ratio"] for m in row]) for row in mat]
    best = int(np.argmin(objs))
    loo = leave_one_out("incl_ratio", mat)
    heading = all("heading_ratio" in m for row in mat for m in row)
    loo_h = leave_one_out("heading_ratio", mat) if heading else []
    for d in loo + loo_h:
        d["log"] = logs[d["log"]].name
        d["point"] = {k: getattr(points[d["point"]], k) for k in keys}
    extra: dict[str, Any] = {}
    if heading:  # the same choice and check on the heading ratio to VQF 9D
        extra["objective_heading"] = [objective([m["heading_ratio"] for m in row]) for row in mat]
        extra["leave_one_out_heading"] = loo_h
    return {
        **extra,
        "grid": {k: [getattr(pt, k) for pt in points] for k in keys},
        "objective": objs,
        "best": {k: getattr(points[best], k) for k in keys},
        "best_per_log": {lg.name: mat[best][j] for j, lg in enumerate(logs)},
        "scores": [[{**m, "log": lg.name} for m, lg in zip(row, logs, strict=True)] for row in mat],
        "leave_one_out": loo,
        "vqf": {lg.name: lg.vqf for lg in logs},
    }


def _render(res: dict[str, Any]) -> str:
    lines = [f"best: {res['best']}"]
    lines.append(f"{'log':45s} incl/vqf  mr/vqf  head/vqf  ops/dense  |g|dev")
    for name, m in res["best_per_log"].items():
        h = m.get("heading_ratio")
        lines.append(
            f"{name:45s} {m['incl_ratio']:8.2f} {m.get('incl_ratio_multirate', math.nan):7.2f} "
            f"{'-' if h is None else f'{h:.2f}':>9s} {m['ops_ratio_vs_dense']:10.3f} "
            f"{m['gravity_norm_max_dev']:7.3f}"
        )
    lines.append("leave-one-out (held-out ratio / ratio when tuned on all):")
    for d in res["leave_one_out"]:
        lines.append(
            f"  {d['log']:45s} {d['ratio_held_out']:.2f} / {d['ratio_tuned_on_all']:.2f} = "
            f"{d['held_out_over_all']:.2f}  {d['point']}"
        )
    for d in res.get("leave_one_out_heading", []):
        lines.append(
            f"  heading {d['log']:37s} {d['ratio_held_out']:.2f} / {d['ratio_tuned_on_all']:.2f} = "
            f"{d['held_out_over_all']:.2f}  {d['point']}"
        )
    for i, o in enumerate(res["objective"]):
        pt = {k: v[i] for k, v in res["grid"].items()}
        oh = res.get("objective_heading")
        lines.append(
            f"  point {i}: objective {o:.3f}" + (f", heading {oh[i]:.3f}" if oh else "") + f" {pt}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
