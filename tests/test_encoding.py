"""Encoders: the sigma-delta herding invariant (on the real BROAD log) and the DVS model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikefuse.encoding import (
    DvsEncoder,
    SigmaDeltaEncoder,
    resample_area,
    round_half_away,
    to_gray,
)
from spikefuse.tables import load_table

# --------------------------------------------------------------------------- rounding


def test_round_half_away_ties_and_signs():
    x = np.array([-2.5, -1.5, -0.5, -0.49, 0.0, 0.49, 0.5, 1.5, 2.5, 3.7, -3.7])
    expected = np.array([-3, -2, -1, 0, 0, 0, 1, 2, 3, 4, -4], dtype=float)
    out = round_half_away(x)
    np.testing.assert_array_equal(out, expected)
    assert not np.signbit(out[3])  # no negative zero
    assert np.isnan(round_half_away(np.array([np.nan])))[0]


# --------------------------------------------------------------------------- sigma-delta


def _run(enc: SigmaDeltaEncoder, rows: np.ndarray) -> np.ndarray:
    """Encode every row; return the receiver-side sum after each row (independent of enc.sent)."""
    recv = np.zeros(enc.n_channels, dtype=np.int64)
    out = np.empty((rows.shape[0], enc.n_channels), dtype=np.int64)
    for i, row in enumerate(rows):
        ch, cnt = enc.encode(row)
        assert ch.dtype == np.int32 and cnt.dtype == np.int32
        assert np.all(cnt != 0)
        assert np.all(np.diff(ch) > 0)
        recv[ch] += cnt
        out[i] = recv
    return out


def test_sigma_delta_reconstruction_on_real_broad_log(shared_data):
    table = load_table(shared_data / "broad" / "broad_02_undisturbed_slow_rotation.csv.gz")
    scales = {"gyro": 200.0, "accel": 50.0, "mag": 2.0}  # counts per rad/s, per m/s², per µT
    n_events = 0
    for group, k in scales.items():
        values = table.groups[group]
        assert values.shape[0] > 50_000
        enc = SigmaDeltaEncoder(3, k)
        recv = _run(enc, values)
        finite = np.isfinite(values)
        err_quanta = np.abs(recv / k - values)[finite] * k
        # within half a quantum per channel at every sample (tiny float slack on the product)
        assert err_quanta.max() <= 0.5 + 1e-9, (group, err_quanta.max())
        np.testing.assert_array_equal(recv[-1], enc.sent)
        assert enc.n_skipped_nonfinite == int((~finite).sum())
        n_events += int(np.abs(np.diff(recv, axis=0)).sum())
    assert n_events > 10_000  # the signal really moved through many quanta


def test_sigma_delta_per_channel_scale_and_herding_residual():
    enc = SigmaDeltaEncoder(2, np.array([1.0, 10.0]))
    ch, cnt = enc.encode(np.array([0.3, 0.3]))  # 0.3 -> 0 counts; 3.0 -> 3 counts
    assert ch.tolist() == [1] and cnt.tolist() == [3]
    ch, cnt = enc.encode(np.array([0.6, 0.3]))  # residual 0.6 -> 1; no change on ch 1
    assert ch.tolist() == [0] and cnt.tolist() == [1]
    # a constant 0.4 on scale 1: round(0.4 - 0) = 0, nothing is sent, error stays 0.4 <= 1/2
    enc2 = SigmaDeltaEncoder(1, 1.0)
    for _ in range(5):
        assert enc2.encode(np.array([0.4]))[0].size == 0
    assert enc2.sent.tolist() == [0]
    # herding: a value that drifts slowly is tracked with the residual carried over
    enc3 = SigmaDeltaEncoder(1, 1.0)
    total = 0
    for v in np.linspace(0.0, 10.0, 101):
        _, c = enc3.encode(np.array([v]))
        total += int(c.sum())
        assert abs(v - total) <= 0.5
    assert total == 10


def test_sigma_delta_nonfinite_are_skipped_and_counted():
    enc = SigmaDeltaEncoder(3, 10.0)
    enc.encode(np.array([1.0, 1.0, 1.0]))
    ch, cnt = enc.encode(np.array([np.nan, 2.0, np.inf]))
    assert ch.tolist() == [1] and cnt.tolist() == [10]
    assert enc.n_skipped_nonfinite == 2
    ch, cnt = enc.encode(np.array([-np.inf, np.nan, 3.0]))
    assert ch.tolist() == [2] and cnt.tolist() == [20]
    assert enc.n_skipped_nonfinite == 4
    assert enc.sent.tolist() == [10, 20, 30]
    ch, cnt = enc.encode(np.array([1e300, 2.0, 3.0]))  # finite but not quantisable
    assert ch.size == 0 and enc.n_skipped_out_of_range == 1
    enc.reset()
    assert enc.sent.tolist() == [0, 0, 0] and enc.n_skipped_nonfinite == 0


def test_sigma_delta_saturates_int32_and_catches_up():
    enc = SigmaDeltaEncoder(1, 1.0)
    big = 3.0 * 2**31
    _, c1 = enc.encode(np.array([big]))
    assert c1.tolist() == [2**31 - 1] and enc.n_saturated == 1
    _, c2 = enc.encode(np.array([big]))
    _, c3 = enc.encode(np.array([big]))
    _, c4 = enc.encode(np.array([big]))
    assert int(enc.sent[0]) == int(big)
    assert sum(int(c.sum()) for c in (c1, c2, c3, c4)) == int(big)


def test_sigma_delta_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_channels"):
        SigmaDeltaEncoder(0, 1.0)
    with pytest.raises(ValueError, match="scale"):
        SigmaDeltaEncoder(2, [1.0, -1.0])
    with pytest.raises(ValueError, match="scale has shape"):
        SigmaDeltaEncoder(2, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        SigmaDeltaEncoder(3, 1.0).encode(np.zeros(2))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=2, max_size=2
        ),
        min_size=1,
        max_size=40,
    ),
    st.floats(1e-3, 1e3),
)
def test_sigma_delta_invariant_property(rows, k):
    enc = SigmaDeltaEncoder(2, k)
    for row in rows:
        enc.encode(np.array(row))
        assert np.all(np.abs(k * np.array(row) - enc.sent) <= 0.5 + 1e-9 * max(1.0, abs(k) * 1e6))


def test_sigma_delta_is_deterministic():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(200, 4)).cumsum(axis=0)
    a, b = SigmaDeltaEncoder(4, [1, 2, 3, 4]), SigmaDeltaEncoder(4, [1, 2, 3, 4])
    for r in rows:
        ca, na = a.encode(r)
        cb, nb = b.encode(r)
        assert ca.tolist() == cb.tolist() and na.tolist() == nb.tolist()


# --------------------------------------------------------------------------- DVS


def _edge_frame(x_edge: float, width: int = 32, height: int = 8) -> np.ndarray:
    """Dark (0.1) left of x_edge, bright (0.9) right of it, float intensities."""
    x = np.arange(width)[None, :].repeat(height, axis=0)
    return np.where(x < x_edge, 0.1, 0.9)


def test_dvs_moving_edge_events_where_and_when_intensity_changes():
    width, height, period_ns = 32, 8, 10_000_000
    enc = DvsEncoder(width, height, threshold=0.2)
    assert enc.encode(0, _edge_frame(8, width, height), period_ns)[0].size == 0  # reference
    prev = _edge_frame(8, width, height)
    seen = np.zeros(width * height, dtype=bool)
    for k in range(1, 9):
        t_ns = k * period_ns
        frame = _edge_frame(8 + 2 * k, width, height)  # the edge moves right 2 px per frame
        ch, cnt, dt = enc.encode(t_ns, frame, period_ns)
        changed = np.flatnonzero((frame != prev).ravel())
        assert set(ch.tolist()) == set(changed.tolist())  # where: exactly the changed pixels
        # bright -> dark: log(0.101) - log(0.901) = -2.19 -> floor(2.19/0.2) = 10 OFF events
        per_pix = np.bincount(ch, weights=cnt, minlength=width * height)
        assert np.all(per_pix[changed] == -10)
        assert np.all(cnt == -1)
        assert np.all((dt > 0) & (dt <= period_ns)) and np.all(np.diff(dt) >= 0)  # when
        seen[changed] = True
        prev = frame
    assert seen.sum() == 16 * height
    # static pixels (never crossed by the edge) never fire
    ys, xs = np.divmod(np.arange(width * height), width)
    static = (xs < 8) | (xs >= 24)
    assert not np.any(seen & static)


def test_dvs_counts_timing_and_reference_residual():
    enc = DvsEncoder(1, 1, threshold=0.2, eps=1e-3)
    enc.encode(0, np.array([[0.2]]), 1000)
    i1 = (0.2 + 1e-3) * np.exp(0.5) - 1e-3  # dL = +0.5 -> 2 events, residual 0.1
    ch, cnt, dt = enc.encode(1000, np.array([[i1]]), 1000)
    assert cnt.tolist() == [1, 1] and ch.tolist() == [0, 0]
    assert dt.tolist() == [400, 800]  # crossings at 0.2/0.5 and 0.4/0.5 of the interval
    i2 = (0.2 + 1e-3) * np.exp(0.65) - 1e-3  # +0.15 more: residual 0.25 -> 1 event
    ch, cnt, _ = enc.encode(2000, np.array([[i2]]), 1000)
    assert cnt.tolist() == [1]
    ch, cnt, _ = enc.encode(3000, np.array([[i2]]), 1000)  # no change -> nothing
    assert ch.size == 0


def test_dvs_refractory_defers_events():
    enc = DvsEncoder(1, 1, threshold=0.2, refractory_ns=2500)
    enc.encode(0, np.array([[0.1]]), 1000)
    _, cnt, _ = enc.encode(1000, np.array([[0.9]]), 1000)
    assert cnt.tolist() == [1]  # at most one event per refractory period within a frame
    _, cnt, _ = enc.encode(2000, np.array([[0.9]]), 1000)
    assert cnt.size == 0  # still refractory (last event at 92 ns, 92 + 2500 > 2000)
    total = 1
    for k in range(3, 30):
        total += int(enc.encode(k * 1000, np.array([[0.9]]), 1000)[1].sum())
    assert total == 10  # the deferred change is reported eventually: floor(2.19/0.2)


def test_dvs_downsamples_rgb_uint8_and_skips_nonfinite():
    enc = DvsEncoder(4, 2)
    frame = np.zeros((20, 40, 3), dtype=np.uint8)
    enc.encode(0, frame, 100)
    frame2 = frame.copy()
    frame2[10:, 30:] = 255  # bottom-right output pixel (x=3, y=1) only
    ch, cnt, _ = enc.encode(100, frame2, 100)
    assert set(ch.tolist()) == {1 * 4 + 3} and np.all(cnt == 1)
    f = np.full((2, 4), 0.5)
    f[0, 0] = np.nan
    enc2 = DvsEncoder(4, 2)
    enc2.encode(0, f, 100)
    assert enc2.n_skipped_nonfinite == 1
    f2 = f.copy()
    f2[0, 0] = 0.9  # the pixel becomes valid: it initialises, no event
    assert enc2.encode(100, f2, 100)[0].size == 0


def test_resample_area_block_means_and_gray():
    img = np.arange(16, dtype=float).reshape(4, 4)
    out = resample_area(img, 2, 2)
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(resample_area(img, 4, 4), img)
    np.testing.assert_allclose(to_gray(np.full((2, 2), 65535, np.uint16)), 1.0)
    with pytest.raises(ValueError, match="channels"):
        to_gray(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="frame_interval_ns"):
        DvsEncoder(2, 2).encode(0, np.zeros((2, 2)), 0)


def test_resample_area_non_integer_factor_preserves_mean_and_caches():
    rng = np.random.default_rng(0)
    img = rng.random((50, 70))
    cache: dict = {}
    out = resample_area(img, 20, 30, cache)
    assert out.shape == (20, 30) and len(cache) == 2
    np.testing.assert_allclose(out.mean(), img.mean(), rtol=1e-12)
    np.testing.assert_allclose(resample_area(img, 20, 30, cache), out)
    np.testing.assert_allclose(resample_area(np.ones((7, 9)), 3, 4), np.ones((3, 4)))


# --------------------------------------------------------------------------- auto-zero
def _offset_case(bias: float, n_rest: int = 300, n_move: int = 2000, seed: int = 3):
    """A channel at 1 count per unit: rest (a constant offset ``bias`` plus noise of 0.05
    quanta), then a slow sine of 6 quanta amplitude: (raw rows, true signal)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rest + n_move)
    true = np.where(t < n_rest, 0.0, 6.0 * np.sin(2 * np.pi * (t - n_rest) / 500.0))
    raw = true + bias + 0.05 * rng.standard_normal(t.size)
    return raw[:, None], true


