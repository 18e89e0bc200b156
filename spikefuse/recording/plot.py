"""``spikefuse plot FILE -o report.png|.html``: sensor reconstructions from events, a spike
raster per graph node (from Status spike counters), motor outputs and latency histograms.

Event streams are drawn as the receiver's reconstruction (``cumsum(counts)/scale`` per
channel, a staircase) with the event instants marked: the change-events *are* the trace.
Latency: ``log_time - publish_time`` of sensor messages (bus latency, recorder logs) and
``t_ns - cause_t_ns`` of MotorCommands (input-to-output latency).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from spikefuse.errors import ConfigError, ProtocolError
from spikefuse.protocol import EventBatch, MotorCommand, Status, decode, stream_of
from spikefuse.recording.info import render, summarize
from spikefuse.recording.mcapio import open_log

MAX_PANEL_STREAMS = 6
MAX_CHANNELS_DRAWN = 8


def _collect(log) -> dict:
    streams: dict[str, list[EventBatch]] = {}
    motors: dict[str, list[MotorCommand]] = {}
    status: list[Status] = []
    bus_lat_ms: list[float] = []
    for m in log.messages:
        try:
            msg = decode(m.payload)
        except ProtocolError:
            continue
        if isinstance(msg, EventBatch):
            streams.setdefault(stream_of(msg), []).append(msg)
            bus_lat_ms.append((m.log_time_ns - m.publish_time_ns) / 1e6)
        elif isinstance(msg, MotorCommand):
            motors.setdefault(msg.actuator, []).append(msg)
        elif isinstance(msg, Status) and isinstance(msg.metrics.get("spikes"), dict):
            status.append(msg)
    return {"streams": streams, "motors": motors, "status": status, "bus_lat_ms": bus_lat_ms}


def _t0(data: dict) -> int:
    ts = [b[0].t_ns for b in data["streams"].values()] + [
        c[0].t_ns for c in data["motors"].values()
    ]
    return min(ts) if ts else 0


def _reconstruction(batches: list[EventBatch]) -> tuple[np.ndarray, np.ndarray]:
    n = max(int(b.channels.max()) + 1 for b in batches if b.channels.size) if batches else 0
    n = min(n, MAX_CHANNELS_DRAWN)
    t = np.array([b.t_ns for b in batches], np.int64)
    vals = np.zeros((len(batches), n))
    acc = np.zeros(n, np.int64)
    for i, b in enumerate(batches):
        keep = b.channels < n
        np.add.at(acc, b.channels[keep].astype(np.int64), b.counts[keep].astype(np.int64))
        vals[i] = acc / b.scale
    return t, vals


def _draw_streams(ax_list, data: dict, t0: int) -> None:
    for ax, (name, batches) in zip(
        ax_list, sorted(data["streams"].items())[:MAX_PANEL_STREAMS], strict=False
    ):
        t, vals = _reconstruction(batches)
        ts = (t - t0) / 1e9
        for c in range(vals.shape[1]):
            ax.step(ts, vals[:, c], where="post", lw=0.8, label=f"ch{c}")
        ax.set_title(
            f"{name}: reconstruction from {sum(b.n_events for b in batches)} events", fontsize=8
        )
        if vals.shape[1] <= 4:
            ax.legend(fontsize=6, loc="upper right")


def _draw_raster(ax, data: dict, t0: int) -> None:
    st = data["status"]
    ax.set_title("spikes per graph node per status period", fontsize=8)
    if len(st) < 2:
        ax.text(
            0.5, 0.5, "no Status spike counters in this log", ha="center", transform=ax.transAxes
        )
        return
    nodes = sorted(st[-1].metrics["spikes"])
    cum = np.array([[s.metrics["spikes"].get(n, 0) for n in nodes] for s in st], float)
    rate = np.diff(cum, axis=0, prepend=0).T
    t = (np.array([s.t_ns for s in st]) - t0) / 1e9
    ax.imshow(
        np.log1p(rate),
        aspect="auto",
        interpolation="nearest",
        extent=(t[0], t[-1], len(nodes) - 0.5, -0.5),
        cmap="magma",
    )
    ax.set_yticks(range(len(nodes)), nodes, fontsize=7)


def _draw_motors(ax, data: dict, t0: int) -> None:
    ax.set_title("motor outputs", fontsize=8)
    for name, cmds in sorted(data["motors"].items()):
        t = (np.array([c.t_ns for c in cmds]) - t0) / 1e9
        v = np.array([c.values[:MAX_CHANNELS_DRAWN] for c in cmds])
        for k in range(v.shape[1]):
            ax.step(t, v[:, k], where="post", lw=0.8, label=f"{name}[{k}]")
    if data["motors"]:
        ax.legend(fontsize=6, loc="upper right")


def _draw_latency(ax, data: dict) -> None:
    ax.set_title("latency (ms)", fontsize=8)
    cause = [(c.t_ns - c.cause_t_ns) / 1e6 for cs in data["motors"].values() for c in cs]
    drawn = False
    for label, v in (("bus: log - publish", data["bus_lat_ms"]), ("motor: t - cause", cause)):
        a = np.asarray(v, float)
        if a.size and np.ptp(a) + np.abs(a).max() > 0:
            ax.hist(a, bins=50, alpha=0.6, label=f"{label} (median {np.median(a):.3g})")
            drawn = True
    if drawn:
        ax.legend(fontsize=6)
    else:
        ax.text(
            0.5, 0.5, "no latency data (offline/imported log)", ha="center", transform=ax.transAxes
        )


def plot_log(src: str | Path, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise ConfigError(f"plot output must end in .png or .html, found {out.name!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = open_log(src)
    data = _collect(log)
    t0 = _t0(data)
    n_s = max(1, min(MAX_PANEL_STREAMS, len(data["streams"])))
    fig, axes = plt.subplots(n_s + 3, 1, figsize=(10, 2.2 * (n_s + 3)))
    _draw_streams(axes[:n_s], data, t0)
    _draw_raster(axes[n_s], data, t0)
    _draw_motors(axes[n_s + 1], data, t0)
    _draw_latency(axes[n_s + 2], data)
    for ax in axes[:-1]:
        ax.tick_params(labelsize=7)
    axes[n_s + 1].set_xlabel("time since start (s)", fontsize=8)
    fig.suptitle(Path(src).name, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    if out.suffix.lower() == ".png":
        out.write_bytes(buf.getvalue())
    else:
        img = base64.b64encode(buf.getvalue()).decode()
        summary = html.escape(render(summarize(log)))
        out.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(Path(src).name)}</title></head>"
            f"<body><h1>{html.escape(Path(src).name)}</h1><pre>{summary}</pre>"
            f"<img alt='report' src='data:image/png;base64,{img}'></body></html>\n"
        )
    return out
