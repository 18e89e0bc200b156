"""The MJCF of the simulated robot and its world, generated from a :class:`Track`.

A differential-drive robot (box chassis, two velocity-driven hinge wheels of radius 4 cm
at +-9 cm, a frictionless caster ball at the rear; forward camera 10 cm above the floor,
tilted 26.6 deg down; IMU site at the chassis centre; wheel angle sensors) on a plain
floor with the track's centre line painted as thin non-colliding boxes, and the track's
obstacles. Physics step 1 ms (the gyro rate)."""

from __future__ import annotations

import math

import numpy as np

from spikefuse.sim.config import MAX_CAMERA_HEIGHT, MAX_CAMERA_WIDTH
from spikefuse.sim.track import Track

TIMESTEP_S = 0.001
WHEEL_RADIUS_M = 0.04
HALF_TRACK_M = 0.09
"""half the distance between the wheels"""
CHASSIS_Z_M = 0.06
CAMERA_FWD_M = 0.1
CAMERA_UP_M = 0.04
CAMERA_TILT_RAD = math.atan(0.5)
LINE_HALF_WIDTH_M = 0.02
FLOOR_GREY = 0.6
PAINT_GREY = 0.05
PAINT_STEP_M = 0.05


def _paint(track: Track) -> list[str]:
    """Boxes along the centre line: one per straight, ~PAINT_STEP_M chords on curves."""
    out = []
    k = round(PAINT_STEP_M / 0.01)
    runs, turning = _runs(track)
    pts = track.xy
    n = len(pts)
    for a, b in zip(runs, runs[1:] + [runs[0] + n], strict=True):
        cuts = list(range(a, b, k)) + [b] if turning[a % n] else [a, b]
        for i0, i1 in zip(cuts, cuts[1:], strict=False):
            (x0, y0), (x1, y1) = pts[i0 % n], pts[i1 % n]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            half = math.hypot(x1 - x0, y1 - y0) / 2 + LINE_HALF_WIDTH_M / 2
            yaw = math.atan2(y1 - y0, x1 - x0)
            out.append(
                f'<geom name="paint{len(out)}" type="box" pos="{cx:.5f} {cy:.5f} 0.0005" '
                f'size="{half:.5f} {LINE_HALF_WIDTH_M} 0.0005" euler="0 0 {yaw:.6f}" '
                'material="paint" contype="0" conaffinity="0" group="1"/>'
            )
    return out


def _runs(track: Track) -> tuple[list[int], np.ndarray]:
    """Start indices of the straight and curved runs of the line, and which points turn."""
    h = track.heading
    turning = np.abs(np.angle(np.exp(1j * (np.roll(h, -1) - h)))) > 1e-6
    edges = np.flatnonzero(turning != np.roll(turning, 1))
    return sorted({0, *edges.tolist()}), turning


def _obstacles(track: Track) -> list[str]:
    out = []
    for i, ob in enumerate(track.spec.obstacles):
        if ob.kind == "box":
            sx, sy, sz = ob.size
            out.append(
                f'<geom name="obstacle{i}" type="box" pos="{ob.x_m} {ob.y_m} {sz}" '
                f'size="{sx} {sy} {sz}" material="obst"/>'
            )
        else:
            r, hz = ob.size
            out.append(
                f'<geom name="obstacle{i}" type="cylinder" pos="{ob.x_m} {ob.y_m} {hz}" '
                f'size="{r} {hz}" material="obst"/>'
            )
    return out


def world_xml(
    track: Track, pose: tuple[float, float, float], brightness: float, fovy_deg: float = 70.0
) -> str:
    """The MJCF of the world with the robot at ``pose`` = (x, y, yaw)."""
    x, y, yaw = pose
    amb = 0.35 * brightness
    dif = 0.55 * brightness
    body = "\n    ".join(_paint(track) + _obstacles(track))
    return f"""<mujoco model="spikefuse_sim_{track.name}">
  <option timestep="{TIMESTEP_S}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{MAX_CAMERA_WIDTH}" offheight="{MAX_CAMERA_HEIGHT}"/>
    <quality shadowsize="0"/>
    <headlight ambient="{amb:.4f} {amb:.4f} {amb:.4f}" diffuse="0 0 0" specular="0 0 0"/>
  </visual>
  <asset>
    <material name="floor" rgba="{FLOOR_GREY} {FLOOR_GREY} {FLOOR_GREY} 1" specular="0"/>
    <material name="paint" rgba="{PAINT_GREY} {PAINT_GREY} {PAINT_GREY} 1" specular="0"/>
    <material name="obst" rgba=".8 .2 .2 1"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 5" dir="0 0 -1" diffuse="{dif:.4f} {dif:.4f} {dif:.4f}"
           specular="0 0 0" castshadow="false"/>
    <geom name="floor" type="plane" size="20 20 2" material="floor"/>
    {body}
    <body name="chassis" pos="{x:.6f} {y:.6f} {CHASSIS_Z_M}" euler="0 0 {yaw:.9f}">
      <freejoint name="base"/>
      <geom name="body" type="box" size="0.1 0.07 0.03" mass="1.0" rgba=".2 .4 .8 1"/>
      <site name="imu" pos="0 0 0"/>
      <camera name="front" pos="{CAMERA_FWD_M} 0 {CAMERA_UP_M}" xyaxes="0 -1 0 0.5 0 1"
              fovy="{fovy_deg}"/>
      <body name="wheel_l" pos="0 {HALF_TRACK_M} -0.02" zaxis="0 1 0">
        <joint name="wl" type="hinge" axis="0 0 1" damping="0.001"/>
        <geom name="wheel_l" type="cylinder" size="{WHEEL_RADIUS_M} 0.01" mass="0.1"
              friction="1.2 0.01 0.001" rgba=".1 .1 .1 1"/>
      </body>
      <body name="wheel_r" pos="0 -{HALF_TRACK_M} -0.02" zaxis="0 1 0">
        <joint name="wr" type="hinge" axis="0 0 1" damping="0.001"/>
        <geom name="wheel_r" type="cylinder" size="{WHEEL_RADIUS_M} 0.01" mass="0.1"
              friction="1.2 0.01 0.001" rgba=".1 .1 .1 1"/>
      </body>
      <geom name="caster" type="sphere" pos="-0.08 0 -0.04" size="0.02" mass="0.05"
            friction="0 0 0" condim="1"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="ml" joint="wl" kv="0.5" forcerange="-1 1"/>
    <velocity name="mr" joint="wr" kv="0.5" forcerange="-1 1"/>
  </actuator>
  <sensor>
    <gyro name="gyro" site="imu"/>
    <accelerometer name="accel" site="imu"/>
    <jointpos name="enc_l" joint="wl"/>
    <jointpos name="enc_r" joint="wr"/>
  </sensor>
</mujoco>
"""