def test_auto_zero_removes_an_offset_hidden_under_the_quantum():
    """An offset of 0.3 quanta sends nothing at rest either way; in motion the plain encoder
    carries it (mean reconstruction error ~0.3 quanta), the auto-zeroing one learnt it at
    rest (error ~0), still without a single count at rest. (It also learns the first
    samples of the motion, until the signal leaves the zero level: a small leak.)"""
    raw, true = _offset_case(0.3)
    errs = {}
    for rest in (0, 100):
        enc = SigmaDeltaEncoder(1, 1.0, rest_samples=rest, zero_tau_samples=40.0)
        at_rest = _run(enc, raw[:300])[:, 0]
        assert not at_rest.any()  # nothing sent at rest
        assert enc.offset[0] == pytest.approx(0.3 if rest else 0.0, abs=0.02)
        recv = _run(enc, raw[300:])[:, 0]
        errs[rest] = float(np.mean(recv - true[300:]))
    assert errs[0] == pytest.approx(0.3, abs=0.05)
    assert abs(errs[100]) <= 0.05


def test_auto_zero_learns_only_at_rest_and_within_half_a_quantum():
    # an offset beyond half a quantum makes the channel send at rest: no rest, no learning
    raw, _ = _offset_case(0.8, n_move=10)
    enc = SigmaDeltaEncoder(1, 1.0, rest_samples=10, zero_tau_samples=5.0)
    _run(enc, raw)
    assert enc.offset[0] == 0.0
    # at 0.45 quanta (noise pushes it past 1/2 now and then) the offset never leaves +-1/2
    raw, _ = _offset_case(0.45, n_move=10)
    enc = SigmaDeltaEncoder(1, 4.0, rest_samples=10, zero_tau_samples=2.0)
    for row in raw / 4.0:
        enc.encode(row)
        assert abs(enc.offset[0]) <= 0.5 / 4.0
    # a non-finite value is no evidence of rest; reset() forgets the offset
    enc = SigmaDeltaEncoder(2, 1.0, rest_samples=3, zero_tau_samples=1.0)
    for row in ([0.2, 0.1], [0.2, 0.1], [np.nan, 0.1], [0.2, 0.1], [0.2, 0.1]):
        enc.encode(np.array(row))
    assert enc.offset.tolist() == [0.0, 0.0] and enc.n_rest == 2
    enc.encode(np.array([0.2, 0.1]))
    assert enc.offset.tolist() == [0.2, 0.1]
    enc.reset()
    assert enc.offset.tolist() == [0.0, 0.0] and enc.n_rest == 0
    with pytest.raises(ValueError, match="rest_samples"):
        SigmaDeltaEncoder(1, 1.0, rest_samples=-1)
    with pytest.raises(ValueError, match="zero_tau_samples"):
        SigmaDeltaEncoder(1, 1.0, rest_samples=1, zero_tau_samples=0.5)


