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

With a magnetometer (``with_mag=True``, the 9D graph ``configs/graphs/attitude9d.yaml``) a
second vector is tracked with the same complementary structure: ``n``, the horizontal part
of the body-frame magnetic field (magnetic north), in units of the horizontal field ``B_h``::

    dn/dt = n x w  +  K_m * ( t_m * (mag/B_h - (mag.g/B_h) g)  +  (1 - t_m) * n_q  -  n )

* only the horizontal part carries heading; the vertical field (2-3 times larger at
  mid-latitudes) would triple the work of rotating the vector for nothing. It is removed
  with the tracked ``g``: ``Pmg = mag * g``, Dense ``mv`` (``s = mag.g/B_h``),
  ``st = t_m s``, ``Pv_c = st * g_c`` (1-unit products, one op per crossing of ``g_c``);
* the trust ``t_m`` comes from ``| |mag|^2/B0^2 - 1 |`` (``B0`` = field magnitude) as the
  accelerometer's does: a magnet or ferrous object nearby changes ``|B|``, then ``n``
  follows the gyro alone. It is on/off (``mag_trust_levels = 1``), switching at 10 % of
  the norm (VQF's magnetic disturbance threshold), beyond the few per cent an
  uncalibrated field norm varies with orientation: a graded trust would only toggle with
  the magnetometer noise;
* outputs ``north`` (``n``) and ``mag_trust``; a consumer gets the full attitude from ``g``
  and ``n`` (:func:`spikefuse.attitude.quat.quat_from_up_and_mag`);
* scales, counted in heading: in units of ``B_h`` every n-side quantum (``Pn`` = ``q_w``,
  ``nd`` = ``K_m eps_tilt``, output ``eps_out``) is the same heading resolution as its
  g-side counterpart in tilt. The magnetometer quantum is ``eps_tilt B_h`` rounded up to
  a whole multiple of at least ``4 sigma_mag`` (so ``K_m mag/B_h`` lies on the grid of
  ``nd``); the vertical-field chain runs at that same resolution (finer would only pass
  on its noise);
* ``B0``, ``B_h`` and the initial ``n`` are local: ``spikefuse eval`` takes them from the
  first magnetometer sample, as it takes the initial "up" from the first accelerometer
  one; the shipped graph assumes 50 µT and 20 µT (regenerate with ``--set`` for a site).

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
import sys
import zipfile
from pathlib import Path

import numpy as np
import yaml
from pydantic import Field, model_validator

from spikefuse.config import StrictModel, apply_overrides, validate_data
from spikefuse.errors import ConfigError
from spikefuse.graph import Graph
from spikefuse.tables import G0_M_S2

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "configs" / "graphs" / "attitude.yaml"
#: the 9D graph (gravity + magnetic field), generated beside the 6D one
DEFAULT_YAML_9D = DEFAULT_YAML.with_name("attitude9d.yaml")


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
    mag_field_uT: float = Field(
        default=50.0, gt=0, description="field magnitude |B| where the magnetometer is trusted"
    )
    mag_horizontal_uT: float = Field(
        default=20.0,
        gt=0,
        description="horizontal field B_h (mid-latitudes 15-25 uT): the unit of m",
    )
    mag_gate_in: float = Field(
        default=0.15, ge=0, description="full trust while ||B|^2/mag_field^2-1| <= this"
    )
    mag_gate_out: float = Field(default=0.25, gt=0, description="no magnetometer trust beyond this")
    mag_trust_levels: int = Field(
        default=1, ge=1, description="levels of the magnetometer trust (1: on/off at the midpoint)"
    )
    mag_noise_uT: float = Field(default=0.7, gt=0, description="per-sample magnetometer noise")
    tau_mag_s: float = Field(default=1.0, gt=0, description="magnetometer correction time constant")
    n0: tuple[float, float, float] = Field(
        default=(0.0, 1.0, 0.0),
        description="initial body-frame horizontal field (north), units of mag_horizontal_uT",
    )

    @model_validator(mode="after")
    def _check_gate(self) -> AttitudeParams:
        if not self.gate_out > self.gate_in:
            raise ValueError(f"gate_out ({self.gate_out}) must exceed gate_in ({self.gate_in})")
        if not self.mag_gate_out > self.mag_gate_in:
            raise ValueError(
                f"mag_gate_out ({self.mag_gate_out}) must exceed mag_gate_in ({self.mag_gate_in})"
            )
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
            # m is in units of the horizontal field B_h, so the heading resolution of every
            # m-side quantum equals the tilt resolution of its g-side counterpart
            step_m = self.eps_tilt_rad / self.tau_mag_s
            b_h = self.mag_horizontal_uT
            q_mag = self.eps_tilt_rad * b_h  # eps_tilt of heading at B_h ...
            q_mag *= math.ceil(4.0 * self.mag_noise_uT / q_mag - 1e-9)  # ... >= 4 sigma
            s.update(
                {
                    "mag": 1.0 / q_mag,
                    # |B|^2/B0^2 - 1 on the grid 2 eps_tilt (exact sum into the gate), the
                    # resolution of the accelerometer gate and the width of the switch
                    "b2": 1.0 / (self.mag_field_uT**2 * 2.0 * self.eps_tilt_rad),
                    "mgate": 1.0 / (2.0 * self.eps_tilt_rad),
                    "mtrust": float(self.mag_trust_levels),
                    "Qmag": 1.0 / q_mag,
                    # the measured vertical field s g = (mag.g/B_h) g, removed from mag/B_h,
                    # at the magnetometer's own resolution (finer would only pass on its
                    # noise; coarser would add error): |g| ~ 1, so every node of the chain
                    # mag.g -> s -> t_m s -> t_m s g_c has the quantum q_mag (/B_h)
                    "Pmg": 1.0 / q_mag,
                    "mv": b_h / q_mag,
                    "st": b_h / q_mag,
                    "Pv": b_h / q_mag,
                    "Qn": 1.0 / self.eps_tilt_rad,
                    "n": 1.0 / self.eps_out_rad,
                    "Pn": 1.0 / q_w,
                    "nd": 1.0 / step_m,  # K_m q_mag/B_h is on this grid
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


def _add_trust(
    g: Graph,
    sensor: str,
    names: tuple[str, str, str, str],
    ref: float,
    gate_in: float,
    gate_out: float,
    scales: dict[str, float],
) -> None:
    """Trust ``t = clip((e_out - e)/(e_out - e_in), 0, 1)`` of a sensor whose magnitude
    should be ``ref``, ``e = | |v|^2/ref^2 - 1 |`` (Product ``v*v``, Dense with ``abs``,
    Dense with ``clip``), and ``1 - t`` at the same scale. ``names``: (square, gate,
    trust, untrust); the scales are looked up under the same names."""
    sq, gate, trust, untrust = names
    g.product(sq, sensor, sensor, scale=scales[sq])
    g.dense(
        gate, sq, np.full((3, 1), 1.0 / ref**2), bias=[-1.0], activation="abs", scale=scales[gate]
    )
    span = gate_out - gate_in
    g.dense(
        trust,
        gate,
        [[-1.0 / span]],
        bias=[gate_out / span],
        activation="clip",
        lo=0.0,
        hi=1.0,
        scale=scales[trust],
    )
    # 1 - t at the same scale: exactly the complement of the quantized trust
    g.dense(untrust, trust, [[-1.0]], bias=[1.0], scale=scales[trust])


def _add_field_tracker(g: Graph, p: AttitudeParams, s: dict[str, float]) -> None:
    """The body-frame horizontal magnetic field ``n`` (magnetic north, units of ``B_h``), the
    same complementary structure as ``g`` (see the module docstring). The measured
    horizontal part is ``mag/B_h - (mag.g/B_h) g``: Product ``Pmg = mag*g``, Dense ``mv``
    (the vertical field), ``st = t_m mv`` and per axis ``Pv_c = st * g_c``."""
    km = 1.0 / p.tau_mag_s
    b_h = p.mag_horizontal_uT
    g.input("mag", 3, scale=s["mag"])
    _add_trust(
        g,
        "mag",
        ("b2", "mgate", "mtrust", "muntrust"),
        p.mag_field_uT,
        p.mag_gate_in,
        p.mag_gate_out,
        s,
    )
    g_comp = [f"g_{a}" for a in AXES]
    g.product("Pmg", "mag", g_comp, scale=s["Pmg"])  # mag_c g_c
    g.dense("mv", "Pmg", np.full((3, 1), 1.0 / b_h), scale=s["mv"])  # mag.g / B_h
    g.product("st", "mv", "mtrust", scale=s["st"])  # t_m mag.g / B_h
    corr = []
    for c, axis in enumerate(AXES):
        sel = [ZERO] * 3
        sel[c] = "mtrust"
        g.product(f"Qmag_{axis}", sel, "mag", scale=s["Qmag"])  # (.., t_m mag_c, ..)
        g.product(f"Pv_{axis}", "st", g_comp[c], scale=s["Pv"])  # t_m (mag.g/B_h) g_c
        g.product(f"Qn_{axis}", "muntrust", f"n_{axis}", scale=s["Qn"])  # (1 - t_m) n_c
        w = np.zeros((5, 1))
        w[c, 0] = km / b_h
        w[3, 0] = -km
        w[4, 0] = km
        corr.append(([f"Qmag_{axis}", f"Pv_{axis}", f"Qn_{axis}"], w))
    comp = _add_tracker(g, "n", s, p.tau_mag_s, list(p.n0), corr)
    g.output("north", comp, scale=s["n"])
    g.output("mag_trust", "mtrust", scale=s["mtrust"])


def build_attitude_graph(params: AttitudeParams | None = None, name: str = "attitude") -> Graph:
    """The attitude graph for ``params`` (defaults: a typical MEMS IMU at 285.7 Hz)."""
    p = params or AttitudeParams()
    s = p.scales()
    k = 1.0 / p.tau_acc_s
    g = Graph(name)
    g.input("gyro", 3, scale=s["gyro"])
    g.input("accel", 3, scale=s["accel"])
    # accelerometer trust: e = | |a|^2/g0^2 - 1 |, t = clip((e_out - e)/(e_out - e_in), 0, 1)
    _add_trust(g, "accel", ("a2", "gate", "trust", "untrust"), G0_M_S2, p.gate_in, p.gate_out, s)
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
        _add_field_tracker(g, p, s)
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
        "# Gravity tracker dg/dt = g x w + K (t a/g0 + (1-t) g_q - g)"
        + (
            " and north tracker\n"
            "# dn/dt = n x w + K_m (t_m (mag - (mag.g) g)/B_h + (1-t_m) n_q - n)"
            if params.with_mag
            else ""
        )
        + "; see\n"
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
        "--out",
        type=Path,
        default=None,
        help="YAML path (weights beside it as .npz); default: both shipped graphs, "
        f"{DEFAULT_YAML.name} (6D) and {DEFAULT_YAML_9D.name} (9D)",
    )
    ap.add_argument(
        "--with-mag", action="store_true", help="with --out: also track the magnetic field"
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --out: an AttitudeParams field, e.g. the local field: "
        "--set mag_field_uT=48 --set mag_horizontal_uT=17",
    )
    args = ap.parse_args(argv)
    if args.out is None:
        if args.overrides:
            ap.error("--set needs --out (the shipped graphs use the defaults)")
        jobs = [(DEFAULT_YAML, False), (DEFAULT_YAML_9D, True)]
    else:
        jobs = [(args.out, args.with_mag)]
    for path, with_mag in jobs:
        try:
            data = apply_overrides({"with_mag": with_mag}, args.overrides)
            params = validate_data(AttitudeParams, data, "--set")
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        y, z = write_graph(build_attitude_graph(params, name=path.stem), path, params)
        print(f"wrote {y} and {z}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
