"""Logging the view's state to Rerun: entity paths, layout (blueprint) and counters.

Entities (timeline ``time``: seconds since the view started, from the messages' own
CLOCK_MONOTONIC stamps):

* ``camera/<sensor>/<input>/image``: the integrated DVS state (grey, mid-grey = no change);
* ``camera/<sensor>/<input>/events``: the events since the previous image (ON green, OFF red);
* ``motor/<actuator>``: every command's values (one series per channel);
* ``rates/<sensor>/<input>``: events/s; ``rates/motor/<actuator>``: commands/s;
* ``sim/world/{track,trail,robot,heading}`` and ``sim/metrics/<key>``: the simulated robot
  (y is drawn up: the 2-D view's y axis points down, so y is negated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from spikefuse.view.state import Bounds, CameraState, PoseTrack

TIMELINE = "time"
PLOT_WINDOW_S = 20.0
TRACK_RGB = (110, 110, 110)
TRAIL_RGB = (80, 160, 255)
ROBOT_RGB = (255, 200, 0)
TRAIL_PERIOD_NS = 200_000_000
"""the trail (up to ``max_trail`` points) is re-sent at most this often"""


def _path(*parts: str) -> str:
    return "/".join(rr.escape_entity_path_part(p) for p in parts)


def camera_path(key: str, what: str) -> str:
    return _path("camera", *key.split("/"), what)


def _recent() -> rrb.VisibleTimeRange:
    return rrb.VisibleTimeRange(
        TIMELINE,
        start=rrb.TimeRangeBoundary.cursor_relative(seconds=-PLOT_WINDOW_S),
        end=rrb.TimeRangeBoundary.cursor_relative(),
    )


def blueprint(cameras: list[str], with_pose: bool, bounds: Bounds | None = None) -> rrb.Blueprint:
    """One grid: per camera its integrated image and its events, the motor commands, the
    event rates and, with a simulated robot, its pose on the track (framed on the track)
    and its metrics."""
    views: list[rrb.View] = []
    for key in cameras:
        views.append(rrb.Spatial2DView(origin=camera_path(key, "image"), name=f"{key} integrated"))
        views.append(rrb.Spatial2DView(origin=camera_path(key, "events"), name=f"{key} events"))
    if with_pose:
        frame = None
        if bounds is not None:
            frame = rrb.VisualBounds2D(x_range=bounds[:2], y_range=bounds[2:])
        views.append(
            rrb.Spatial2DView(origin="/sim/world", name="robot on the track", visual_bounds=frame)
        )
    views.append(rrb.TimeSeriesView(origin="/motor", name="motor commands", time_ranges=_recent()))
    views.append(
        rrb.TimeSeriesView(origin="/rates", name="events/s per stream", time_ranges=_recent())
    )
    if with_pose:
        views.append(rrb.TimeSeriesView(origin="/sim/metrics", name="sim", time_ranges=_recent()))
    return rrb.Blueprint(rrb.Grid(*views), collapse_panels=True)


@dataclass
class Counters:
    images: int = 0
    event_images: int = 0
    motor: int = 0
    rates: int = 0
    pose: int = 0
    blueprints: int = 0
    per_camera: dict[str, int] = field(default_factory=dict)


class RerunSink:
    def __init__(self, rec: rr.RecordingStream, t0_ns: int):
        self.rec = rec
        self.t0_ns = t0_ns
        self.n = Counters()
        self._named: set[str] = set()
        self._layout: tuple | None = None
        self._trail_ns = 0

    def _at(self, t_ns: int) -> None:
        self.rec.set_time(TIMELINE, duration=(t_ns - self.t0_ns) / 1e9)

    def layout(self, cameras: list[str], with_pose: bool, bounds: Bounds | None = None) -> None:
        """(Re)send the blueprint when the set of views (or the track) changes."""
        key = (tuple(cameras), with_pose, bounds)
        if key != self._layout:
            self._layout = key
            self.rec.send_blueprint(blueprint(cameras, with_pose, bounds), make_active=True)
            self.n.blueprints += 1

    def camera(self, key: str, cam: CameraState) -> None:
        self._at(cam.t_ns)
        self.rec.log(camera_path(key, "image"), rr.Image(cam.image_u8()))
        self.rec.log(camera_path(key, "events"), rr.Image(cam.take_events_rgb()))
        self.n.images += 1
        self.n.event_images += 1
        self.n.per_camera[key] = self.n.per_camera.get(key, 0) + 1

    def motor(self, actuator: str, t_ns: np.ndarray, values: np.ndarray) -> None:
        """Every command of a block in one call (one row per command)."""
        path = _path("motor", actuator)
        if path not in self._named:
            self._named.add(path)
            names = [f"{actuator}[{i}]" for i in range(values.shape[1])]
            self.rec.log(path, rr.SeriesLines(names=names), static=True)
        times = rr.TimeColumn(TIMELINE, duration=(t_ns - self.t0_ns) / 1e9)
        self.rec.send_columns(path, indexes=[times], columns=rr.Scalars.columns(scalars=values))
        self.n.motor += len(t_ns)

    def rates(self, now_ns: int, rates: dict[str, float]) -> None:
        self._at(now_ns)
        for key, rate in sorted(rates.items()):
            self.rec.log(_path("rates", *key.split("/")), rr.Scalars(rate))
        self.n.rates += 1

    def pose(self, track: PoseTrack) -> None:
        x, y, yaw = track.pose  # type: ignore[misc]
        self._at(track.t_ns)
        flip = np.array([1.0, -1.0])
        if track.track_changed and track.track_xy is not None:
            closed = np.vstack([track.track_xy, track.track_xy[:1]]) * flip
            self.rec.log("sim/world/track", rr.LineStrips2D([closed], colors=[TRACK_RGB]))
            track.track_changed = False
        size = self._robot_size(track)
        if track.t_ns - self._trail_ns >= TRAIL_PERIOD_NS and len(track.trail) > 1:
            self._trail_ns = track.t_ns
            trail = np.asarray(track.trail) * flip
            self.rec.log("sim/world/trail", rr.LineStrips2D([trail], colors=[TRAIL_RGB]))
        self.rec.log("sim/world/robot", rr.Points2D([[x, -y]], radii=size, colors=[ROBOT_RGB]))
        heading = [[3 * size * np.cos(yaw), -3 * size * np.sin(yaw)]]
        self.rec.log(
            "sim/world/heading",
            rr.Arrows2D(vectors=heading, origins=[[x, -y]], colors=[ROBOT_RGB]),
        )
        for k, v in track.scalars.items():
            self.rec.log(_path("sim", "metrics", k), rr.Scalars(v))
        track.fresh = False
        self.n.pose += 1

    @staticmethod
    def _robot_size(track: PoseTrack) -> float:
        if track.track_xy is None:
            return 0.05
        extent = float(np.ptp(track.track_xy, axis=0).max())
        return max(0.025 * extent, 1e-3)