def test_hysteresis_keeps_a_noisy_value_on_a_level_boundary_still():
    """A still value on a half level with noise of 0.05 quanta toggles the plain encoder on
    about every other sample; with a hysteresis of 0.25 quanta it sends once, and the
    reconstruction stays within 1/2 + 0.25 quanta of a moving signal."""
    rng = np.random.default_rng(5)
    still = (2.5 + 0.05 * rng.standard_normal(2000))[:, None]
    n_sent = {}
    for h in (0.0, 0.25):
        enc = SigmaDeltaEncoder(1, 1.0, hysteresis=h)
        recv = _run(enc, still)[:, 0]
        n_sent[h] = int(np.count_nonzero(np.diff(recv)))
    assert n_sent[0.0] > 500 and n_sent[0.25] == 0
    moving = (7.0 * np.sin(np.arange(3000) / 50.0) + 0.05 * rng.standard_normal(3000))[:, None]
    enc = SigmaDeltaEncoder(1, 1.0, hysteresis=0.25)
    err = np.abs(_run(enc, moving)[:, 0] - moving[:, 0])
    assert err.max() <= 0.75 + 1e-12 and err.max() > 0.5
    with pytest.raises(ValueError, match="hysteresis"):
        SigmaDeltaEncoder(1, 1.0, hysteresis=0.5)


