"""Generate the event-driven attitude (gravity-tracking) graph.

Structure (a complementary, Mahony-style tracker of the "up" direction ``g`` in the body
frame; ``g`` is what a resting accelerometer reads, divided by standard gravity)::

    dg/dt = g x w  +  K * ( t * a/g0  +  (1 - t) * g_q  -  g )

* ``g`` is three 1-unit Integrator nodes ``g_x, g_y, g_z``. ``g x w`` (a body-frame
  vector of a fixed earth direction turns with ``-w x g``) is, per axis c, a Product
  ``Pg_c = w * [g_a, g_b, 0]`` whose b-side is a plain source list (a permutation costs
  nothing; the constant ``zero`` node fills the slot of w_c), summed with signs by the
  1-output Dense ``gd_c``. Each product unit therefore feeds exactly one Dense (one
  synaptic op per spike), and a gyro spike costs three;
* the correction pulls ``g`` to the accelerometer direction with gain ``K = 1/tau_acc_s``.
  The ``- K g`` term is the integrator's own leak (``tau_s = tau_acc_s``), so it acts on the
  continuous state, exactly, between events. This is what makes the loop settle: with a
  pure integrator and quantized feedback the state would chatter between two levels
  forever (a limit cycle); with the leak it approaches a fixed point and stops crossing
  levels, so a still IMU costs no work;
* normalisation: ``a/g0`` has unit length when only gravity acts. The accelerometer is
  trusted by ``t = clip((e_out - e)/(e_out - e_in), 0, 1)`` with ``e = | |a|^2/g0^2 - 1 |``
  (Product ``a*a``, Dense with ``abs``, Dense with ``clip``): full trust within ``e_in``,
  none beyond ``e_out``. The untrusted share ``1 - t`` holds ``g`` at its own (quantized)
  value, so with a dead or saturated accelerometer (``t = 0``) the graph becomes a pure
  gyro integrator instead of pulling ``g`` to zero. ``-w x g`` preserves the norm and the
  correction pulls towards the unit sphere, so ``|g| ~ 1`` without a division node;
* Output nodes: ``gravity`` (``g``) and ``accel_trust`` (``t``); a consumer turns ``g``
  into roll/pitch or a quaternion (:mod:`spikefuse.attitude.quat`).

With a magnetometer (``with_mag=True``) a second vector, the body-frame magnetic field
``m`` (in units of ``mag_ref_uT``), is tracked the same way
(``dm/dt = m x w + K_m (mag/B0 - m)``, no gate); heading follows from ``g`` and ``m``.

Scales are chosen from first principles (:class:`AttitudeParams`), not fitted to a log:

* ``K = 1/tau_acc_s`` with ``tau_acc_s = 1`` s (Mahony's proportional gain of 1 rad/s);
* tilt budget ``eps_tilt = 0.05`` rad: roughly the tilt that everyday linear acceleration
  (~0.5 m/s²) puts on the accelerometer direction, so quantizing the correction finer buys
  nothing during motion; the errors it leaves average out through the 1/K low-pass;
* gyro quantum ``q_w = K eps_tilt`` (at least ``4 sigma_w``, ``sigma_w`` = noise density ×
  sqrt(rate), rounded up to a multiple of ``K eps_tilt``): quantizing a slowly varying
  rate is at worst a bias of ``q_w/2``, which the correction holds to a tilt error of
  ``q_w/(2K) = eps_tilt/2``; and a still gyro sends nothing;
* accelerometer quantum ``q_a = g0 eps_tilt`` (at least ``4 sigma_a``): a tilt of
  ``eps_tilt`` moves a component by at most ``g0 eps_tilt``;
* ``g`` and its output: quantum ``eps_out`` (0.5 degrees, ~0.14 degrees rms);
* every term summed into ``gd_c`` (``Pg`` on the grid ``q_w``, ``K Qa/g0`` and ``K Qg`` on
  ``K eps_tilt``) lies on the grid ``K eps_tilt``, which is the quantum of ``gd``: the sum
  is exact, so ``gd`` never sits at a rounding tie. (At a tie, round-half-away toggles a
  node on every recompute; inside the integrator loop that became a burst of ~10^6
  spikes in one sample during development.)

Why the leak: with a pure integrator and quantized feedback the state would chatter
between two levels forever; with the correction written as a leak towards a fixed point
the state settles and stops crossing levels, so a still IMU costs no work.
"""

from __future__ import annotations

import argparse
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import yaml
from pydantic import Field, model_validator

from spikefuse.config import StrictModel
from spikefuse.graph import Graph
from spikefuse.tables import G0_M_S2

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "graphs" / "attitude.yaml"


