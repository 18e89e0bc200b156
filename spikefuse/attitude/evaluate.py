"""``spikefuse eval attitude``: score the event-driven attitude graph on a recorded log and
compare it, in the same run, with the same graph executed frame by frame, VQF (6D, and
9D for heading) and plain gyro integration, at full rate and multi-rate (gyro at full rate,
accelerometer 50 Hz, magnetometer 20 Hz).

Scoring follows the BROAD convention (``../shared/data/README.md``): samples with
``movement == 1`` and a valid ground-truth quaternion; inclination error
``2 acos(sqrt(w^2 + z^2))`` of ``q ⊗ q_gt⁻¹``. When the log has a magnetometer the graph
also tracks the magnetic field (9D) and the heading error, the rotation about the earth
vertical ``2 atan2(z, w)`` of the same ``q_e``, is scored as well (``heading_*`` fields;
BROAD's ground truth is relative to East-North-Up, i.e. magnetic north). Logs without
ground truth are scored against VQF instead (``*_vs_vqf`` fields: 6D for inclination, 9D
for heading), logs without ``movement`` use every sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikefuse.attitude.generate import AttitudeParams, build_attitude_graph
from spikefuse.attitude.quat import (
    heading_error_rad,
    inclination_error_rad,
    quat_from_up,
    quat_from_up_and_mag,
)
from spikefuse.attitude.run import (
    EventRun,
    Stream,
    decimate,
    hold_nonfinite,
    run_dense,
    run_events,
    run_gyro_only,
    run_vqf,
    vqf_rest_detected,
)
from spikefuse.attitude.status import InputFlags, check_inputs, trust_summary
from spikefuse.attitude.suite import add_ratios
from spikefuse.engine.dense import DenseExecutor
from spikefuse.errors import LogFileError
from spikefuse.graph import Graph
from spikefuse.tables import Table

MULTIRATE_ACCEL_HZ = 50.0
MULTIRATE_MAG_HZ = 20.0


@dataclass
class AttitudeReport:
    """Result of :func:`evaluate_attitude`; ``fields`` is the JSON of ``spikefuse eval``."""

    fields: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, Any, Any, Any, Any]] = field(default_factory=list)

    def render(self) -> str:
        head = ("estimator", "incl RMSE [deg]", "heading RMSE [deg]", "ops/s of signal", "note")
        table = [head] + [
            tuple("-" if c is None else (f"{c:.4g}" if isinstance(c, float) else str(c)) for c in r)
            for r in self.rows
        ]
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        flags = self.fields.get("flags") or []
        lines.append("flags: " + (", ".join(flags) if flags else "none"))
        return "\n".join(lines) + "\n"


def _rmse_deg(err_rad: np.ndarray) -> float:
    if err_rad.size == 0:
        return float("nan")
    return float(np.degrees(np.sqrt(np.mean(err_rad**2))))


def _scored_mask(table: Table) -> tuple[np.ndarray, np.ndarray | None]:
    """(mask of scored samples, ground truth or None)."""
    n = len(table)
    mask = np.ones(n, dtype=bool)
    mv = table.extra.get("movement")
    if mv is not None:
        mask &= np.asarray(mv) == 1
    gt = table.extra.get("gt_quat")
    if gt is not None:
        gt = np.asarray(gt, dtype=np.float64)
        if gt.ndim != 2 or gt.shape[1] != 4:
            raise LogFileError(
                f"{table.source}: gt_quat must have 4 columns, found shape {gt.shape}"
            )
        mask &= np.all(np.isfinite(gt), axis=1)
    return mask, gt


def _streams(
    table: Table,
    accel_hz: float | None,
    mag_hz: float | None,
    use_mag: bool,
    gyro: np.ndarray,
    accel: np.ndarray,
    mag: np.ndarray | None,
    encoders: dict[str, dict[str, float]] | None = None,
) -> dict[str, Stream]:
    """The graph's input streams (``encoders``: options of each group's encoder)."""
    enc = encoders or {}
    st = {
        "gyro": Stream(gyro, decimate(table.t_ns, None), dict(enc.get("gyro", {}))),
        "accel": Stream(accel, decimate(table.t_ns, accel_hz), dict(enc.get("accel", {}))),
    }
    if use_mag and mag is not None:
        st["mag"] = Stream(mag, decimate(table.t_ns, mag_hz), dict(enc.get("mag", {})))
    return st


def encoder_options(
    p: AttitudeParams, mag_hz: float | None = None, accel_hz: float | None = None
) -> dict[str, dict[str, float]]:
    """Each sensor group's encoder options under ``p`` (the magnetometer at ``mag_hz``, the
    accelerometer at ``accel_hz``; None: the gyro's rate: the rest options are in time)."""
    rates = {"mag": mag_hz, "accel": accel_hz}
    return {grp: p.encoder_options(grp, rates.get(grp)) for grp in ("gyro", "accel", "mag")}