def test_smoothing_quiets_sensor_noise_and_follows_a_moving_value():
    """A still value with noise of 0.4 quanta (a magnetometer on a fine quantum) keeps the
    plain encoder toggling; quantizing a moving average over 12 samples sends at most a
    few counts. On a ramp the reconstruction lags by ``s - 1`` samples and stays within
    half a quantum of the average; ``smooth_samples`` 1 is the plain encoder."""
    rng = np.random.default_rng(7)
    still = (3.0 + 0.4 * rng.standard_normal(3000))[:, None]
    sends = {}
    for s in (1.0, 12.0):
        enc = SigmaDeltaEncoder(1, 1.0, hysteresis=0.2, smooth_samples=s)
        recv = _run(enc, still)[:, 0]
        sends[s] = int(np.count_nonzero(np.diff(recv[100:])))
    assert sends[1.0] > 100 and sends[12.0] <= 5
    ramp = (0.05 * np.arange(2000.0))[:, None]
    enc = SigmaDeltaEncoder(1, 1.0, smooth_samples=12.0)
    recv = _run(enc, ramp)[:, 0]
    lagged = ramp[500:, 0] - 0.05 * 11.0  # the moving average's steady lag
    assert np.abs(recv[500:] - lagged).max() <= 0.5 + 1e-9
    plain, one = SigmaDeltaEncoder(1, 1.0), SigmaDeltaEncoder(1, 1.0, smooth_samples=1.0)
    np.testing.assert_array_equal(_run(plain, still), _run(one, still))


