"""``spikefuse eval attitude LOG --plot FILE.png|.html``: the event-driven attitude graph on a
recorded log, drawn over time against the ground truth (BROAD form) and VQF.

Panels: (1) inclination, i.e. the tilt of the IMU's z axis from the vertical, estimated by
the graph, by VQF 6D and from the ground truth; (2) the BROAD inclination error of the graph
and of VQF (scored samples shaded); (3) the levelling command the 2-axis ``gimbal`` actuator gives
(limits and roll continuity included) from the graph's estimate and from the truth; (4)
change-events/s into the graph and synaptic ops/s against the motion (|gyro|), per bin.

The graph is run exactly as ``spikefuse eval`` runs it (same generated graph, full rate),
on the real :class:`~spikefuse.engine.Engine`; the events are counted at the engine's
``push``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikefuse.attitude.quat import inclination_error_rad, quat_from_up, up_from_quat
from spikefuse.engine import Engine
from spikefuse.errors import ConfigError
from spikefuse.tables import Table


class _CountingEngine(Engine):
    """The real engine, recording every push (time, n change-events, n spikes)."""

    def __init__(self, graph):
        super().__init__(graph)
        self.pushes: list[tuple[int, int, int]] = []

    def push(self, t_ns, input, channels, counts):  # noqa: A002  (EngineBase's name)
        ct = np.asarray(counts)
        self.pushes.append((int(t_ns), int(ct.size), int(np.abs(ct).sum())))
        return super().push(t_ns, input, channels, counts)


@dataclass
class AttitudeSeries:
    """Per-sample series of one run (``t_s`` from the first sample)."""

    t_s: np.ndarray
    up_event: np.ndarray  # (N, 3) body-frame up from the graph
    q_event: np.ndarray  # (N, 4)
    q_vqf: np.ndarray | None
    q_truth: np.ndarray | None  # NaN rows where the truth is missing
    scored: np.ndarray  # bool (N,)
    gyro_norm: np.ndarray  # rad/s
    push_t_s: np.ndarray  # time of every push into the engine
    push_events: np.ndarray  # change-events (nonzero channels) per push
    push_spikes: np.ndarray
    syn_ops: np.ndarray  # cumulative synaptic ops after sample i
    n_events_in: int  # the engine's own counter (equals push_events.sum())


def tilt_deg(up: np.ndarray) -> np.ndarray:
    """Inclination (deg) of body-frame up vectors: angle between the body z axis and up."""
    u = np.asarray(up, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = u[..., 2] / np.linalg.norm(u, axis=-1)
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def levelling_deg(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gimbal command (-roll, -pitch) in degrees for body-frame up vectors."""
    u = np.asarray(up, dtype=np.float64)
    roll = np.arctan2(u[..., 1], u[..., 2])
    pitch = np.arctan2(-u[..., 0], np.hypot(u[..., 1], u[..., 2]))
    return np.degrees(-roll), np.degrees(-pitch)


def attitude_series(table: Table, params=None, graph=None, vqf: bool = True) -> AttitudeSeries:
    """Run the graph (as ``evaluate_attitude`` builds it) and VQF over ``table``."""
    from spikefuse.attitude.evaluate import (
        _graphs,
        _held_mag,
        _scored_mask,
        _streams,
        encoder_options,
    )
    from spikefuse.attitude.generate import AttitudeParams
    from spikefuse.attitude.run import hold_nonfinite, run_events, run_vqf

    p = params or AttitudeParams(rate_hz=table.rate_hz)
    gyro, _ = hold_nonfinite(table.groups["gyro"])
    accel, _ = hold_nonfinite(table.groups["accel"], fallback=np.array([0.0, 0.0, 9.80665]))
    mag = _held_mag(table.groups.get("mag"))
    g, _ = _graphs(table, p, graph, accel, mag)
    engines: list[_CountingEngine] = []

    def factory(gr):
        engines.append(_CountingEngine(gr))
        return engines[-1]

    encs = encoder_options(p)
    streams = _streams(table, None, None, "mag" in g.nodes, gyro, accel, mag, encs)
    ev = run_events(g, table.t_ns, streams, engine_factory=factory)
    up = ev.outputs["gravity"]
    mask, gt = _scored_mask(table)
    pushes = np.array(engines[0].pushes, dtype=np.int64).reshape(-1, 3)
    t0 = int(table.t_ns[0])
    return AttitudeSeries(
        t_s=(table.t_ns - t0) / 1e9,
        up_event=up,
        q_event=quat_from_up(up),
        q_vqf=run_vqf(table.t_ns, gyro, accel) if vqf else None,
        q_truth=gt,
        scored=mask,
        gyro_norm=np.linalg.norm(gyro, axis=1),
        push_t_s=(pushes[:, 0] - t0) / 1e9,
        push_events=pushes[:, 1],
        push_spikes=pushes[:, 2],
        syn_ops=ev.syn_ops,
        n_events_in=int(ev.n_events_in),
    )