def evaluate_attitude(
    table: Table,
    params: AttitudeParams | None = None,
    graph: Graph | None = None,
    compare: bool = True,
    dense: bool = True,
) -> AttitudeReport:
    """Run every estimator on ``table`` and score it (see module docstring)."""
    if "gyro" not in table.groups or "accel" not in table.groups:
        raise LogFileError(
            f"{table.source}: attitude needs 'gyro' and 'accel' groups, found {sorted(table.groups)}"
        )
    if len(table) < 2:
        raise LogFileError(f"{table.source}: need at least two samples")
    rate_hz = table.rate_hz
    p = params or AttitudeParams(rate_hz=rate_hz)
    flags_in: InputFlags = check_inputs(
        table.groups["gyro"], table.groups["accel"], mag=table.groups.get("mag")
    )
    gyro, _ = hold_nonfinite(table.groups["gyro"])
    accel, _ = hold_nonfinite(table.groups["accel"], fallback=np.array([0.0, 0.0, 9.80665]))
    mag = _held_mag(table.groups.get("mag"))
    g, g9 = _graphs(table, p, graph, accel, mag)
    duration_s = max(table.duration_s, 1e-9)
    mask, gt = _scored_mask(table)
    out: dict[str, Any] = {
        "log": table.source,
        "n_samples": len(table),
        "duration_s": duration_s,
        "rate_hz": rate_hz,
        "n_scored": int(mask.sum()),
        "ground_truth": gt is not None,
        "with_mag": g9 is not None,
    }
    rest = _rest_masks(table, gyro, accel, compare)
    out["rest_s"] = float(rest[""].sum() / rate_hz)
    if "_detected" in rest:
        out["rest_detected_s"] = float(rest["_detected"].sum() / rate_hz)
    inputs = (gyro, accel, mag)
    t0 = time.perf_counter()
    encs = (encoder_options(p), encoder_options(p, MULTIRATE_MAG_HZ, MULTIRATE_ACCEL_HZ))
    ev, ev_mr = _event_runs(out, g, table, inputs, rest, "", encs)
    out["event_wall_s"] = time.perf_counter() - t0
    up_ev = ev.outputs["gravity"]
    results: dict[str, np.ndarray] = {
        "event": quat_from_up(up_ev),
        "event_multirate": quat_from_up(ev_mr.outputs["gravity"]),
    }
    heading: dict[str, np.ndarray] = {}
    if g9 is not None:
        ev9, ev9_mr = (
            (ev, ev_mr) if g9 is g else _event_runs(out, g9, table, inputs, rest, "_9d", encs)
        )
        if g9 is g:
            for k in ("ops_per_s", "ops_per_s_multirate", *_rest_fields(rest)):
                out[f"{k}_9d"] = out[k]
        for key, run in (("event", ev9), ("event_multirate", ev9_mr)):
            heading[key] = quat_from_up_and_mag(run.outputs["gravity"], run.outputs["north"])
        out["mag_untrusted_frac"] = float(np.mean(ev9.outputs["mag_trust"][:, 0] <= 0.0))
    if compare:
        _compare(out, results, heading, g, g9, table, inputs, dense)
    _score(out, results, mask, gt)
    _score_heading(out, heading, mask, gt)
    trust = ev.outputs.get("accel_trust")
    out.update(trust_summary(trust[:, 0] if trust is not None else None, up_ev))
    flags = list(flags_in.flags())
    if out.get("accel_untrusted_frac", 0.0) > 0.5:
        flags.append("accel_untrusted")
    if out.get("gravity_norm_max_dev", 0.0) > 0.2:
        flags.append("gravity_norm_off")
    if out.get("mag_untrusted_frac", 0.0) > 0.5:
        flags.append("mag_untrusted")
    add_ratios(out)
    out["input_flags"] = flags_in.as_dict()
    out["flags"] = flags
    out["degraded"] = bool(flags)
    report = AttitudeReport(fields=out)
    _rows(report, out)
    return report


