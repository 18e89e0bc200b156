"""Closed tracks: a painted centre line on the floor (a closed polyline, 1 cm spacing),
the obstacles beside it, and the geometry the ground truth needs (progress along the line,
signed cross-track error, the heading of the line).

Tracks are chosen by name (:data:`TRACKS`): ``oval`` (two 3 m straights joined by
half-circles of radius 1 m: 12.28 m) and ``rounded_rect`` (4 m x 2.4 m, corner radius
0.6 m: 11.77 m). Obstacles stand 0.4-0.7 m off the line. The line runs counter-clockwise; the start is the middle of the bottom
straight, heading +x."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SPACING_M = 0.01


@dataclass(frozen=True)
class Obstacle:
    """A box (``size`` = half extents x, y, z) or a cylinder (``size`` = radius, half
    height) standing on the floor at ``(x, y)``."""

    kind: str
    x_m: float
    y_m: float
    size: tuple[float, ...]


@dataclass(frozen=True)
class TrackSpec:
    straight_x_m: float
    straight_y_m: float
    corner_radius_m: float
    obstacles: tuple[Obstacle, ...]


TRACKS: dict[str, TrackSpec] = {
    # a stadium: the straights meet half-circles
    "oval": TrackSpec(
        3.0,
        0.0,
        1.0,
        (
            Obstacle("box", 0.0, -0.55, (0.1, 0.1, 0.1)),
            Obstacle("cylinder", 2.56, 1.06, (0.08, 0.1)),
            Obstacle("box", -0.8, 1.5, (0.15, 0.08, 0.1)),
            Obstacle("cylinder", -2.9, -0.6, (0.1, 0.1)),
        ),
    ),
    "rounded_rect": TrackSpec(
        2.8,
        1.2,
        0.6,
        (
            Obstacle("box", 0.5, -0.75, (0.1, 0.1, 0.1)),
            Obstacle("cylinder", 2.55, 1.2, (0.08, 0.1)),
            Obstacle("box", -1.0, 1.85, (0.15, 0.08, 0.1)),
            Obstacle("cylinder", -1.4, 0.0, (0.1, 0.1)),
        ),
    ),
}


class Track:
    """The centre line of a named track and the queries on it."""

    def __init__(self, name: str):
        if name not in TRACKS:
            raise KeyError(name)
        self.name = name
        self.spec = TRACKS[name]
        self.xy = _centre_line(self.spec)
        seg = np.diff(np.vstack([self.xy, self.xy[:1]]), axis=0)
        self._seg = seg
        self._seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self.s = np.concatenate([[0.0], np.cumsum(self._seg_len)[:-1]])
        self.length_m = float(self._seg_len.sum())
        self.heading = np.arctan2(seg[:, 1], seg[:, 0])

    @property
    def half_extent_m(self) -> tuple[float, float]:
        sp = self.spec
        return (sp.straight_x_m / 2 + sp.corner_radius_m, sp.straight_y_m / 2 + sp.corner_radius_m)

    def start_pose(self) -> tuple[float, float, float]:
        x, y = self.xy[0]
        return float(x), float(y), float(self.heading[0])

    def pose_at(self, s_m: float) -> tuple[float, float, float]:
        """Point and heading of the line ``s_m`` along it (wraps around)."""
        s_m = s_m % self.length_m
        i = int(np.searchsorted(self.s, s_m, side="right") - 1)
        f = (s_m - self.s[i]) / self._seg_len[i]
        x, y = self.xy[i] + f * self._seg[i]
        return float(x), float(y), float(self.heading[i])

    def project(self, x: float, y: float) -> tuple[float, float]:
        """``(s_m, cross_track_m)``: arc length of the nearest point of the line and the
        signed distance to it (positive: left of the direction of travel)."""
        d = self.xy - (x, y)
        i = int(np.argmin(d[:, 0] ** 2 + d[:, 1] ** 2))
        best = None
        for j in (i - 1, i):
            j %= len(self.xy)
            px, py = self.xy[j]
            sx, sy = self._seg[j]
            ln2 = self._seg_len[j] ** 2
            f = min(max(((x - px) * sx + (y - py) * sy) / ln2, 0.0), 1.0)
            qx, qy = px + f * sx, py + f * sy
            dist2 = (x - qx) ** 2 + (y - qy) ** 2
            if best is None or dist2 < best[0]:
                cross = (sx * (y - py) - sy * (x - px)) / self._seg_len[j]
                best = (dist2, self.s[j] + f * self._seg_len[j], cross)
        assert best is not None
        s = float(best[1] % self.length_m)
        return (0.0 if self.length_m - s < 1e-9 else s), float(best[2])

    def sample(self, step_m: float = 0.1) -> list[list[float]]:
        """The centre line every ``step_m`` as ``[[x, y], ...]`` (closed: first != last)."""
        k = max(1, round(step_m / SPACING_M))
        return [[round(float(x), 4), round(float(y), 4)] for x, y in self.xy[::k]]


def _centre_line(sp: TrackSpec) -> np.ndarray:
    """Counter-clockwise rounded rectangle with the given straights and corner radius,
    starting at the middle of the bottom straight, points every ~1 cm."""
    a, b, r = sp.straight_x_m / 2, sp.straight_y_m / 2, sp.corner_radius_m
    pts: list[np.ndarray] = []

    def line(p0, p1):
        n = max(1, round(math.dist(p0, p1) / SPACING_M))
        t = np.arange(n) / n
        pts.append(np.column_stack([p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])]))

    def arc(cx, cy, a0):
        n = max(1, round(r * math.pi / 2 / SPACING_M))
        t = a0 + np.arange(n) / n * (math.pi / 2)
        pts.append(np.column_stack([cx + r * np.cos(t), cy + r * np.sin(t)]))

    bottom, top = -(b + r), b + r
    line((0.0, bottom), (a, bottom))
    arc(a, -b, -math.pi / 2)
    if b > 0:
        line((a + r, -b), (a + r, b))
    arc(a, b, 0.0)
    line((a, top), (-a, top))
    arc(-a, b, math.pi / 2)
    if b > 0:
        line((-a - r, b), (-a - r, -b))
    arc(-a, -b, math.pi)
    line((-a, bottom), (0.0, bottom))
    return np.vstack(pts)


__all__ = ["TRACKS", "Obstacle", "Track", "TrackSpec"]