class AttitudeParams(StrictModel):
    """First-principles settings of the attitude graph (see module docstring)."""

    rate_hz: float = Field(default=285.714, gt=0, description="gyro sample rate")
    gyro_noise_density: float = Field(
        default=0.007 * math.pi / 180, gt=0, description="rad/s/sqrt(Hz)"
    )
    accel_noise_density: float = Field(default=120e-6 * G0_M_S2, gt=0, description="m/s^2/sqrt(Hz)")
    tau_acc_s: float = Field(
        default=1.0, gt=0, description="accelerometer correction time constant"
    )
    eps_tilt_rad: float = Field(default=0.05, gt=0, description="quantization tilt budget")
    eps_out_rad: float = Field(default=math.radians(0.5), gt=0, description="output resolution")
    gate_in: float = Field(default=0.1, ge=0, description="full trust while ||a|^2/g0^2-1| <= this")
    gate_out: float = Field(default=0.5, gt=0, description="no trust beyond this")
    trust_levels: int = Field(default=5, ge=1, description="quantization levels of the trust 0..1")
    up0: tuple[float, float, float] = Field(
        default=(0.0, 0.0, 1.0), description="initial body-frame up"
    )
    with_mag: bool = False
    mag_ref_uT: float = Field(
        default=50.0, gt=0, description="nominal field magnitude (units of m)"
    )
    mag_noise_uT: float = Field(default=0.7, gt=0, description="per-sample magnetometer noise")
    tau_mag_s: float = Field(default=2.0, gt=0, description="magnetometer correction time constant")

    @model_validator(mode="after")
    def _check_gate(self) -> AttitudeParams:
        if not self.gate_out > self.gate_in:
            raise ValueError(f"gate_out ({self.gate_out}) must exceed gate_in ({self.gate_in})")
        return self

    def scales(self) -> dict[str, float]:
        """Scale (counts per unit) of every node, from the settings."""
        k_corr = 1.0 / self.tau_acc_s
        sigma_w = self.gyro_noise_density * math.sqrt(self.rate_hz)
        sigma_a = self.accel_noise_density * math.sqrt(self.rate_hz)
        # q_w is a whole multiple of K eps, so every term summed into "gd" lies on the grid
        # K*eps (= the quantum of "gd"): the sum is exact and never sits at a rounding tie
        # (a tie would toggle the node on every recompute: in a loop, a burst of spikes)
        step = k_corr * self.eps_tilt_rad
        q_w = step * math.ceil(4.0 * sigma_w / step - 1e-9)
        q_a = max(G0_M_S2 * self.eps_tilt_rad, 4.0 * sigma_a)
        s = {
            "gyro": 1.0 / q_w,
            "accel": 1.0 / q_a,
            "g": 1.0 / self.eps_out_rad,
            "Pg": 1.0 / q_w,  # |g| ~ 1, so w*g has the rate's quantum
            "a2": 1.0 / (2.0 * G0_M_S2 * q_a),  # d(a^2) = 2 a da
            "gate": 1.0 / (2.0 * self.eps_tilt_rad),  # a2/g0^2 lies on the grid 2 eps: exact
            "trust": float(self.trust_levels),
            "Qa": 1.0 / q_a,  # the equilibrium t*a/g0 then resolves eps_tilt
            "Qg": 1.0 / self.eps_tilt_rad,
            "gd": 1.0 / step,  # lossless sum (see q_w)
        }
        if self.with_mag:
            q_m = max(self.eps_tilt_rad, 4.0 * self.mag_noise_uT / self.mag_ref_uT)
            s.update(
                {
                    "mag": 1.0 / (q_m * self.mag_ref_uT),
                    "m": 1.0 / self.eps_out_rad,
                    "Pm": 1.0 / q_w,
                    "md": 1.0 / step,
                }
            )
        return s


AXES = ("x", "y", "z")
ZERO = "zero"
# (v x w)_c = sum_j SIGN[c][j] * w_j * v_{PARTNER[c][j]}; the j == c term is w_c * 0
PARTNER = (("0", "z", "y"), ("z", "0", "x"), ("y", "x", "0"))
SIGN = ((0.0, -1.0, 1.0), (1.0, 0.0, -1.0), (-1.0, 1.0, 0.0))


def _add_tracker(
    g: Graph,
    v: str,
    scales: dict[str, float],
    tau_s: float,
    y0: list[float],
    corr: list[tuple[str | list[str], np.ndarray]],
) -> list[str]:
    """Track a body-frame vector ``v`` of a fixed earth direction: per axis c,
    ``dv_c/dt = (v x w)_c + corr_c - v_c/tau`` with ``corr[c] = (sources, weights (n, 1))``.

    ``v`` is three 1-unit Integrator nodes ``v_x, v_y, v_z``, so each product the cross
    product needs is a plain source list: ``P{v}_c = w * [v_a, v_b, 0]`` (the ``zero`` node
    fills the slot of w_c, which does not enter component c). Every unit of ``P{v}_c``
    feeds only ``{v}d_c``: one synaptic op per spike instead of three. Returns the names."""
    comp = [f"{v}_{a}" for a in AXES]
    for c, axis in enumerate(AXES):
        prod = f"P{v}_{axis}"
        b = [ZERO if p == "0" else f"{v}_{p}" for p in PARTNER[c]]
        g.product(prod, "gyro", b, scale=scales[f"P{v}"])
        srcs, w = corr[c]
        srcs = [srcs] if isinstance(srcs, str) else list(srcs)
        weights = np.vstack([np.array(SIGN[c]).reshape(3, 1), w])
        g.dense(f"{v}d_{axis}", [prod, *srcs], weights, scale=scales[f"{v}d"])
        g.integrator(comp[c], f"{v}d_{axis}", gain=1.0, tau_s=tau_s, y0=y0[c], scale=scales[v])
    return comp


