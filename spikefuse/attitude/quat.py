"""Quaternion helpers and the BROAD scoring convention (scalar-first, Hamilton product).

``q`` (IMU -> earth ENU) rotates body vectors into the earth frame: ``v_e = q v_b q*``.
"""

from __future__ import annotations

import numpy as np


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) arrays, scalar first."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def qconj(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qrotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors (..., 3) by unit quaternions (..., 4)."""
    v = np.asarray(v, dtype=np.float64)
    vq = np.concatenate([np.zeros(v.shape[:-1] + (1,)), v], axis=-1)
    return qmul(qmul(q, vq), qconj(q))[..., 1:]


def quat_from_up(up_b: np.ndarray) -> np.ndarray:
    """A quaternion (IMU -> ENU) that maps the body-frame "up" vector (what a resting
    accelerometer reads) onto earth z; heading is arbitrary (shortest arc). Rows with a
    zero or NaN vector give NaN."""
    u = np.asarray(up_b, dtype=np.float64)
    n = np.linalg.norm(u, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = u / n
    ux, uy, uz = np.moveaxis(u, -1, 0)
    # rotation taking u to z: axis u x z = (uy, -ux, 0), w = 1 + u.z
    q = np.stack([1.0 + uz, uy, -ux, np.zeros_like(uz)], axis=-1)
    flip = (1.0 + uz) < 1e-9  # u ~ -z: half turn about x
    q[flip] = np.array([0.0, 1.0, 0.0, 0.0])
    with np.errstate(invalid="ignore", divide="ignore"):
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q[~np.isfinite(n[..., 0]) | (n[..., 0] == 0)] = np.nan
    return q


def quat_from_up_and_mag(up_b: np.ndarray, mag_b: np.ndarray) -> np.ndarray:
    """Quaternion (IMU -> ENU) from body-frame "up" and magnetic field (TRIAD): earth y is
    the horizontal part of the field (magnetic north), z is up, x = y x z (east)."""
    z = np.asarray(up_b, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    m = np.asarray(mag_b, dtype=np.float64)
    y = m - np.sum(m * z, axis=-1, keepdims=True) * z
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    x = np.cross(y, z)
    r = np.stack([x, y, z], axis=-2)  # rows: earth axes in body coords -> R maps body to earth
    return quat_from_matrix(r)


def quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) to quaternions (scalar first, w >= 0)."""
    r = np.asarray(r, dtype=np.float64)
    tr = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    cand = np.stack(
        [
            np.stack(
                [
                    1 + tr,
                    r[..., 2, 1] - r[..., 1, 2],
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 1, 0] - r[..., 0, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    r[..., 2, 1] - r[..., 1, 2],
                    1 + 2 * r[..., 0, 0] - tr,
                    r[..., 0, 1] + r[..., 1, 0],
                    r[..., 0, 2] + r[..., 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 0, 1] + r[..., 1, 0],
                    1 + 2 * r[..., 1, 1] - tr,
                    r[..., 1, 2] + r[..., 2, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    r[..., 1, 0] - r[..., 0, 1],
                    r[..., 0, 2] + r[..., 2, 0],
                    r[..., 1, 2] + r[..., 2, 1],
                    1 + 2 * r[..., 2, 2] - tr,
                ],
                -1,
            ),
        ],
        axis=-2,
    )
    diag = np.stack([tr, r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]], -1)
    best = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def inclination_error_rad(q: np.ndarray, q_gt: np.ndarray) -> np.ndarray:
    """BROAD: q_e = q ⊗ q_gt⁻¹, inclination = 2·acos(sqrt(w² + z²))."""
    qe = qmul(q, qconj(q_gt))
    s = np.sqrt(qe[..., 0] ** 2 + qe[..., 3] ** 2)
    return 2.0 * np.arccos(np.clip(s, -1.0, 1.0))


def heading_error_rad(q: np.ndarray, q_gt: np.ndarray) -> np.ndarray:
    """BROAD: heading = 2·atan2(z, w) of q_e = q ⊗ q_gt⁻¹, wrapped to (-pi, pi]."""
    qe = qmul(q, qconj(q_gt))
    h = 2.0 * np.arctan2(qe[..., 3], qe[..., 0])
    return (h + np.pi) % (2 * np.pi) - np.pi


def up_from_quat(q: np.ndarray) -> np.ndarray:
    """Body-frame "up" of an IMU -> earth quaternion: q* z q."""
    return qrotate(qconj(q), np.broadcast_to([0.0, 0.0, 1.0], np.shape(q)[:-1] + (3,)))


def integrate_gyro(q0: np.ndarray, gyr: np.ndarray, dt_s: np.ndarray) -> np.ndarray:
    """Strapdown integration q_{i+1} = q_i ⊗ exp(w_i dt_i / 2) (body-frame rates)."""
    n = gyr.shape[0]
    out = np.empty((n, 4))
    q = np.asarray(q0, dtype=np.float64).copy()
    out[0] = q
    for i in range(1, n):
        w = gyr[i - 1]
        ang = np.linalg.norm(w) * dt_s[i - 1]
        if ang > 0.0 and np.isfinite(ang):
            ax = w / np.linalg.norm(w)
            dq = np.array([np.cos(ang / 2), *(np.sin(ang / 2) * ax)])
            q = qmul(q, dq)
            q /= np.linalg.norm(q)
        out[i] = q
    return out


__all__ = [
    "heading_error_rad",
    "inclination_error_rad",
    "integrate_gyro",
    "qconj",
    "qmul",
    "qrotate",
    "quat_from_matrix",
    "quat_from_up",
    "quat_from_up_and_mag",
    "up_from_quat",
]