def _score(
    out: dict[str, Any], results: dict[str, np.ndarray], mask: np.ndarray, gt: np.ndarray | None
) -> None:
    names = {
        "event": "incl_rmse_deg",
        "event_multirate": "incl_rmse_deg_multirate",
        "dense": "dense_incl_rmse_deg",
        "vqf": "vqf_incl_rmse_deg",
        "vqf_multirate": "vqf_incl_rmse_deg_multirate",
        "gyro_only": "gyro_only_incl_rmse_deg",
    }
    for key, q in results.items():
        if gt is not None:
            out[names[key]] = _rmse_deg(inclination_error_rad(q[mask], gt[mask]))
        else:
            out[names[key]] = None
        if "vqf" in results and key != "vqf":
            # agreement with VQF (no ground truth needed): samples after min(5 s, 1/4) settling
            settle_s = min(5.0, out["duration_s"] / 4.0)
            settle = np.arange(q.shape[0]) >= int(settle_s * out["rate_hz"])
            out[names[key].replace("incl_rmse_deg", "incl_rmse_vs_vqf_deg")] = _rmse_deg(
                inclination_error_rad(q[settle], results["vqf"][settle])
            )


def _graphs(
    table: Table, p: AttitudeParams, graph: Graph | None, accel: np.ndarray, mag: np.ndarray | None
) -> tuple[Graph, Graph | None]:
    """(graph scored for inclination and ops, 9D graph for heading or None). Generated
    graphs: the 6D graph and, when the log has a magnetometer, the 9D graph (its gravity
    part is the 6D graph: ``m`` never feeds back into ``g``)."""
    if graph is not None:
        if "mag" in graph.nodes and mag is None:
            raise LogFileError(
                f"{table.source}: the graph has a 'mag' input but the log has no 'mag' "
                "group with a finite row"
            )
        return graph, (graph if "mag" in graph.nodes else None)
    p9 = _initial_state(p, accel, mag)
    g6 = build_attitude_graph(p9.model_copy(update={"with_mag": False}))
    return g6, (build_attitude_graph(p9) if p9.with_mag else None)


def _event_runs(
    out: dict[str, Any],
    g: Graph,
    table: Table,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    rest: dict[str, np.ndarray],
    suffix: str,
    encs: tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]],
) -> tuple[EventRun, EventRun]:
    """The graph on the engine at full rate and multi-rate (``encs``: the encoder options
    of each); ops fields (``+ suffix``), the rest ops on each mask of ``rest``."""
    use_mag = "mag" in g.nodes
    t_ns, duration_s, rate_hz = table.t_ns, max(table.duration_s, 1e-9), table.rate_hz
    ev = run_events(g, t_ns, _streams(table, None, None, use_mag, *inputs, encs[0]))
    mr = (MULTIRATE_ACCEL_HZ, MULTIRATE_MAG_HZ)
    ev_mr = run_events(g, t_ns, _streams(table, *mr, use_mag, *inputs, encs[1]))
    out[f"ops_per_s{suffix}"] = ev.syn_ops[-1] / duration_s
    out[f"ops_per_s_multirate{suffix}"] = ev_mr.syn_ops[-1] / duration_s
    for kind, mask in rest.items():
        out[f"rest{kind}_ops_per_s{suffix}"] = _rest_ops_per_s(ev.syn_ops, mask, rate_hz)
        out[f"rest{kind}_ops_per_s_multirate{suffix}"] = _rest_ops_per_s(
            ev_mr.syn_ops, mask, rate_hz
        )
    if not suffix:
        out["events_in_per_s"] = ev.n_events_in / duration_s
        out["spikes_in_per_s"] = ev.n_spikes_in / duration_s
    return ev, ev_mr