def build_attitude_graph(params: AttitudeParams | None = None, name: str = "attitude") -> Graph:
    """The attitude graph for ``params`` (defaults: a typical MEMS IMU at 285.7 Hz)."""
    p = params or AttitudeParams()
    s = p.scales()
    k = 1.0 / p.tau_acc_s
    g = Graph(name)
    g.input("gyro", 3, scale=s["gyro"])
    g.input("accel", 3, scale=s["accel"])
    # accelerometer trust: e = | |a|^2/g0^2 - 1 |, t = clip((e_out - e)/(e_out - e_in), 0, 1)
    g.product("a2", "accel", "accel", scale=s["a2"])
    g.dense(
        "gate",
        "a2",
        np.full((3, 1), 1.0 / G0_M_S2**2),
        bias=[-1.0],
        activation="abs",
        scale=s["gate"],
    )
    span = p.gate_out - p.gate_in
    g.dense(
        "trust",
        "gate",
        [[-1.0 / span]],
        bias=[p.gate_out / span],
        activation="clip",
        lo=0.0,
        hi=1.0,
        scale=s["trust"],
    )
    # 1 - t at the same scale: exactly the complement of the quantized trust
    g.dense("untrust", "trust", [[-1.0]], bias=[1.0], scale=s["trust"])
    # a constant 0 (zero weight and bias: it never spikes) to fill unused product slots
    g.dense(ZERO, "trust", [[0.0]], bias=[0.0], scale=1.0)
    corr = []
    for c, axis in enumerate(AXES):
        sel = [ZERO] * 3
        sel[c] = "trust"
        g.product(f"Qa_{axis}", sel, "accel", scale=s["Qa"])  # (.., t a_c, ..)
        g.product(f"Qg_{axis}", "untrust", f"g_{axis}", scale=s["Qg"])  # (1 - t) g_c
        w_a = np.zeros((3, 1))
        w_a[c, 0] = k / G0_M_S2
        corr.append(([f"Qa_{axis}", f"Qg_{axis}"], np.vstack([w_a, [[k]]])))
    comp = _add_tracker(g, "g", s, p.tau_acc_s, list(p.up0), corr)
    g.output("gravity", comp, scale=s["g"])
    g.output("accel_trust", "trust", scale=s["trust"])
    if p.with_mag:
        km = 1.0 / p.tau_mag_s
        g.input("mag", 3, scale=s["mag"])
        mcorr = []
        for c in range(3):
            w_m = np.zeros((3, 1))
            w_m[c, 0] = km / p.mag_ref_uT
            mcorr.append(("mag", w_m))
        mcomp = _add_tracker(g, "m", s, p.tau_mag_s, [0.0, 1.0, 0.0], mcorr)
        g.output("magnetic", mcomp, scale=s["m"])
    g.resolve()
    return g


def _write_npz_reproducible(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` whose bytes depend only on the arrays (fixed zip timestamps, sorted)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())


def write_graph(graph: Graph, yaml_path: Path, params: AttitudeParams) -> tuple[Path, Path]:
    """Write ``yaml_path`` (manifest with ``@key`` array references) and the ``.npz`` weights."""
    manifest, arrays = graph.to_dict()
    npz_path = yaml_path.with_suffix(".npz")
    _write_npz_reproducible(npz_path, arrays)
    header = (
        "# Generated by `python -m spikefuse.attitude.generate` (do not edit by hand).\n"
        "# Gravity tracker dg/dt = g x w + K (t a/g0 + (1-t) g_q - g); see\n"
        "# spikefuse/attitude/generate.py for the structure and the choice of scales.\n"
        "# params: " + params.model_dump_json() + "\n"
    )
    doc = {
        "format_version": manifest["format_version"],
        "name": manifest["name"],
        "weights": npz_path.name,
        "nodes": manifest["nodes"],
    }
    yaml_path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100))
    return yaml_path, npz_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m spikefuse.attitude.generate", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_YAML, help="YAML path (weights beside it as .npz)"
    )
    ap.add_argument(
        "--with-mag", action="store_true", help="also track the magnetic field (heading)"
    )
    args = ap.parse_args(argv)
    params = AttitudeParams(with_mag=args.with_mag)
    y, z = write_graph(build_attitude_graph(params), args.out, params)
    print(f"wrote {y} and {z}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