def test_smoothing_starts_at_the_first_finite_value_and_skips_nonfinite():
    enc = SigmaDeltaEncoder(2, 1.0, smooth_samples=4.0)
    ch, ct = enc.encode(np.array([np.nan, 10.0]))  # channel 0 has no average yet
    assert ch.tolist() == [1] and ct.tolist() == [10] and enc.n_skipped_nonfinite == 1
    enc.encode(np.array([8.0, np.inf]))  # channel 0 starts at 8; channel 1 keeps 10
    assert enc.smoothed.tolist() == [8.0, 10.0] and enc.sent.tolist() == [8, 10]
    enc.encode(np.array([12.0, 6.0]))
    assert enc.smoothed.tolist() == [9.0, 9.0] and enc.sent.tolist() == [9, 9]
    enc.reset()
    assert np.isnan(enc.smoothed).all()
    with pytest.raises(ValueError, match="smooth_samples"):
        SigmaDeltaEncoder(1, 1.0, smooth_samples=0.5)


def test_rest_hysteresis_stops_a_still_boundary_toggling_and_keeps_what_it_sent():
    """A still value on a level boundary with noise of 0.1 quanta toggles the encoder with
    hysteresis 0.15 at random; with a rest hysteresis of 0.3 after 20 quiet samples it goes
    quiet for good after its first quiet stretch, and the reconstruction is still the
    level next to the value. A change from rest shows once it exceeds the wider threshold,
    and the first count puts the normal threshold back."""
    rng = np.random.default_rng(11)
    still = (2.5 + 0.1 * rng.standard_normal(6000))[:, None]
    toggles = {}
    for hq in (0.0, 0.3):
        enc = SigmaDeltaEncoder(1, 1.0, hysteresis=0.15, quiet_samples=20, quiet_hysteresis=hq)
        recv = _run(enc, still)[:, 0]
        toggles[hq] = int(np.count_nonzero(np.diff(recv[1000:])))
        assert recv[-1] in (2.0, 3.0)
    assert toggles[0.0] > 50 and toggles[0.3] == 0
    enc = SigmaDeltaEncoder(1, 1.0, quiet_samples=5, quiet_hysteresis=0.4)
    assert enc.encode(np.array([0.0]))[0].size == 0
    for _ in range(5):
        enc.encode(np.array([0.3]))
    assert enc.n_quiet == 6 and enc.current_threshold() == pytest.approx(0.9)
    assert enc.encode(np.array([0.85]))[0].size == 0  # under 1/2 + 0.4: still at rest
    ch, ct = enc.encode(np.array([0.95]))
    assert ct.tolist() == [1] and enc.n_quiet == 0 and enc.current_threshold() == 0.5
    enc.encode(np.array([np.nan]))  # a non-finite value is no evidence of rest
    assert enc.n_quiet == 0
    enc.reset()
    assert enc.n_quiet == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="quiet_hysteresis"):
            SigmaDeltaEncoder(1, 1.0, quiet_hysteresis=bad)
    with pytest.raises(ValueError, match="quiet_samples"):
        SigmaDeltaEncoder(1, 1.0, quiet_samples=-1)