def _bins(t_s: np.ndarray, bin_s: float) -> np.ndarray:
    return np.arange(0.0, float(t_s[-1]) + bin_s, bin_s)


def _shade(ax, s: AttitudeSeries) -> None:
    """Shade the scored (movement, valid truth) stretches."""
    m = s.scored.astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], m, [0]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(s.t_s[a], s.t_s[b - 1], color="0.92", lw=0, zorder=0)


def _panel_inclination(ax, s: AttitudeSeries) -> None:
    ax.set_title("inclination (tilt of the IMU z axis from vertical)", fontsize=8)
    if s.q_vqf is not None:
        ax.plot(s.t_s, tilt_deg(up_from_quat(s.q_vqf)), "C2", lw=0.8, label="vqf 6D")
    ax.plot(s.t_s, tilt_deg(s.up_event), "C0", lw=0.8, label="spikefuse events")
    if s.q_truth is not None:
        ax.plot(s.t_s, tilt_deg(up_from_quat(s.q_truth)), "k--", lw=0.8, label="truth")
    ax.set_ylabel("deg", fontsize=8)
    ax.legend(fontsize=6, loc="upper right")


def _panel_error(ax, s: AttitudeSeries) -> None:
    _shade(ax, s)
    ref = s.q_truth if s.q_truth is not None else s.q_vqf
    what = "truth" if s.q_truth is not None else "vqf (no ground truth)"
    ax.set_title(f"inclination error vs {what} (shaded: scored samples)", fontsize=8)
    if ref is None:
        ax.text(0.5, 0.5, "no reference", ha="center", transform=ax.transAxes)
        return
    err = np.degrees(inclination_error_rad(s.q_event, ref))
    rmse = np.sqrt(np.nanmean(err[s.scored] ** 2)) if s.scored.any() else float("nan")
    ax.plot(s.t_s, err, "C0", lw=0.8, label=f"spikefuse events (RMSE {rmse:.2f} deg)")
    if s.q_vqf is not None and s.q_truth is not None:
        ev = np.degrees(inclination_error_rad(s.q_vqf, ref))
        rv = np.sqrt(np.nanmean(ev[s.scored] ** 2)) if s.scored.any() else float("nan")
        ax.plot(s.t_s, ev, "C2", lw=0.8, label=f"vqf 6D (RMSE {rv:.2f} deg)")
    ax.set_ylabel("deg", fontsize=8)
    ax.legend(fontsize=6, loc="upper right")