def _rest_masks(
    table: Table, gyro: np.ndarray, accel: np.ndarray, detect: bool
) -> dict[str, np.ndarray]:
    """The still samples: ``""`` the log's ``movement == 0`` phases (without that column:
    :func:`_still_mask`); with ``detect`` also ``"_detected"``, those of them where VQF's
    rest detection holds too. An annotated still phase starts when the IMU is put down and
    ends when it is picked up: its edges are motion (the gyro above its 2 deg/s quantum),
    which the detector leaves out."""
    mv = table.extra.get("movement")
    label = (np.asarray(mv) == 0) if mv is not None else _still_mask(gyro, accel)
    masks = {"": label}
    if detect:
        masks["_detected"] = label & vqf_rest_detected(table.t_ns, gyro, accel)
    return masks


def _rest_fields(rest: dict[str, np.ndarray]) -> list[str]:
    """The rest-ops field names of the masks in ``rest``."""
    return [f"rest{kind}_ops_per_s" for kind in rest]


def _rest_ops_per_s(syn_ops: np.ndarray, rest: np.ndarray, rate_hz: float) -> float:
    """Synaptic ops per second spent on the still samples."""
    d_ops = np.diff(syn_ops, prepend=0)
    n_rest = int(rest[1:].sum())
    return float(d_ops[1:][rest[1:]].sum() / (n_rest / rate_hz)) if n_rest else float("nan")


def _compare(
    out: dict[str, Any],
    results: dict[str, np.ndarray],
    heading: dict[str, np.ndarray],
    g: Graph,
    g9: Graph | None,
    table: Table,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    dense: bool = True,
) -> None:
    """Baselines: the graph dense per sample (its op count only, without ``dense``), VQF (6D; 9D for heading), gyro only. The
    dense run is of the 9D graph when there is one (its gravity part is exactly the dense
    6D graph); the 6D dense op count is the 6D graph's fixed ops per step."""
    gyro, accel, mag = inputs
    t_ns, duration_s, rate_hz = table.t_ns, max(table.duration_s, 1e-9), table.rate_hz
    gd = g9 if g9 is not None else g
    use_mag = g9 is not None
    read = ["gravity", "north"] if use_mag else ["gravity"]
    if dense:
        t0 = time.perf_counter()
        st = _streams(table, None, None, use_mag, *inputs)
        dense_out, dense_ops = run_dense(gd, t_ns, st, read)
        out["dense_wall_s"] = time.perf_counter() - t0
        results["dense"] = quat_from_up(dense_out["gravity"])
    else:  # the dense op count is fixed per sample: no need to run it for the ratio
        dense_ops = DenseExecutor(gd).ops_per_step * len(table)
    ops_g = dense_ops if gd is g else DenseExecutor(g).ops_per_step * len(table)
    out["dense_ops_per_s"] = ops_g / duration_s
    out["ops_ratio_vs_dense"] = out["ops_per_s"] / out["dense_ops_per_s"]
    if use_mag:
        if dense:
            heading["dense"] = quat_from_up_and_mag(dense_out["gravity"], dense_out["north"])
        out["dense_ops_per_s_9d"] = dense_ops / duration_s
        out["ops_ratio_vs_dense_9d"] = out["ops_per_s_9d"] / out["dense_ops_per_s_9d"]
    _run_vqf_all(results, heading, t_ns, gyro, accel, mag if use_mag else None)
    out["vqf_updates_per_s"] = 2.0 * rate_hz
    out["vqf_updates_per_s_multirate"] = rate_hz + MULTIRATE_ACCEL_HZ
    if use_mag:
        out["vqf9d_updates_per_s"] = 3.0 * rate_hz
        out["vqf9d_updates_per_s_multirate"] = rate_hz + MULTIRATE_ACCEL_HZ + MULTIRATE_MAG_HZ
    results["gyro_only"] = run_gyro_only(t_ns, gyro, accel[0])