def test_rest_average_quiets_vibration_at_rest_and_lets_motion_through():
    """Bursts of vibration at rest (zero mean, 1 quantum RMS) toggle an encoder with a rest
    hysteresis of 0.4 every burst; quantizing a 30-sample average at rest keeps it silent.
    A ramp from rest (0.2 quanta per sample) is sent within 12 samples of where the plain
    encoder sends it (the average lags),
    and from the first count on the values are quantized as they are."""
    rng = np.random.default_rng(3)
    n = 8000
    burst = (np.arange(n) // 400) % 4 == 3  # 100 samples of vibration in every 400
    still = (0.05 * rng.standard_normal(n) + burst * rng.standard_normal(n))[:, None]
    sends = {}
    for qs in (1.0, 30.0):
        enc = SigmaDeltaEncoder(
            1, 1.0, quiet_samples=50, quiet_hysteresis=0.4, quiet_smooth_samples=qs
        )
        sends[qs] = int(np.count_nonzero(np.diff(_run(enc, still)[:, 0])))
    assert sends[1.0] > 20 and sends[30.0] == 0
    ramp = np.r_[np.zeros(200), 0.2 * np.arange(1, 101)][:, None]
    first = {}
    for qs in (1.0, 30.0):
        enc = SigmaDeltaEncoder(1, 1.0, quiet_samples=50, quiet_smooth_samples=qs)
        recv = _run(enc, ramp)[:, 0]
        first[qs] = int(np.flatnonzero(recv)[0])
        assert np.abs(recv[-20:] - ramp[-20:, 0]).max() <= 0.5 + 1e-9  # raw again
    assert first[1.0] == 202 and first[1.0] < first[30.0] <= first[1.0] + 12
    enc = SigmaDeltaEncoder(2, 1.0, quiet_samples=1, quiet_smooth_samples=4.0)
    enc.encode(np.array([np.nan, 0.2]))  # channel 0's average starts at its first finite value
    assert np.isnan(enc.quiet_avg[0]) and enc.quiet_avg[1] == 0.2
    enc.reset()
    assert np.isnan(enc.quiet_avg).all()
    with pytest.raises(ValueError, match="quiet_smooth_samples"):
        SigmaDeltaEncoder(1, 1.0, quiet_smooth_samples=0.5)