def gimbal_command_deg(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The commands (deg) the ``gimbal`` actuator, at its default settings, gives for a
    sequence of up vectors: clamped, no +-180 deg wraps (roll hysteresis included)."""
    from spikefuse.actuators.gimbal import GimbalConfig, levelling_series

    f = GimbalConfig.model_fields
    lim = (math.radians(f["roll_limit_deg"].default), math.radians(f["pitch_limit_deg"].default))
    hyst = math.radians(f["roll_hysteresis_deg"].default)
    r, p = levelling_series(up, *lim, hyst, f["min_norm"].default)
    return np.degrees(r), np.degrees(p)


def _panel_gimbal(ax, s: AttitudeSeries) -> None:
    from spikefuse.actuators.gimbal import GimbalConfig

    f = GimbalConfig.model_fields
    ax.set_title(
        "2-axis gimbal command (-roll, -pitch) as the gimbal actuator gives it (limits "
        f"+-{f['roll_limit_deg'].default:g} / +-{f['pitch_limit_deg'].default:g} deg)",
        fontsize=8,
    )
    r, p = gimbal_command_deg(s.up_event)
    if s.q_truth is not None:
        rt, pt = gimbal_command_deg(up_from_quat(s.q_truth))
        ax.plot(s.t_s, rt, "k", lw=1.4, alpha=0.5, label="-roll truth")
        ax.plot(s.t_s, pt, "0.5", lw=1.4, alpha=0.5, label="-pitch truth")
    ax.plot(s.t_s, r, "C0", lw=0.8, label="-roll events")
    ax.plot(s.t_s, p, "C1", lw=0.8, label="-pitch events")
    ax.set_ylabel("deg", fontsize=8)
    ax.legend(fontsize=6, loc="upper right", ncol=2)


def _panel_events(ax, s: AttitudeSeries, bin_s: float) -> None:
    edges = _bins(s.t_s, bin_s)
    n_ev, _ = np.histogram(s.push_t_s, edges, weights=s.push_events)
    d_ops = np.diff(s.syn_ops, prepend=0)
    n_ops, _ = np.histogram(s.t_s, edges, weights=d_ops)
    n_w, _ = np.histogram(s.t_s, edges, weights=s.gyro_norm)
    n_n, _ = np.histogram(s.t_s, edges)
    centers = edges[:-1] + bin_s / 2
    ax.set_title(
        f"events/s into the graph vs motion ({bin_s:g} s bins; {s.n_events_in} events in)",
        fontsize=8,
    )
    ax.step(centers, n_ev / bin_s, "C0", where="mid", lw=0.9, label="change-events/s in")
    ax.step(centers, n_ops / bin_s / 10.0, "C3", where="mid", lw=0.7, label="syn ops/s / 10")
    ax.set_ylabel("per s", fontsize=8)
    ax.legend(fontsize=6, loc="upper left")
    tw = ax.twinx()
    with np.errstate(invalid="ignore", divide="ignore"):
        tw.plot(centers, n_w / n_n, "k", lw=0.8, alpha=0.6)
    tw.set_ylabel("mean |gyro| (rad/s)", fontsize=8)
    tw.tick_params(labelsize=7)


def plot_attitude(
    series: AttitudeSeries,
    out: str | Path,
    title: str = "",
    summary: dict[str, Any] | None = None,
    bin_s: float = 1.0,
) -> Path:
    """Draw ``series`` to ``out`` (.png, or .html with the PNG and ``summary`` inline)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise ConfigError(f"plot output must end in .png or .html, found {out.name!r}", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    _panel_inclination(axes[0], series)
    _panel_error(axes[1], series)
    _panel_gimbal(axes[2], series)
    _panel_events(axes[3], series, bin_s)
    for ax in axes:
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("time since the first sample (s)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    try:
        if out.suffix.lower() == ".png":
            out.write_bytes(buf.getvalue())
        else:
            img = base64.b64encode(buf.getvalue()).decode()
            rows = "".join(
                f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                for k, v in (summary or {}).items()
                if not isinstance(v, (dict, list))
            )
            out.write_text(
                f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                f"</title></head><body><h1>{html.escape(title)}</h1><table>{rows}</table>"
                f"<img alt='attitude' src='data:image/png;base64,{img}'></body></html>\n",
                encoding="utf-8",
            )
    except OSError as exc:
        raise ConfigError(f"cannot write plot {out}: {exc}", "--plot") from None
    return out


__all__ = [
    "AttitudeSeries",
    "attitude_series",
    "gimbal_command_deg",
    "levelling_deg",
    "plot_attitude",
    "tilt_deg",
]