def _initial_state(p: AttitudeParams, accel: np.ndarray, mag: np.ndarray | None) -> AttitudeParams:
    """Start from the first accelerometer direction (and magnetometer reading), as a daemon
    (and VQF) would; track the field when the log has a magnetometer unless ``with_mag``
    was set explicitly."""
    a0 = (
        accel[0] / np.linalg.norm(accel[0])
        if np.linalg.norm(accel[0]) > 0.5
        else np.array([0.0, 0.0, 1.0])
    )
    upd: dict[str, Any] = {"up0": tuple(float(v) for v in a0)}
    with_mag = p.with_mag if "with_mag" in p.model_fields_set else mag is not None
    upd["with_mag"] = with_mag and mag is not None
    if upd["with_mag"]:
        upd.update(_field_state(p, a0, mag[0]))
    return p.model_copy(update=upd)


def _held_mag(raw: np.ndarray | None) -> np.ndarray | None:
    """Magnetometer rows with NaN/Inf replaced by the last good row (the first good row
    before it: a dead first sample must not become the reference field); None when the log
    has no magnetometer or not one finite row."""
    if raw is None:
        return None
    good = np.flatnonzero(np.all(np.isfinite(raw), axis=1))
    if not good.size:
        return None
    return hold_nonfinite(raw, fallback=np.asarray(raw[good[0]], dtype=np.float64))[0]


def _field_state(p: AttitudeParams, up0: np.ndarray, mag0: np.ndarray) -> dict[str, Any]:
    """Initial ``m`` and, unless set explicitly, the field magnitude and horizontal field
    from the first magnetometer sample (the local field, as VQF also learns it)."""
    b = float(np.linalg.norm(mag0)) if np.all(np.isfinite(mag0)) else 0.0
    b_h = float(np.linalg.norm(mag0 - np.dot(mag0, up0) * up0)) if b > 0 else 0.0
    upd: dict[str, Any] = {}
    if b_h < 0.05 * max(b, 1e-9):  # no usable first sample (or near a magnetic pole)
        return upd
    if "mag_field_uT" not in p.model_fields_set:
        upd["mag_field_uT"] = b
    if "mag_horizontal_uT" not in p.model_fields_set:
        upd["mag_horizontal_uT"] = b_h
    n0 = (mag0 - np.dot(mag0, up0) * up0) / upd.get("mag_horizontal_uT", p.mag_horizontal_uT)
    upd["n0"] = tuple(float(v) for v in n0)
    upd["mag0_uT"] = tuple(float(v) for v in mag0)
    if "mag_vertical_uT" not in p.model_fields_set:
        upd["mag_vertical_uT"] = float(np.dot(mag0, up0))
    return upd


def _run_vqf_all(
    results: dict[str, np.ndarray],
    heading: dict[str, np.ndarray],
    t_ns: np.ndarray,
    gyro: np.ndarray,
    accel: np.ndarray,
    mag: np.ndarray | None,
) -> None:
    """VQF at full rate and multi-rate: 6D for inclination, 9D (with ``mag``) for heading."""
    acc_due = decimate(t_ns, MULTIRATE_ACCEL_HZ)
    if mag is None:
        results["vqf"] = run_vqf(t_ns, gyro, accel)
        results["vqf_multirate"] = run_vqf(t_ns, gyro, accel, acc_due)
        return
    results["vqf"], heading["vqf"] = run_vqf(t_ns, gyro, accel, mag=mag)
    results["vqf_multirate"], heading["vqf_multirate"] = run_vqf(
        t_ns, gyro, accel, acc_due, mag=mag, mag_due=decimate(t_ns, MULTIRATE_MAG_HZ)
    )


def _score_heading(
    out: dict[str, Any], heading: dict[str, np.ndarray], mask: np.ndarray, gt: np.ndarray | None
) -> None:
    """Heading RMSE (rotation about the earth vertical of q ⊗ q_gt⁻¹) of the 9D estimates,
    and (no ground truth needed) agreement with VQF 9D after the settling time."""
    if not heading:
        return
    settle_s = min(5.0, out["duration_s"] / 4.0)
    settle = np.arange(mask.shape[0]) >= int(settle_s * out["rate_hz"])
    for key, q in heading.items():
        name = {"event": "heading_rmse_deg"}.get(key, f"{key}_heading_rmse_deg")
        if key == "event_multirate":
            name = "heading_rmse_deg_multirate"
        elif key == "vqf_multirate":
            name = "vqf_heading_rmse_deg_multirate"
        out[name] = _rmse_deg(heading_error_rad(q[mask], gt[mask])) if gt is not None else None
        if "vqf" in heading and key != "vqf":
            out[name.replace("heading_rmse_deg", "heading_rmse_vs_vqf_deg")] = _rmse_deg(
                heading_error_rad(q[settle], heading["vqf"][settle])
            )


