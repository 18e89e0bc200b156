"""Generate the event-driven attitude (gravity-tracking) graph.

Structure: the body-frame "up" direction ``g`` (what a resting accelerometer reads, over
standard gravity) is a **second-order low-pass of the specific force in an inertial frame**,
kept on the unit sphere, the idea of VQF (Laidig & Seel 2023) written as a sigma-delta graph::

    dh/dt = h x w + K ( t a/g0 + (1 - t) h_q - h ) + lam (1 - |h|^2) h_q     (stage 1)
    dg/dt = g x w + K ( h - g )                    + lam (1 - |g|^2) g_q     (stage 2)

* a body-frame vector of a fixed earth direction turns with ``v x w``; a tracker that turns
  with the gyro and relaxes towards a measurement with rate ``K`` is therefore a first-order
  low-pass of that measurement *in the earth frame*. Linear acceleration (translation,
  tapping, vibration) has a bounded integral (velocity), so it averages out of the earth-frame
  low-pass while gravity does not; two stages (critically damped, ``K = 1/tau_acc_s`` each)
  attenuate a 1 Hz shake 40 dB/decade instead of 20. Without the second stage the fast
  translation trial scored 6x VQF instead of 2x;
* each component ``v_c`` of ``h``, ``g`` is the sum (1-unit Dense ``v_c``) of two
  Integrators: a rotation part ``vr_c`` that integrates the gyro products ``(v x w)_c`` on
  the gyro's grid without leak (one Integrator unit per product term, so no summing node),
  and a correction part ``vk_c`` that integrates, with the leak ``K``, the correction sum
  ``vd_c`` on the fine grid ``K eps`` plus ``- K vr_c`` (the leak of the rotation part). The
  system is linear, so ``v_c = vr_c + vk_c`` is exact; the split keeps the coarse,
  fast-moving rotation out of the fine correction grid (a single derivative node at
  ``K eps`` sent ``q_w / (K eps)`` spikes per gyro product spike and was most of the work),
  and at rest both parts stand still (with a leak on each part they decayed against each
  other for seconds after every motion: ~2500 ops/s at rest);
* ``v x w`` is, per axis c, a Product ``P{v}_c = w * [v_a, v_b, 0]`` (the constant ``zero``
  node fills the slot of w_c); the ``- K v`` term is the leak of ``vk`` plus ``- K vr`` in
  its sum (it makes the loop settle, so a still IMU costs no work);
* gyro bias (VQF estimates it; without it the drift under a 2 s low-pass costs ~1.5x):
  the coarse gyro (2 deg/s quantum, ~8x the bias, ~15x the noise) reads 0 at rest whatever
  the bias, so the graph cannot see it there, yet it biases every motion that follows. The
  gyro's *encoder* removes it: its auto-zero (``gyro_zero_rest_s``, ``gyro_zero_tau_s``;
  :class:`~spikefuse.encoding.SigmaDeltaEncoder` ``rest_samples``) learns, after 1.5 s
  with nothing sent, the raw offset under half a quantum and quantizes ``w - offset``
  from then on: VQF's rest estimate, at no event cost (at rest it still sends nothing).
  On the shared trials it scores what the true bias removed offline scores (e.g. 33:
  2.28x -> 1.11x). A driver sets the same (``groups.gyro.zero_rest_samples``,
  ``zero_tau_samples``; ``launch/imu_gimbal.yaml``). The graph can also learn a bias in
  motion (``bias_gain`` > 0: ``db/dt = bias_gain * moving * (g x h)``, the angle between
  the two stages, applied as ``- v x b`` Products ``Pb{v}_c`` into the correction sums
  while any gyro axis is off zero); with the rest estimate it hurt (15: 1.57x -> 2.33x,
  33: 1.11x -> 2.19x: linear acceleration reads as a bias there), so it is off (0);
* the renormalising feedback ``lam (1 - |v|^2) v_q`` (Product ``vv = v*v``, Dense
  ``hold_v``, Products ``Qv_c = hold_v * v_c``) keeps ``|v|`` on the unit sphere where the
  explicit, event-held rotation would let it drift at high rates (the fast-translation trial
  left the sphere entirely without it). The same node holds ``h`` where the accelerometer is
  not trusted: ``hold_h = K (1 - t) + lam (1 - |h|^2)``;
* the accelerometer trust ``t = clip((e_out - e)/(e_out - e_in), 0, 1)``,
  ``e = | |a|^2/g0^2 - 1 |`` (Product ``a*a``, Dense with ``abs``, Dense with ``clip``) only
  rejects extreme readings (taps of many g); a narrow gate rectifies the linear acceleration
  of a fast translation (it drops one sign of it) and was worse than none;
* the second stage is tracked as ``g = h + d``: ``d = g - h`` (the angle between the
  stages, small) obeys ``dd/dt = d x w - K d - (dh/dt - h x w) + Qg``, and the first
  stage's correction ``dh/dt - h x w = hd - K hk`` is a sum the graph already holds. Its
  rotation products ``w * d`` hardly move, so a gyro spike no longer runs through a second
  set of full-size products and rotation integrators (``diff_stage``; work in fast rotation
  0.71 -> 0.55 of dense on trial 09, 0.82 -> 0.64 on 31, inclination median 1.40x -> 1.43x
  VQF). ``dd`` is at ``3 K eps_out`` (``dd_quanta``; its terms on a third of
  ``K eps_out``, an odd fraction of its quantum: exact, never at a tie): it carries the
  first stage's correction, so at ``K eps_out`` it spiked twice per sample in fast motion
  (trial 31: 0.61 -> 0.59 of dense, 27 0.52 -> 0.43; inclination 09 1.21x -> 1.31x, the
  others within 3 %);
* the outputs lead the trackers by one gyro sample period (``gyro_lead_s``): an IMU's
  sample is the rate over the period *before* it (VQF integrates it so), but the engine
  holds a pushed rate from its arrival on, so every tracker is one period behind the
  rotation: 1.6 deg at 450 deg/s, which was most of the fast-rotation error (trial 09
  2.38x -> 1.23x VQF). Output nodes ``go_c = g_c + lead (g x w)_c`` add the rotation the
  tracker has not integrated yet from the products it already has (``Pg_c``). The
  accelerometer is compared with the first stage itself (``accel_lead`` False): the led
  stage (``- K lead (h x w)`` in ``hd``) cost one op per spike of every product ``Ph_c``
  and scored no better on the 8 trials (31: 1.22x -> 1.01x without it, median 1.43x ->
  1.37x; 6D work on 31 0.64 -> 0.61 of dense). Nothing inside the loops sees the lead. With the true gyro bias removed, a float model of the same
  equations scores 2.3x on trial 09 with the rate held forward (as the graph did) and
  1.0x with each sample over the period before it; the gyro quantization (2 deg/s) is
  not the cause (VQF fed the same quantized gyro, bias removed, also scores 1.0x);
* outputs ``gravity`` (``g`` led) and ``accel_trust`` (``t``); a consumer turns ``g`` into
  roll/pitch or a quaternion (:mod:`spikefuse.attitude.quat`).

The accelerometer's and magnetometer's encoders have a hysteresis (``accel_hysteresis``
0.15, ``mag_hysteresis`` 0.3 quanta): a still reading that sits on a level boundary
toggled with its noise at every sample (trial 15: ~1500 ops/s at rest), and every toggle
ran through the trust and the first stage. At rest the gyro's and the accelerometer's
encoders also go quiet (VQF's rest detection, done where the raw values are): an encoder
that sent nothing for ``rest_quiet_s`` (0.25 s; the gyro: and reads 0) quantizes a
0.25 s moving average of its values with a wider threshold (``gyro_rest_hysteresis``
0.45, ``accel_rest_hysteresis`` 0.15 quanta more) until it sends again; the encoders'
``quiet_*`` options. The accelerometer's noise on a level boundary (trial 15: 0.15
quanta RMS on z) and a phone vibrating on the still IMU (27: bursts of 1.5 deg/s RMS)
toggled them at rest: 6D rest ops 188 and 118/s -> about 20 and 3/s. A moving average in
motion (either sensor, its lag compensated in the graph) cost accuracy on the fast
trials (31: 1.2x -> 1.4-3.8x VQF) and is not used. The gyro's auto-zero learns only where
the raw rate reads 0 (a rate the rest threshold hides is motion, not bias).

With a magnetometer (``with_mag=True``, the 9D graph ``configs/graphs/attitude9d.yaml``) a
second vector is tracked with the same structure: ``n``, the horizontal part of the
body-frame magnetic field (magnetic north), in units of the horizontal field ``B_h``::

    dn/dt = n x w + K_m ( t_m (mf/B_h - (mf.g/B_h) g) + (1 - t_m) n_q - n ) + lam (1 - |n|^2) n_q

* ``K_m = 1/tau_mag_s`` (15 s; VQF's ``tauMag`` is 9 s): the field is noisier than
  gravity, rejected often, and quantized coarsely (its 2.5 uT quantum is ~7 degrees of a
  20 uT horizontal field), so the heading follows the quantization unless the correction
  averages it: at 3 s trials 09 and 15 scored 2.3x and 2.9x VQF 9D, at 15 s 0.81x and
  0.73x (chosen on all 8 trials by
  :mod:`spikefuse.attitude.tune` ``--heading``, grid 9/15/20/30 s: objective
  0.76/0.66/0.69/0.79; every leave-one-out fold picks 15 s);
* the magnetometer's *encoder* quantizes a 40 ms moving average (``mag_smooth_s``; the
  encoder's ``smooth_samples``), at its own quantum ``mag_quantum_uT`` (2.5 uT; it feeds
  only the Integrator below, so it is on no grid). The raw noise (0.7 uT) toggled the
  3.7 uT quantum it used to share with the gyro grid at rest (9D rest ops up to
  1100/s); the average is ~5x quieter, so a finer quantum stays still at rest;
* the field is then smoothed in the body frame by a leaky Integrator ``mf``
  (``tau_mag_filter_s``): each input spike costs one op. Both filters lag a turning field
  (``mag_lag_s``, compensated below), which is why they are short;
* only the horizontal part carries heading; the vertical field is removed with the tracked
  ``g``: ``Pmg = mf * g``, Dense ``mv`` (``s = mf.g/B_h``), ``st = t_m s``,
  ``Pv_c = st * g_c``;
* magnetic disturbance rejection on the field's norm AND its dip: ``mgate`` holds
  ``| |B|^2/B0^2 - 1 | / mag_norm_th`` and ``| mf.g - B_v | / (B_h mag_dip_th_rad)``, each
  clipped to the band where its trust changes (``mag_gate_saturate``: two units per
  measure, ``clip(+-x - in, 0, out - in)``; a magnet close by moved the plain ``|x|`` over
  tens of thresholds, every step a spike: 9D work on trial 31 0.64 -> 0.575 of dense);
  each
  switches its own on/off trust (``mtn``, ``mtd``); their product is low-passed
  (Integrator ``mtl``, ``mag_settle_s``) and ``t_m`` is on only above 0.9: trusted again
  only after the field held the reference for ~2.3 ``mag_settle_s`` (a magnet passing
  through the thresholds no longer pulls the heading; stationary-magnet trial 9.8x -> 2.0x
  VQF on an excerpt), off within a tenth of it; while off ``n`` follows the gyro alone;
* the references ``B0^2`` (per axis, ``rb2``) and ``B_v/B_h`` (``rmv``) follow the field
  with ``mag_ref_tau_s`` (60 s; leaky Integrators, so at rest they stand still): taken
  from one first sample they were 4-9 % off the field in motion on the fast-translation
  trial, so the norm check sat at its threshold and rejected the field at random (heading
  1.8x -> 0.5-0.9x VQF 9D there). VQF adapts its references (``magRefTau`` 20 s) only
  while the field is undisturbed; these follow it always, so they are slower: a 10 s
  disturbance moves them 15 % of the way (and the clean field after it is rejected until
  they come back), a field that stays is accepted within ~T (VQF: ``magNewTime``);
* the smoothed field lags the rotation by ``mag_lag_s``: the vertical part is
  taken with ``g`` set as far behind (``gm_c = g_c - (lag - lead)(g x w)_c``, else the
  dip check fails in fast rotation; ``g`` through the field's own lags instead, one or
  two leaky Integrators per axis, cut the 9D work on 31 by another 6 % but moved the
  heading ratios by up to 2x either way, 02 to 2.1x and a 09 excerpt 1.0x -> 2.0x VQF), and ``n`` is relaxed as far behind (gated by
  ``t_m``: while the field is not trusted nothing scales the gyro); the output ``north``
  leads like ``gravity``;
* outputs ``north`` (``n``) and ``mag_trust``; the full attitude comes from ``g`` and ``n``
  (:func:`spikefuse.attitude.quat.quat_from_up_and_mag`);
* ``B0``, ``B_h``, ``B_v`` and the initial ``n`` and ``mf`` are local: ``spikefuse eval``
  takes them from the first magnetometer sample, as it takes the initial "up" from the
  first accelerometer one; the shipped graph assumes 50 uT and 20 uT (regenerate with
  ``--set`` for a site).

Scales (:class:`AttitudeParams`); the free parameters (``tau_acc_s`` 2.25 s, ``bias_gain`` 0,
``accel_hysteresis`` 0.15, ``dd_quanta`` 3, ``gyro_rest_smooth_s`` 0.25: the last three
work choices at 0.03, 0.047 and 0.04 of the objective) were chosen by :mod:`spikefuse.attitude.tune` on all shared BROAD trials at once (one parameter set,
checked leave-one-trial-out; the table is in docs/benchmarks.md):

* tilt budget ``eps_tilt`` (1 degree), rounded to a whole number of output quanta
  ``eps_out`` (0.5 degree);
* gyro quantum ``q_w`` = ``gyro_quantum_dps`` (2 deg/s, ~17 sigma_w) rounded to a multiple of
  ``K eps_tilt`` (1.78 deg/s at ``tau_acc_s`` 2.25): quantizing a slowly varying rate is at worst a bias of ``q_w/2``; in
  motion it averages out, at rest the rate rounds to 0. It sets the rotation work: every
  gyro spike runs through the product terms of every tracker;
* accelerometer quantum ``q_a = accel_quanta g0 eps_tilt`` (3: 0.51 m/s^2; at least
  ``4 sigma_a``): at a third of it the noise toggled the encoder ~300 times/s at rest and
  every toggle runs through the trust and the first stage (rest ops ~2500/s);
* ``h``, ``g`` and their outputs: quantum ``eps_out``; their two parts ``vr``, ``vk`` at
  ``eps_out / sub_quanta`` (odd, so their sum never sits on a half level of ``eps_out``);
* every term summed into ``hd_c`` lies on the grid ``K eps_tilt`` and every term summed into
  ``gd_c`` on ``K eps_out``: the sums are exact, so they never sit at a rounding tie (at a
  tie, round-half-away toggled a node on every recompute; inside the integrator loop that
  became a burst of ~10^6 spikes in one sample during development). The bias terms are on an
  odd fraction of that grid, which keeps the property. The same holds for ``nd_c`` on
  ``K_m eps_m`` (``eps_m`` ~ ``eps_mag_rad``, 3 degrees: the field side's work is mostly
  the smoothed field, and finer cost 1.5x the 9D work on the magnet trial).
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
        default=2.25, gt=0, description="accelerometer correction time constant"
    )
    eps_tilt_rad: float = Field(
        default=math.radians(1.0), gt=0, description="quantization tilt budget"
    )
    eps_out_rad: float = Field(default=math.radians(0.5), gt=0, description="output resolution")
    renorm_gain_per_s: float = Field(
        default=2.0, ge=0, description="pull of |g| back onto the unit sphere, 1/s"
    )
    renorm_deadband: float = Field(
        default=0.12, ge=0, description="no renormalisation while ||v|^2 - 1| <= this"
    )
    gate_in: float = Field(default=3.0, ge=0, description="full trust while ||a|^2/g0^2-1| <= this")
    gate_out: float = Field(default=200.0, gt=0, description="no trust beyond this")
    trust_levels: int = Field(default=5, ge=1, description="quantization levels of the trust 0..1")
    gyro_quantum_dps: float | None = Field(
        default=2.0,
        gt=0,
        description="gyro input quantum, deg/s (rounded to a multiple of the tracker grid); "
        "None: 4 sigma of the gyro noise",
    )
    gyro_lead_s: float | None = Field(
        default=None,
        ge=0,
        description="the outputs lead the trackers by the rotation over this time (None: one "
        "gyro sample period 1/rate_hz, the held rate's delay; 0: no lead)",
    )
    gyro_zero_rest_s: float = Field(
        default=1.5,
        ge=0,
        description="auto-zero of the gyro encoder: learn the bias after this long at rest "
        "(the encoder's rest_samples; 0: off)",
    )
    gyro_zero_tau_s: float = Field(
        default=3.0, gt=0, description="time constant of the gyro encoder's auto-zero"
    )
    accel_hysteresis: float = Field(
        default=0.15,
        ge=0,
        lt=0.5,
        description="hysteresis of the accelerometer encoder, quanta (a still reading on a "
        "level boundary does not toggle with its noise)",
    )
    mag_hysteresis: float = Field(
        default=0.3, ge=0, lt=0.5, description="hysteresis of the magnetometer encoder, quanta"
    )
    rest_quiet_s: float = Field(
        default=0.25,
        ge=0,
        description="an encoder that sent nothing for this long is at rest: its threshold "
        "widens by its rest hysteresis until it sends again (0: off)",
    )
    gyro_rest_hysteresis: float = Field(
        default=0.45, ge=0, lt=1, description="extra gyro hysteresis at rest, quanta"
    )
    accel_rest_hysteresis: float = Field(
        default=0.15, ge=0, lt=1, description="extra accelerometer hysteresis at rest, quanta"
    )
    gyro_rest_smooth_s: float = Field(
        default=0.25,
        ge=0,
        description="at rest the gyro encoder quantizes a moving average over this long "
        "(its quiet_smooth_samples; 0: off): vibration at rest averages out",
    )
    accel_rest_smooth_s: float = Field(
        default=0.25, ge=0, description="the same for the accelerometer encoder (0: off)"
    )
    accel_lead: bool = Field(
        default=False,
        description="compare the accelerometer with the first stage led like the outputs "
        "(one more op per spike of its rotation products; False: with the stage itself)",
    )
    bias_gain: float = Field(
        default=0.0,
        description="gyro bias integral gain, 1/s^2 (db/dt = gain * moving * (g x h)); 0: off",
    )
    bias_quantum_dps: float = Field(default=0.02, gt=0, description="bias estimate quantum")
    bias_err_quantum_deg: float = Field(
        default=0.25, gt=0, description="quantum of the bias error signal g x h"
    )
    bias_term_quantum_dps: float = Field(
        default=0.05, gt=0, description="target quantum of the v x b terms (odd fraction of grid)"
    )
    accel_quanta: int = Field(
        default=3,
        ge=1,
        description="accelerometer quantum in units of g0 eps_tilt (coarser: fewer noise "
        "toggles at rest)",
    )
    sub_quanta: int = Field(
        default=3, ge=1, description="odd: the two parts of a tracker at this many sub-quanta"
    )
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
    mag_vertical_uT: float | None = Field(
        default=None,
        description="vertical field B.up (negative where the field points down); "
        "None: -sqrt(mag_field^2 - mag_horizontal^2)",
    )
    mag0_uT: tuple[float, float, float] | None = Field(
        default=None,
        description="initial body-frame field (start of the smoothing integrator); "
        "None: n0 B_h + up0 B_v",
    )
    mag_norm_th: float = Field(
        default=0.2, gt=0, description="disturbed when ||B|^2/B0^2 - 1| reaches this (10 % norm)"
    )
    mag_norm_quanta: int = Field(
        default=4,
        ge=1,
        description="the squared field norm |B|^2/B0^2 is resolved at mag_norm_th / this",
    )
    mag_dip_th_rad: float = Field(
        default=math.radians(10.0), gt=0, description="disturbed when the dip is this far off"
    )
    mag_gate_in: float = Field(
        default=0.9, ge=0, description="full trust while norm + dip measure <= this"
    )
    mag_gate_out: float = Field(default=1.1, gt=0, description="no magnetometer trust beyond this")
    tau_mag_filter_s: float = Field(
        default=0.04, gt=0, description="smoothing of the magnetometer before the tracker"
    )
    mag_smooth_s: float = Field(
        default=0.04,
        ge=0,
        description="moving average of the magnetometer in its encoder (the encoder's "
        "smooth_samples; 0: off): the noise the quantizer sees shrinks, so the field stays "
        "quiet at rest",
    )
    mag_trust_levels: int = Field(
        default=1, ge=1, description="levels of the magnetometer trust (1: on/off at the midpoint)"
    )
    mag_ref_tau_s: float = Field(
        default=60.0,
        ge=0,
        description="the norm and dip references follow the smoothed field with this time "
        "constant (ungated, so 3x VQF's magRefTau; 0: fixed at the start values)",
    )
    mag_settle_s: float = Field(
        default=0.5, ge=0, description="time scale of the magnetometer re-trust (0: instant)"
    )
    eps_mag_rad: float = Field(
        default=math.radians(3.0), gt=0, description="quantization heading budget (field side)"
    )
    mag_noise_uT: float = Field(default=0.7, gt=0, description="per-sample magnetometer noise")
    mag_quantum_uT: float | None = Field(
        default=2.5,
        gt=0,
        description="magnetometer input quantum, uT (it feeds only the smoothing integrator "
        "mf: no grid to keep); None: 4 sigma of the noise rounded up to the mf grid",
    )
    tau_mag_s: float = Field(
        default=15.0,
        gt=0,
        description="magnetometer correction time constant (VQF's tauMag is 9 s; longer "
        "averages the field's quantization)",
    )
    d_product_quanta: float = Field(default=4.0, gt=0, description="Pd quantum is q_w / this")
    dd_quanta: int = Field(
        default=3,
        ge=1,
        description="odd: the difference stage's correction sum dd at this many K eps_out",
    )
    diff_stage: bool = Field(
        default=True,
        description="second stage as g = h + d (d = g - h: small, cheap rotation products); "
        "False: g tracked with its own full-size products",
    )
    mag_gate_saturate: bool = Field(
        default=True,
        description="the field's norm and dip measures clipped to the band where the trust "
        "changes (False: their absolute value, which a close magnet moves far beyond it)",
    )
    n0: tuple[float, float, float] = Field(
        default=(0.0, 1.0, 0.0),
        description="initial body-frame horizontal field (north), units of mag_horizontal_uT",
    )

    @model_validator(mode="after")
    def _check_gate(self) -> AttitudeParams:
        if self.dd_quanta % 2 == 0:  # its terms lie on a third of K eps_out: odd, no ties
            raise ValueError(f"dd_quanta ({self.dd_quanta}) must be odd")
        if not self.gate_out > self.gate_in:
            raise ValueError(f"gate_out ({self.gate_out}) must exceed gate_in ({self.gate_in})")
        if self.with_mag and self.mag_horizontal_uT > self.mag_field_uT:
            raise ValueError(
                f"mag_field_uT ({self.mag_field_uT}) must be at least mag_horizontal_uT "
                f"({self.mag_horizontal_uT})"
            )
        if not self.mag_gate_out > self.mag_gate_in:
            raise ValueError(
                f"mag_gate_out ({self.mag_gate_out}) must exceed mag_gate_in ({self.mag_gate_in})"
            )
        return self

    def encoder_options(self, group: str, sample_rate_hz: float | None = None) -> dict[str, float]:
        """Keyword arguments of the :class:`~spikefuse.encoding.SigmaDeltaEncoder` of a
        sensor group (a driver's ``groups.<group>.*``): the gyro's auto-zero, the
        hysteresis of the accelerometer and the magnetometer, the magnetometer's moving
        average (in samples of ``sample_rate_hz``, the group's rate; default ``rate_hz``)."""
        hyst = {"accel": self.accel_hysteresis, "mag": self.mag_hysteresis}.get(group, 0.0)
        out: dict[str, float] = {"hysteresis": hyst} if hyst else {}
        rate = sample_rate_hz or self.rate_hz
        n_smooth = self.mag_smooth_s * rate
        if group == "mag" and n_smooth > 1.0:
            out["smooth_samples"] = n_smooth
        out.update(self._rest_options(group, rate))
        if group == "gyro" and self.gyro_zero_rest_s:
            out["rest_samples"] = max(1, round(self.gyro_zero_rest_s * self.rate_hz))
            out["zero_tau_samples"] = max(1.0, self.gyro_zero_tau_s * self.rate_hz)
        return out

    def _rest_options(self, group: str, rate: float) -> dict[str, float]:
        """The encoder's rest options of a group (its rest hysteresis and average)."""
        hyst, smooth = {
            "gyro": (self.gyro_rest_hysteresis, self.gyro_rest_smooth_s),
            "accel": (self.accel_rest_hysteresis, self.accel_rest_smooth_s),
        }.get(group, (0.0, 0.0))
        n_smooth = smooth * rate
        if not self.rest_quiet_s or not (hyst or n_smooth > 1.0):
            return {}
        out: dict[str, float] = {"quiet_samples": max(1, round(self.rest_quiet_s * rate))}
        if hyst:
            out["quiet_hysteresis"] = hyst
        if n_smooth > 1.0:
            out["quiet_smooth_samples"] = n_smooth
        if group == "gyro":  # a rate sensor: at rest only where it reads 0
            out["quiet_needs_zero"] = True
        return out

    @property
    def lead_s(self) -> float:
        """The output lead (``gyro_lead_s``, or one gyro sample period)."""
        return 1.0 / self.rate_hz if self.gyro_lead_s is None else self.gyro_lead_s

    @property
    def mag_lag_s(self) -> float:
        """How far the smoothed field ``mf`` lags: its integrator's time constant plus the
        encoder's moving average (``s - 1`` samples)."""
        enc = max(0.0, self.mag_smooth_s - 1.0 / self.rate_hz)
        return self.tau_mag_filter_s + enc

    @property
    def b_vertical_uT(self) -> float:
        """The vertical field B.up (set, or from the field and its horizontal part)."""
        if self.mag_vertical_uT is not None:
            return self.mag_vertical_uT
        return -math.sqrt(max(self.mag_field_uT**2 - self.mag_horizontal_uT**2, 0.0))

    @property
    def mag_start_uT(self) -> list[float]:
        """The initial body-frame field (set, or ``n0 B_h + up0 B_v``)."""
        if self.mag0_uT is not None:
            return list(self.mag0_uT)
        n0, up0 = np.asarray(self.n0), np.asarray(self.up0)
        return list(n0 * self.mag_horizontal_uT + up0 * self.b_vertical_uT)

    def scales(self) -> dict[str, float]:
        """Scale (counts per unit) of every node, from the settings."""
        k_corr = 1.0 / self.tau_acc_s
        sigma_w = self.gyro_noise_density * math.sqrt(self.rate_hz)
        sigma_a = self.accel_noise_density * math.sqrt(self.rate_hz)
        # q_w is a whole multiple of K eps, so every term summed into "gd" lies on the grid
        # K*eps (= the quantum of "gd"): the sum is exact and never sits at a rounding tie
        # (a tie would toggle the node on every recompute: in a loop, a burst of spikes)
        # eps_tilt rounded to a whole number of output quanta: K eps_out (the grid of the
        # second stage) then divides K eps_tilt (the grid of the first)
        eps = self.eps_out_rad * max(1, round(self.eps_tilt_rad / self.eps_out_rad))
        step = k_corr * eps
        if self.gyro_quantum_dps is None:
            q_w = step * math.ceil(4.0 * sigma_w / step - 1e-9)
        else:
            q_w = step * max(1, round(math.radians(self.gyro_quantum_dps) / step))
        q_a = (
            G0_M_S2
            * eps
            * max(self.accel_quanta, math.ceil(4.0 * sigma_a / (G0_M_S2 * eps) - 1e-9))
        )
        s = {
            "gyro": 1.0 / q_w,
            "accel": 1.0 / q_a,
            "g": 1.0 / self.eps_out_rad,
            "Pg": 1.0 / q_w,  # |g| ~ 1, so w*g has the rate's quantum
            "a2": 1.0 / (2.0 * G0_M_S2 * q_a),  # d(a^2) = 2 a da
            "gate": 1.0 / (2.0 * eps),  # a2/g0^2 lies on the grid 2 eps: exact
            "trust": float(self.trust_levels),
            "Qa": 1.0 / q_a,  # the equilibrium t*a/g0 then resolves eps_tilt
            "vv": 1.0 / self.eps_out_rad,
            "Qh": 1.0 / step,  # on the grid of hd
            "hd": 1.0 / step,  # lossless sum (see q_w)
            "h": 1.0 / self.eps_out_rad,
            "Ph": 1.0 / q_w,
            "Qg": 1.0 / (k_corr * self.eps_out_rad),  # K h_c is on this grid
            "gd": 1.0 / (k_corr * self.eps_out_rad),
            # difference stage: d = g - h is small, its products finer than the gyro's;
            # every term of dd lies on K eps_out / sub (hk and the leaks of d's parts), an
            # odd fraction of its quantum K eps_out: the sum never sits on a half level
            "d": 1.0 / self.eps_out_rad,
            "Pd": self.d_product_quanta / q_w,
            "dd": 1.0 / (self.dd_quanta * k_corr * self.eps_out_rad),
            "sub": float(self.sub_quanta),
            "wabs": 1.0 / q_w,
            "Xgh": 1.0 / math.radians(self.bias_err_quantum_deg),
            "cgh": 1.0 / math.radians(self.bias_err_quantum_deg),
            "b": 1.0 / math.radians(self.bias_quantum_dps),
            "Pbh": _odd_fraction(step, self.bias_term_quantum_dps),
            "Pbg": _odd_fraction(k_corr * self.eps_out_rad, self.bias_term_quantum_dps),
        }
        if self.with_mag:
            # m is in units of the horizontal field B_h, so the heading resolution of every
            # m-side quantum equals the tilt resolution of its g-side counterpart
            # the heading-side eps: close to eps_tilt, with the gyro quantum q_w a whole
            # multiple of the grid K_m eps_m of "nd" (exact sums there too)
            k_m = 1.0 / self.tau_mag_s
            eps_m = q_w / (k_m * max(1, round(q_w / (k_m * self.eps_mag_rad))))
            step_m = k_m * eps_m
            b_h = self.mag_horizontal_uT
            q_mf = eps_m * b_h  # eps_m of heading at B_h
            q_mag = self.mag_quantum_uT or q_mf * math.ceil(4.0 * self.mag_noise_uT / q_mf - 1e-9)
            s.update(
                {
                    "mag": 1.0 / q_mag,
                    # the smoothed field: its noise is far below q_mf, so K_m mf/B_h lies
                    # on the grid of nd at a resolution of eps_tilt of heading
                    "mf": 1.0 / q_mf,
                    # |B|^2/B0^2 - 1 at a fraction of its threshold (at 2 eps_m, the
                    # heading grid, it was half the threshold: a 3 % change of eps_m
                    # moved trial 02's untrusted share from 7 % to 25 %)
                    "b2": self.mag_norm_quanta / (self.mag_field_uT**2 * self.mag_norm_th),
                    "mgate": 20.0,  # 5 % of the thresholds
                    "mtrust": float(self.mag_trust_levels),
                    "Qmag": 1.0 / q_mf,
                    # the measured vertical field s g = (mf.g/B_h) g, removed from mf/B_h,
                    # at the smoothed field's resolution: |g| ~ 1, so every node of the
                    # chain mf.g -> s -> t_m s -> t_m s g_c has the quantum q_mf (/B_h)
                    "Pmg": 1.0 / q_mf,
                    "mv": b_h / q_mf,
                    "st": b_h / q_mf,
                    "Pv": b_h / q_mf,
                    "Qn": 1.0 / step_m,
                    "n": 1.0 / self.eps_out_rad,
                    "Pn": 1.0 / q_w,
                    "nd": 1.0 / step_m,  # K_m q_mag/B_h is on this grid
                    "Pbn": _odd_fraction(step_m, self.bias_term_quantum_dps),
                }
            )
        return s


def _odd_fraction(grid: float, target_dps: float) -> float:
    """Scale whose quantum is ``grid / M`` with M odd and the quantum close to ``target_dps``:
    a sum of such terms with terms on ``grid`` never sits on a half level of ``grid``."""
    m = max(1, round(grid / math.radians(target_dps)))
    m += 1 - m % 2
    return m / grid


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
    bias: str | None = None,
    lead_s: float = 0.0,
    lead_gate: str | None = None,
) -> list[str]:
    """Track a body-frame vector ``v`` of a fixed earth direction: per axis c,
    ``dv_c/dt = (v x w)_c + corr_c - v_c/tau`` with ``corr[c] = (sources, weights (n, 1))``.

    ``v`` is three 1-unit Integrator nodes ``v_x, v_y, v_z``, so each product the cross
    product needs is a plain source list: ``P{v}_c = w * [v_a, v_b, 0]`` (the ``zero`` node
    fills the slot of w_c, which does not enter component c). Every unit of ``P{v}_c``
    feeds only ``{v}d_c``: one synaptic op per spike instead of three. Returns the names."""
    comp = [f"{v}_{a}" for a in AXES]
    sub = scales["sub"]
    for c, axis in enumerate(AXES):
        prod = f"P{v}_{axis}"
        b = [ZERO if p == "0" else f"{v}_{p}" for p in PARTNER[c]]
        g.product(prod, "gyro", b, scale=scales[f"P{v}"])
        srcs, w = corr[c]
        srcs = [srcs, f"{v}r_{axis}"] if isinstance(srcs, str) else [*srcs, f"{v}r_{axis}"]
        w = np.vstack([w, np.full((3, 1), -1.0 / tau_s)])  # the leak of v_c = r_c + k_c
        if bias is not None:  # - v x b: the same products with the bias estimate
            g.product(f"Pb{v}_{axis}", bias, b, scale=scales[f"Pb{v}"])
            srcs.append(f"Pb{v}_{axis}")
            w = np.vstack([w, -np.array(SIGN[c]).reshape(3, 1)])
        # rotation part (gyro grid) and correction part (fine grid), each integrated with
        # the same leak: v_c = r_c + k_c exactly (linear), and the coarse rotation never
        # runs through the fine correction grid
        if lead_s:  # relax the led vector v + lead_s (v x w), not v (see _add_lead)
            lead_src = prod
            if lead_gate is not None:  # only while the measurement is trusted
                lead_src = g.product(f"L{v}_{axis}", prod, [lead_gate] * 3, scale=scales[f"P{v}"])
            srcs.append(lead_src)
            w = np.vstack([w, -lead_s / tau_s * np.array(SIGN[c]).reshape(3, 1)])
        g.dense(f"{v}d_{axis}", srcs, w, scale=scales[f"{v}d"])
        # one rotation integrator per product term (the zero slot has gain 0: never moves)
        g.integrator(
            f"{v}r_{axis}", prod, gain=list(SIGN[c]), tau_s=None, y0=0.0, scale=sub * scales[v]
        )
        g.integrator(
            f"{v}k_{axis}", f"{v}d_{axis}", gain=1.0, tau_s=tau_s, y0=y0[c], scale=sub * scales[v]
        )
        g.dense(comp[c], [f"{v}r_{axis}", f"{v}k_{axis}"], np.ones((4, 1)), scale=scales[v])
    return comp


def _add_difference_stage(g: Graph, p: AttitudeParams, s: dict[str, float]) -> list[str]:
    """Stage 2 as ``g = h + d``: the difference ``d = g - h`` obeys
    ``dd/dt = d x w - K d - (dh/dt - h x w) + Qg`` (subtract the two stages' equations),
    where ``dh/dt - h x w = hd - K hk`` is the first stage's correction, a sum the graph
    already holds. ``d`` is small (the angle between the stages), so its rotation products
    ``w * d`` hardly move: the second stage no longer runs every gyro spike through its own
    full-size products. ``g_c = hr_c + hk_c + dr_c + dk_c`` (exact: all on the sub grid)."""
    k = 1.0 / p.tau_acc_s
    corr = [([f"hd_{a}", f"hk_{a}", f"Qg_{a}"], np.array([[-1.0], [k], [1.0]])) for a in AXES]
    _add_tracker(g, "d", s, p.tau_acc_s, [0.0, 0.0, 0.0], corr)
    comp = []
    for axis in AXES:
        srcs = [f"hr_{axis}", f"hk_{axis}", f"dr_{axis}", f"dk_{axis}"]
        comp.append(g.dense(f"g_{axis}", srcs, np.ones((8, 1)), scale=s["g"]))
    return comp


def _add_lead(g: Graph, v: str, scale: float, lead_s: float, suffix: str = "o") -> list[str]:
    """Output nodes ``{v}o_c = v_c + lead_s (v x w)_c`` (the tracker's products ``P{v}_c``
    with the gain ``lead_s``): the engine holds a gyro sample from its arrival on, while
    the sample is the rate over the period before it, so the tracker lags the rotation
    by one sample period (1.6 deg at 450 deg/s, most of the fast-rotation error). The
    lead is the rotation the tracker has not yet integrated; it is a separate node so no
    feedback (products, renormalisation) sees it. Returns the names."""
    out = []
    diff = v == "g" and f"dr_{AXES[0]}" in g.nodes  # g = h + d: its rotation is h's
    for c, axis in enumerate(AXES):
        if diff:
            parts, prod, n_parts = ["hr", "hk", "dr", "dk"], f"Ph_{axis}", 8
        else:
            parts, prod, n_parts = [f"{v}r", f"{v}k"], f"P{v}_{axis}", 4
        w = np.concatenate([np.ones(n_parts), lead_s * np.array(SIGN[c])]).reshape(-1, 1)
        srcs = [f"{q}_{axis}" for q in parts] + [prod]
        out.append(g.dense(f"{v}{suffix}_{axis}", srcs, w, scale=scale))
    return out


def _add_trust(
    g: Graph,
    sensor: str,
    names: tuple[str, str, str, str | None],
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
    if untrust is not None:  # 1 - t at the same scale: the complement of the quantized trust
        g.dense(untrust, trust, [[-1.0]], bias=[1.0], scale=scales[trust])


def _add_field_tracker(g: Graph, p: AttitudeParams, s: dict[str, float]) -> None:
    """The body-frame horizontal magnetic field ``n`` (magnetic north, units of ``B_h``), the
    same complementary structure as ``g`` (see the module docstring). The magnetometer is
    first smoothed by a leaky Integrator ``mf`` (one op per input spike; at rest its
    hysteresis keeps it still under the sensor noise). The measured horizontal part is
    ``mf/B_h - (mf.g/B_h) g``: Product ``Pmg = mf*g``, Dense ``mv`` (the vertical field),
    ``st = t_m mv`` and per axis ``Pv_c = st * g_c``. The trust ``t_m`` is off when the
    field's norm or its dip (vertical part) leaves the reference."""
    km = 1.0 / p.tau_mag_s
    b_h = p.mag_horizontal_uT
    g.input("mag", 3, scale=s["mag"])
    tf = p.tau_mag_filter_s
    g.integrator("mf", "mag", gain=1.0 / tf, tau_s=tf, y0=p.mag_start_uT, scale=s["mf"])
    # g as far behind the rotation as the smoothed field (it lags mag_lag_s; g
    # lags one gyro period): the vertical part mf.g is then consistent in fast rotation
    g_comp = _add_lead(g, "g", s["g"], p.lead_s - p.mag_lag_s, "m")
    g.product("Pmg", "mf", g_comp, scale=s["Pmg"])  # mf_c g_c
    g.dense("mv", "Pmg", np.full((3, 1), 1.0 / b_h), scale=s["mv"])  # mf.g / B_h
    # disturbance measure, 1 at the thresholds: norm | |B|^2/B0^2 - 1 | / th_norm and dip
    # | mf.g - B_v | / (B0 cos(dip) th_dip) (a dip change of th_dip moves mf.g by that much)
    b0 = p.mag_field_uT
    g.product("b2", "mf", "mf", scale=s["b2"])
    cos_dip = max(b_h / b0, 0.1)
    w_norm = 1.0 / (b0**2 * p.mag_norm_th)
    w_dip = b_h / (b0 * cos_dip * p.mag_dip_th_rad)
    w = np.zeros((4, 2))
    w[:3, 0] = w_norm
    w[3, 1] = w_dip
    srcs = ["b2", "mv"]
    if p.mag_ref_tau_s:
        # the references follow the field slowly (VQF's magRefTau): a field whose norm or
        # dip differs from the start values by a few percent (another place in the room,
        # a sensor calibration that varies with orientation) is accepted within ~T, a
        # magnet passing by in less is not
        tr = p.mag_ref_tau_s
        b2_0 = [float(v) ** 2 for v in p.mag_start_uT]
        g.integrator("rb2", "b2", gain=1.0 / tr, tau_s=tr, y0=b2_0, scale=s["b2"])
        g.integrator("rmv", "mv", gain=1.0 / tr, tau_s=tr, y0=p.b_vertical_uT / b_h, scale=s["mv"])
        srcs += ["rb2", "rmv"]
        w = np.vstack([w, -w])
        bias = [0.0, 0.0]
    else:
        bias = [-1.0 / p.mag_norm_th, -p.b_vertical_uT / (b0 * cos_dip * p.mag_dip_th_rad)]
    span = p.mag_gate_out - p.mag_gate_in
    if p.mag_gate_saturate:
        # per criterion x: (|x| - in) clipped to [0, span] as two units (x - in, -x - in):
        # only the band where the trust changes moves them, not a field far off (a magnet
        # close by moved |x| over tens of thresholds, each step a spike)
        w = np.hstack([w[:, :1], -w[:, :1], w[:, 1:], -w[:, 1:]])
        b = np.array([bias[0], -bias[0], bias[1], -bias[1]]) - p.mag_gate_in
        g.dense("mgate", srcs, w, bias=b, activation="clip", lo=0.0, hi=span, scale=s["mgate"])
        gate_w = {"mtn": [[-1.0 / span], [-1.0 / span], [0.0], [0.0]]}
        gate_w["mtd"] = gate_w["mtn"][2:] + gate_w["mtn"][:2]
        gate_b = 1.0
    else:
        g.dense("mgate", srcs, w, bias=bias, activation="abs", scale=s["mgate"])
        gate_w = {"mtn": [[-1.0 / span], [0.0]], "mtd": [[0.0], [-1.0 / span]]}
        gate_b = p.mag_gate_out / span
    # on/off per criterion; the trust is the product (both must hold)
    for name in ("mtn", "mtd"):
        g.dense(
            name,
            "mgate",
            np.array(gate_w[name]),
            bias=[gate_b],
            activation="clip",
            lo=0.0,
            hi=1.0,
            scale=s["mtrust"],
        )
    if p.mag_settle_s:
        # trusted again only after the field held the reference for ~2.3 settle times: a
        # leaky integrator of the instantaneous trust, on above 0.9 (off within 0.1 of it)
        g.product("mraw", "mtn", "mtd", scale=s["mtrust"])
        ts = p.mag_settle_s
        g.integrator("mtl", "mraw", gain=1.0 / ts, tau_s=ts, y0=1.0, scale=20.0)
        g.dense(
            "mtrust", "mtl", [[10.0]], bias=[-8.5], activation="clip", lo=0.0, hi=1.0, scale=1.0
        )
    else:
        g.product("mtrust", "mtn", "mtd", scale=s["mtrust"])
    # the held field is off by up to (1/2 + hysteresis) of its quantum per axis: |n|^2 by
    # up to twice that over B_h (20 uT at a 3.7 uT quantum: 0.3)
    q_rel = (0.5 + p.mag_hysteresis) / (s["mag"] * b_h)
    _add_hold(g, "n", "mtrust", km, p, s, 2.0 * q_rel)
    g.product("st", "mv", "mtrust", scale=s["st"])  # t_m mf.g / B_h
    corr = []
    for c, axis in enumerate(AXES):
        sel = [ZERO] * 3
        sel[c] = "mtrust"
        g.product(f"Qmag_{axis}", sel, "mf", scale=s["Qmag"])  # (.., t_m mf_c, ..)
        g.product(f"Pv_{axis}", "st", g_comp[c], scale=s["Pv"])  # t_m (mf.g/B_h) g_c
        w = np.zeros((5, 1))
        w[c, 0] = km / b_h
        w[3, 0] = -km
        w[4, 0] = 1.0  # Qn_c: hold and renormalisation
        corr.append(([f"Qmag_{axis}", f"Pv_{axis}", f"Qn_{axis}"], w))
    # the smoothed field lags the rotation by mag_lag_s: relax n as far behind
    bias = "bm" if p.bias_gain else None
    lead = p.lead_s - p.mag_lag_s
    comp = _add_tracker(g, "n", s, p.tau_mag_s, list(p.n0), corr, bias, lead, "mtrust")
    if p.lead_s:
        comp = _add_lead(g, "n", s["n"], p.lead_s)
    g.output("north", comp, scale=s["n"])
    g.output("mag_trust", "mtrust", scale=s["mtrust"])


def _add_hold(
    g: Graph,
    v: str,
    trust: str | None,
    k: float,
    p: AttitudeParams,
    s: dict,
    extra_deadband: float = 0.0,
) -> None:
    """``Q{v}_c = h v_c`` with the hold + renormalisation gain
    ``h = K (1 - t) + lam dz(1 - |v|^2)`` (``t`` = 0 without a trust): the term holds ``v``
    where its input is not trusted and pulls ``|v|`` back onto the unit sphere. ``dz`` is a
    dead band of ``+-(renorm_deadband + extra_deadband)`` (two relu units): within it the
    feedback is exactly zero, so a still IMU does not keep the loop through ``|v|^2``
    ticking. ``extra_deadband``: how far the measurement's own norm may be off (else the
    correction holds ``|v|^2`` at the band's edge and the loop ticks there for good)."""
    comp = [f"{v}_{a}" for a in AXES]
    lam, d = p.renorm_gain_per_s, p.renorm_deadband + extra_deadband
    g.product(f"{v}{v}", comp, comp, scale=s["vv"])
    g.dense(
        f"dz_{v}",
        f"{v}{v}",
        np.array([[-1.0, 1.0]] * 3),
        bias=[1.0 - d, -1.0 - d],
        activation="relu",
        scale=s["vv"],
    )
    srcs = ([trust] if trust else []) + [f"dz_{v}"]
    w = ([[-k]] if trust else []) + [[lam], [-lam]]
    g.dense(f"hold_{v}", srcs, np.array(w), bias=[k if trust else 0.0], scale=s[f"Q{v}"])
    for c, axis in enumerate(AXES):
        g.product(f"Q{v}_{axis}", f"hold_{v}", comp[c], scale=s[f"Q{v}"])


def _add_bias(g: Graph, p: AttitudeParams, s: dict[str, float]) -> None:
    """Gyro bias ``b`` learnt in motion from the angle between the two stages:
    ``db/dt = bias_gain * moving * (g x h)``, applied (``bm = moving * b``) only while the
    quantized gyro moves: at rest the coarse gyro reads 0 whatever the bias."""
    g.dense("wabs", "gyro", np.eye(3), activation="abs", scale=s["wabs"])
    g.dense("mov", "wabs", np.full((3, 1), s["wabs"]), activation="clip", lo=0.0, hi=1.0, scale=1.0)
    ga = ["g_y", "g_z", "g_z", "g_x", "g_x", "g_y"]
    hb = ["h_z", "h_y", "h_x", "h_z", "h_y", "h_x"]
    g.product("Xgh", ga, hb, scale=s["Xgh"])
    w = np.zeros((6, 3))
    for c in range(3):
        w[2 * c, c], w[2 * c + 1, c] = 1.0, -1.0
    g.dense("cgh", "Xgh", w, scale=s["cgh"])
    g.product("cm", "cgh", ["mov"] * 3, scale=s["cgh"])
    g.integrator("b", "cm", gain=p.bias_gain, tau_s=None, y0=0.0, scale=s["b"])
    g.product("bm", "b", ["mov"] * 3, scale=s["b"])


def build_attitude_graph(params: AttitudeParams | None = None, name: str = "attitude") -> Graph:
    """The attitude graph for ``params`` (defaults: a typical MEMS IMU at 285.7 Hz)."""
    p = params or AttitudeParams()
    s = p.scales()
    k = 1.0 / p.tau_acc_s
    g = Graph(name)
    g.input("gyro", 3, scale=s["gyro"])
    g.input("accel", 3, scale=s["accel"])
    # accelerometer trust: e = | |a|^2/g0^2 - 1 |, t = clip((e_out - e)/(e_out - e_in), 0, 1)
    _add_trust(g, "accel", ("a2", "gate", "trust", None), G0_M_S2, p.gate_in, p.gate_out, s)
    # a constant 0 (zero weight and bias: it never spikes) to fill unused product slots
    g.dense(ZERO, "trust", [[0.0]], bias=[0.0], scale=1.0)
    # stage 1: h, the accelerometer low-passed in the (rotating) body frame
    _add_hold(g, "h", "trust", k, p, s)
    corr = []
    for c, axis in enumerate(AXES):
        sel = [ZERO] * 3
        sel[c] = "trust"
        g.product(f"Qa_{axis}", sel, "accel", scale=s["Qa"])  # (.., t a_c, ..)
        w_a = np.zeros((3, 1))
        w_a[c, 0] = k / G0_M_S2
        corr.append(([f"Qa_{axis}", f"Qh_{axis}"], np.vstack([w_a, [[1.0]]])))
    bias = "bm" if p.bias_gain else None
    acc_lead = p.lead_s if p.accel_lead else 0.0
    h = _add_tracker(g, "h", s, p.tau_acc_s, list(p.up0), corr, bias, acc_lead)
    # stage 2: g, h low-passed once more (a second-order low-pass of the specific force in
    # an inertial frame), kept on the unit sphere
    _add_hold(g, "g", None, k, p, s)
    if p.diff_stage and not bias:
        comp = _add_difference_stage(g, p, s)
    else:
        corr = [([h[c], f"Qg_{axis}"], np.array([[k], [1.0]])) for c, axis in enumerate(AXES)]
        comp = _add_tracker(g, "g", s, p.tau_acc_s, list(p.up0), corr, bias)
    if bias:
        _add_bias(g, p, s)
    if p.lead_s:
        comp = _add_lead(g, "g", s["g"], p.lead_s)
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
