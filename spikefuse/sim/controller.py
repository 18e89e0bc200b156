"""The hand-built line follower: a sigma-delta graph from the camera's DVS state and the
gyro to the two wheel speeds (``configs/graphs/sim_line.yaml`` + ``.npz``, written by
``python -m spikefuse.sim.controller configs/graphs``).

* ``camera`` (Input, W*H, 1 count = one DVS threshold, 0.2 in log intensity): what the
  events integrate to is the log image relative to the first (flat, floor-grey) frame:
  about 0 on the floor and -2.5 on the dark line (sky rows far below: they get no weight).
* ``line`` (Dense W*H -> 1): over the rows from just above the image centre to the bottom
  (the floor 5-30 cm ahead), sum of ``-state * x`` with ``x`` the column's offset from the
  centre in [-1, 1], divided by the number of rows: positive when the line is right of
  centre. A uniform brightness change adds the same to every pixel and cancels (the
  weights of a row sum to zero).
* ``wheels`` (Dense [line, gyro] -> 2, bias = cruise speed): the yaw-rate command is
  ``w = -kp*line - kd*gyro_z`` (gyro damping); left/right wheel speed = ``(v -+ w*b)/r``.
* ``wheels_out`` (Output, 2): rad/s, + = forward.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from spikefuse.graph import Graph
from spikefuse.sim import model as M

SPEED_MPS = 0.5
KP = 1.6
KD = 0.15
GYRO_SCALE = 20.0
ACCEL_SCALE = 2.0
WHEELS_SCALE = 100.0
CAMERA_SCALE = 5.0
FIRST_ROW_FRACTION = 0.4


def line_weights(width: int, height: int) -> np.ndarray:
    """(W*H, 1): the column offset in [-1, 1] on the rows used, 0 elsewhere, negated (the
    line is darker than the floor) and divided by the number of rows and by 10."""
    x = (np.arange(width) - (width - 1) / 2) / (width / 2)
    w = np.zeros((height, width))
    first = round(FIRST_ROW_FRACTION * height)
    w[first:, :] = -x[None, :] / ((height - first) * 10.0)
    return w.reshape(-1, 1)


def line_follower_graph(
    width: int = 64,
    height: int = 48,
    speed_mps: float = SPEED_MPS,
    kp: float = KP,
    kd: float = KD,
) -> Graph:
    g = Graph("sim_line")
    g.input("camera", width * height, scale=CAMERA_SCALE)
    g.input("gyro", 3, scale=GYRO_SCALE)
    g.input("accel", 3, scale=ACCEL_SCALE)
    g.input("wheels", 2, scale=WHEELS_SCALE)
    g.dense("line", "camera", line_weights(width, height), scale=50.0)
    r, b = M.WHEEL_RADIUS_M, M.HALF_TRACK_M
    # w = -kp*line - kd*gz ; left = (v - w b)/r, right = (v + w b)/r
    k = b / r
    weights = np.array(
        [
            [kp * k, -kp * k],  # line
            [0.0, 0.0],  # gyro x
            [0.0, 0.0],  # gyro y
            [kd * k, -kd * k],  # gyro z
        ]
    )
    bias = np.full(2, speed_mps / r)
    g.dense("wheels_cmd", ["line", "gyro"], weights, bias=bias, scale=WHEELS_SCALE)
    g.output("wheels_out", "wheels_cmd", scale=WHEELS_SCALE)
    return g


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = line_follower_graph()
    manifest, arrays = g.to_dict()
    np.savez_compressed(folder / "sim_line.npz", **{k: v for k, v in arrays.items()})
    import yaml

    manifest = {"weights": "sim_line.npz", **manifest}
    head = (
        "# The hand-built line follower of the simulated robot (spikefuse/sim/controller.py);\n"
        "# regenerate with  python -m spikefuse.sim.controller configs/graphs\n"
    )
    text = yaml.safe_dump(manifest, sort_keys=False)
    (folder / "sim_line.yaml").write_text(head + text)


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "configs/graphs"))