def _still_mask(gyro: np.ndarray, accel: np.ndarray) -> np.ndarray:
    """Samples where the IMU is still: |w| < 0.02 rad/s and |a| within 2 % of g0."""
    return (np.linalg.norm(gyro, axis=1) < 0.02) & (
        np.abs(np.linalg.norm(accel, axis=1) / 9.80665 - 1) < 0.02
    )


def _rows(report: AttitudeReport, f: dict[str, Any]) -> None:
    add = report.rows.append
    acc = f"accel {MULTIRATE_ACCEL_HZ:g} Hz"
    ratio = f.get("ops_ratio_vs_dense")
    add(
        (
            "spikefuse events, full rate",
            f.get("incl_rmse_deg"),
            None,
            f.get("ops_per_s"),
            "syn ops" + (f", ratio {ratio:.3f} to dense" if ratio is not None else ""),
        )
    )
    mr = f.get("ops_per_s_multirate")
    add(("spikefuse events, multi-rate", f.get("incl_rmse_deg_multirate"), None, mr, acc))
    if f.get("with_mag"):
        r9 = f.get("ops_ratio_vs_dense_9d")
        add(
            (
                "spikefuse 9D (+ field), full rate",
                None,
                f.get("heading_rmse_deg"),
                f.get("ops_per_s_9d"),
                "syn ops" + (f", ratio {r9:.3f} to dense 9D" if r9 is not None else ""),
            )
        )
        add(
            (
                "spikefuse 9D, multi-rate",
                None,
                f.get("heading_rmse_deg_multirate"),
                f.get("ops_per_s_multirate_9d"),
                f"{acc}, mag {MULTIRATE_MAG_HZ:g} Hz",
            )
        )
    if "dense_ops_per_s" in f:
        add(
            (
                "same graph, dense per sample",
                f.get("dense_incl_rmse_deg"),
                f.get("dense_heading_rmse_deg"),
                f.get("dense_ops_per_s_9d", f.get("dense_ops_per_s")),
                "ops of the 9D graph" if f.get("with_mag") else "",
            )
        )
        for sfx, note in (("", ""), ("_multirate", ", multi-rate")):
            add(
                (
                    "vqf 6D (heading: 9D)" + note if f.get("with_mag") else "vqf 6D" + note,
                    f.get(f"vqf_incl_rmse_deg{sfx}"),
                    f.get(f"vqf_heading_rmse_deg{sfx}"),
                    f.get(f"vqf_updates_per_s{sfx}"),
                    "updates/s (6D)",
                )
            )
        add(("gyro only", f.get("gyro_only_incl_rmse_deg"), None, None, ""))
    add(("events at rest", None, None, f.get("rest_ops_per_s"), "syn ops/s, still phases"))
    if f.get("with_mag"):
        add(("9D events at rest", None, None, f.get("rest_ops_per_s_9d"), "syn ops/s"))
    if "rest_detected_ops_per_s" in f:
        note = "syn ops/s, still phases where VQF detects rest"
        add(("events at detected rest", None, None, f.get("rest_detected_ops_per_s"), note))
        if f.get("with_mag"):
            add(("9D events at detected rest", None, None, f.get("rest_detected_ops_per_s_9d"), ""))
    if not f.get("ground_truth"):
        add(
            (
                "events vs vqf (no ground truth)",
                f.get("incl_rmse_vs_vqf_deg"),
                f.get("heading_rmse_vs_vqf_deg"),
                None,
                "agreement (heading vs vqf 9D)",
            )
        )


__all__ = ["AttitudeReport", "evaluate_attitude", "MULTIRATE_ACCEL_HZ", "MULTIRATE_MAG_HZ"]
