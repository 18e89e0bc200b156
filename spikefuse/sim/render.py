"""The robot's camera: MuJoCo's offscreen renderer (OpenGL through EGL, headless) or a
NumPy floor renderer that needs nothing but NumPy.

The NumPy renderer looks up, for every pixel, where its ray meets the floor (pinhole
camera at the model's camera pose) in a raster of the painted line (5 mm cells) and
shades it like the MuJoCo scene (same floor and paint greys, same lights); obstacles and
the robot itself are not drawn (they are off the line). Both return grey ``uint8``
images of ``height x width``."""

from __future__ import annotations

import logging
import math
import os
import sys

import numpy as np

from spikefuse.errors import ConfigError
from spikefuse.sim import model as M
from spikefuse.sim.track import Track

DEBIAN_GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"
GL_HINT = (
    "MuJoCo's renderer needs OpenGL through EGL (MUJOCO_GL=egl); on Debian/Ubuntu: "
    f"apt-get install {DEBIAN_GL_PACKAGES}"
)
CELL_M = 0.005
LUMA = np.array([0.299, 0.587, 0.114])


def ensure_gl_platform() -> None:
    """MuJoCo picks its OpenGL platform when its renderer module is first imported:
    default to headless EGL unless the user chose one (the one place this is set).
    PyOpenGL's INFO notes (an optional accelerator module it did not find) are not ours
    to report: its logger says only warnings."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    logging.getLogger("OpenGL").setLevel(logging.WARNING)


class MujocoCamera:
    """MuJoCo's offscreen renderer on the model's ``front`` camera."""

    name = "mujoco"

    def __init__(self, mj, model, width: int, height: int):
        self._mj = mj
        self._renderer = mj.Renderer(model, height=height, width=width)

    def render(self, data, pose: tuple[float, float, float]) -> np.ndarray:
        self._renderer.update_scene(data, camera="front")
        rgb = self._renderer.render()
        return (rgb.astype(np.float32) @ LUMA.astype(np.float32)).astype(np.uint8)

    def close(self) -> None:
        self._renderer.close()


class NumpyCamera:
    """Floor lookup of the painted line from the camera pose (no OpenGL)."""

    name = "numpy"

    def __init__(self, track: Track, width: int, height: int, fovy_deg: float, brightness: float):
        hx, hy = track.half_extent_m
        self.x0, self.y0 = -hx - 2.0, -hy - 2.0
        nx, ny = round((2 * hx + 4.0) / CELL_M), round((2 * hy + 4.0) / CELL_M)
        light = 0.35 + 0.55  # headlight ambient + the directional light straight down
        floor = min(255.0, M.FLOOR_GREY * light * brightness * 255.0)
        paint = min(255.0, M.PAINT_GREY * light * brightness * 255.0)
        grid = np.full((ny, nx), floor, np.float32)
        r = round(M.LINE_HALF_WIDTH_M / CELL_M)
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
        keep = ox**2 + oy**2 <= r * r
        ci = ((track.xy[:, 1] - self.y0) / CELL_M).round().astype(np.int64)
        cj = ((track.xy[:, 0] - self.x0) / CELL_M).round().astype(np.int64)
        ii = np.clip(ci[:, None] + oy[keep][None, :], 0, ny - 1)
        jj = np.clip(cj[:, None] + ox[keep][None, :], 0, nx - 1)
        grid[ii.ravel(), jj.ravel()] = paint
        self.grid = grid.astype(np.uint8)
        self.gx, self.gy, self.sky = _floor_rays(width, height, math.radians(fovy_deg))

    def render(self, data, pose: tuple[float, float, float]) -> np.ndarray:
        x, y, yaw = pose
        c, s = math.cos(yaw), math.sin(yaw)
        cx, cy = x + c * M.CAMERA_FWD_M, y + s * M.CAMERA_FWD_M
        wx = cx + c * self.gx - s * self.gy
        wy = cy + s * self.gx + c * self.gy
        ny, nx = self.grid.shape
        i = np.clip(((wy - self.y0) / CELL_M).astype(np.int64), 0, ny - 1)
        j = np.clip(((wx - self.x0) / CELL_M).astype(np.int64), 0, nx - 1)
        img = self.grid[i, j]
        img[self.sky] = 0
        return img

    def close(self) -> None:
        return None


def _floor_rays(w: int, h: int, fovy: float):
    """Floor points (camera-relative, robot frame) of every pixel's ray."""
    f = (h / 2) / math.tan(fovy / 2)
    u = np.arange(w) - (w - 1) / 2
    v = np.arange(h) - (h - 1) / 2
    uu, vv = np.meshgrid(u, v)
    dx, dy, dz = np.full_like(uu, f), -uu, -vv
    c, s = math.cos(M.CAMERA_TILT_RAD), math.sin(M.CAMERA_TILT_RAD)
    dx, dz = c * dx + s * dz, -s * dx + c * dz
    cam_h = M.CHASSIS_Z_M + M.CAMERA_UP_M
    sky = dz >= -1e-6
    t = np.where(sky, 0.0, cam_h / np.maximum(-dz, 1e-6))
    t = np.minimum(t, 50.0)
    return dx * t, dy * t, sky


def make_camera(kind: str, mj, model, track: Track, cam, brightness: float, where: str):
    """The camera renderer for ``renderer: auto|mujoco|numpy``. ``auto`` falls back to
    NumPy (and says which Debian packages give the MuJoCo path) when OpenGL fails."""
    if kind in ("auto", "mujoco"):
        try:
            return MujocoCamera(mj, model, cam.width, cam.height)
        except (ImportError, RuntimeError, OSError, mj.FatalError) as exc:
            if kind == "mujoco":
                raise ConfigError(
                    f"renderer 'mujoco' needs OpenGL, which failed "
                    f"(MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}): {exc}. {GL_HINT}; "
                    "or set renderer: numpy",
                    f"{where}.renderer",
                ) from None
            print(
                f"sim: OpenGL rendering unavailable ({type(exc).__name__}: {exc}); using the "
                f"NumPy floor renderer. For MuJoCo's renderer: {GL_HINT}",
                file=sys.stderr,
                flush=True,
            )
    return NumpyCamera(track, cam.width, cam.height, cam.fovy_deg, brightness)


__all__ = ["DEBIAN_GL_PACKAGES", "MujocoCamera", "NumpyCamera", "ensure_gl_platform", "make_camera"]
