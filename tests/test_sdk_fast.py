"""The compiled per-sample path of the driver SDK (spikefuse/sdk/_fast.pyx) against its
oracles: the numpy SigmaDeltaEncoder and the protocol's reference encoder, byte for byte;
and a whole driver run over a real Publisher/Subscriber sends exactly what the reference
path sends."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spikefuse.encoding import SigmaDeltaEncoder
from spikefuse.errors import ProtocolError
from spikefuse.protocol import MAX_DT_NS, EventBatch, decode, encode
from spikefuse.sdk import DriverConfig, Sample
from spikefuse.sdk._fast import pack_event_batch
from spikefuse.sdk.runner import Runner
from spikefuse.sdk.streams import CompiledSigmaDelta, GroupStream
from spikefuse.sdk.timing import StopSignal
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber

SPECIAL = [np.nan, np.inf, -np.inf, 1e300, -1e300, 3e9, -3e9, 0.5, -0.5, 1.5, 2.5, 0.0, -0.0]
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(SPECIAL),
    st.floats(-1e3, 1e3),
)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(1e-3, 1e9), min_size=n, max_size=n),
            st.lists(st.lists(values, min_size=n, max_size=n), min_size=1, max_size=12),
        )
    )
)
def test_compiled_sigma_delta_matches_the_numpy_encoder(case):
    scale, samples = case
    ref = SigmaDeltaEncoder(len(scale), np.array(scale))
    fast = CompiledSigmaDelta(len(scale), np.array(scale))
    for v in samples:
        a, b = ref.encode(np.array(v)), fast.encode(np.array(v))
        assert b[0].dtype == np.int32 and b[1].dtype == np.int32
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(ref.sent, fast.sent)
    for counter in ("n_skipped_nonfinite", "n_skipped_out_of_range", "n_saturated", "n_samples"):
        assert getattr(ref, counter) == getattr(fast, counter), counter


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n),
            st.integers(0, 4),
            st.floats(1.0, 10.0),
            st.sampled_from([0.0, 0.1, 0.25, 0.49]),
            st.sampled_from([1.0, 1.5, 4.0, 11.43]),
            st.integers(0, 4),
            st.sampled_from([0.0, 0.2, 0.45, 0.9]),
            st.sampled_from([1.0, 3.0, 7.5]),
            st.booleans(),
            st.lists(
                st.lists(st.one_of(values, st.floats(-2.0, 2.0)), min_size=n, max_size=n),
                min_size=1,
                max_size=30,
            ),
        )
    )
)
def test_compiled_sigma_delta_with_auto_zero_and_hysteresis_matches_the_numpy_encoder(case):
    """The encoder options (encoding.SigmaDeltaEncoder rest_samples, hysteresis,
    smooth_samples, quiet_samples/_hysteresis/_smooth_samples/_needs_zero) on the compiled
    path: the same counts, offsets, rest and quiet counts and moving averages as the
    reference, per sample (non-finite values included)."""
    scale, rest, tau, hyst, smooth, quiet, hq, qs, qz, samples = case
    opts = (rest, tau, hyst, smooth, quiet, hq, qs, qz)
    ref = SigmaDeltaEncoder(len(scale), np.array(scale), *opts)
    fast = CompiledSigmaDelta(len(scale), np.array(scale), *opts)
    for v in samples:
        a, b = ref.encode(np.array(v)), fast.encode(np.array(v))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(ref.offset, fast.offset)
        np.testing.assert_array_equal(ref.smoothed, fast.smoothed)
        assert ref.n_rest == fast.n_rest
        assert ref.n_quiet == fast.n_quiet
        np.testing.assert_array_equal(ref.quiet_avg, fast.quiet_avg)
        assert ref.n_skipped_nonfinite == fast.n_skipped_nonfinite
    np.testing.assert_array_equal(ref.sent, fast.sent)


def test_compiled_sigma_delta_checks_its_input_like_the_reference():
    fast = CompiledSigmaDelta(3, 10.0)
    with pytest.raises(ValueError, match=r"values have shape \(2,\), expected \(3,\)"):
        fast.encode(np.zeros(2))
    ch, co = fast.encode([0.1, 0.2, np.float32(0.3)])  # lists and other dtypes convert
    assert ch.tolist() == [0, 1, 2] and co.tolist() == [1, 2, 3]
    ch, co = fast.encode((np.arange(6.0) / 10)[::2])  # a strided view: 0, 0.2, 0.4
    assert ch.tolist() == [0, 2] and co.tolist() == [-1, 1]
    fast.reset()  # the compiled step shares the encoder's arrays
    assert fast.encode(np.array([0.1, 0.0, 0.0]))[1].tolist() == [1]


names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
ints64 = st.integers(-(2**62), 2**62)


@st.composite
def batches(draw):
    n = draw(st.integers(0, 40))
    ch = draw(st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n))
    co = draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=n, max_size=n))
    dt = draw(st.none() | st.lists(st.integers(0, MAX_DT_NS), min_size=n, max_size=n).map(np.array))
    return EventBatch(
        draw(names),
        draw(st.integers(0, 2**63 - 1)),
        draw(ints64),
        draw(names),
        draw(st.floats(1e-300, 1e300)),
        np.array(ch, np.int32),
        np.array(co, np.int32),
        draw(ints64),
        None if dt is None else dt.astype(np.int64),
    )


@settings(max_examples=500, deadline=None)
@given(batches())
def test_compiled_event_batch_writer_is_byte_identical(batch):
    assert pack_event_batch(batch) == encode(batch)


@pytest.mark.parametrize("n", [63, 64, 16383, 16384])  # bin8 / bin16 / bin32 boundaries
def test_compiled_writer_at_msgpack_length_boundaries(n):
    rng = np.random.default_rng(n)
    b = EventBatch(
        "s" * 256, 2**40, -(2**40), "i" * 31, 0.25,
        rng.integers(0, 1000, n).astype(np.int32), rng.integers(-9, 9, n).astype(np.int32),
        -5, rng.integers(0, 10**6, n).astype(np.int64),
    )  # fmt: skip
    assert pack_event_batch(b) == encode(b)
    b.input = "é" * 20  # 40 bytes of UTF-8: str8, not fixstr
    assert pack_event_batch(b) == encode(b)


def _plain(**over):
    b = EventBatch("s", 1, 5, "i", 2.0, np.array([1, 2], np.int32), np.array([1, -1], np.int32))
    for k, v in over.items():
        setattr(b, k, v)
    return b


@pytest.mark.parametrize(
    "over, reference_raises",
    [
        ({"channels": np.array([1, -2], np.int32)}, True),
        ({"dt_ns": np.array([0, MAX_DT_NS + 1], np.int64)}, True),
        ({"scale": float("nan")}, True),
        ({"sensor": ""}, True),
        ({"t_ns": 2**62 + 1}, True),
        ({"seq": -1}, True),
        ({"counts": np.array([1], np.int32)}, True),
        ({"scale": np.float64(2.0)}, False),  # not plain: the reference path encodes it
        ({"channels": np.array([1, 2], np.int64)}, False),
        ({"channels": np.array([1, 0, 2], np.int32)[::2]}, False),
        ({"seq": np.int64(3)}, False),
    ],
)
def test_compiled_writer_leaves_anything_unusual_to_the_reference(over, reference_raises):
    b = _plain(**over)
    assert pack_event_batch(b) is None
    if reference_raises:
        with pytest.raises(ProtocolError):
            encode(b)
    else:
        assert decode(encode(b)) == b


# --------------------------------------------------------------------------- a whole run


class _Cfg(DriverConfig):
    default_groups = {"a": {"scale": 100.0}, "b": {"scale": 7.0}}
    name: str = "fast"


class _Messages:
    """A sender without ``send_payload`` (``run_driver(sender=...)``): the reference path."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def send(self, msg) -> bool:
        self.payloads.append(encode(msg))
        return True


def _feed(runner: Runner, t0_ns: int) -> None:
    rng = np.random.default_rng(7)
    for k in range(400):
        a = rng.normal(0, 1, 3)
        if k % 5 == 0:
            a[1] = np.nan
        runner.handle(Sample("a", t0_ns + k * 250_000, a))
        if k % 3 == 0:
            runner.handle(Sample("b", t0_ns + k * 250_000 + 1, rng.normal(0, 50, 2)))
    runner.flush_all()


@pytest.mark.parametrize("latency_ms, max_events", [(0.0, 65536), (60_000.0, 7)])
def test_a_driver_sends_the_reference_bytes_through_a_real_publisher(
    tmp_path, latency_ms, max_events
):
    # batches close on data time and size only (a wall-clock flush would differ per run)
    cfg = _Cfg(
        max_batch_latency_ms=latency_ms, max_batch_events=max_events, heartbeat_period_s=3600.0
    )
    t0_ns = time.monotonic_ns()
    reference = _Messages()
    ref_runner = Runner(cfg, lambda c, x: iter(()), reference, StopSignal())
    ep = Endpoint.ipc(tmp_path, "fast")
    with Publisher(ep) as pub, Subscriber(ep, ["sensor/fast"], hwm=100_000) as sub:
        assert pub.wait_for_subscribers(1, 10.0)
        runner = Runner(cfg, lambda c, x: iter(()), pub, StopSignal())
        runner.epoch_offset_ns = ref_runner.epoch_offset_ns
        for s in (*runner.streams.values(), *ref_runner.streams.values()):
            s.epoch_offset_ns = 12345
        _feed(runner, t0_ns)
        _feed(ref_runner, t0_ns)
        got: list[bytes] = []
        deadline = time.monotonic() + 20.0
        want = [p for p in reference.payloads if decode(p).__class__ is EventBatch]
        while len(got) < len(want) and time.monotonic() < deadline:
            for frames in sub.recv_frames(0.5):
                if decode(frames[1]).__class__ is EventBatch:
                    got.append(frames[1])
    assert len(want) > 100 and got == want


def test_a_group_config_sets_the_encoder_options():
    """``groups.<g>.zero_rest_samples`` / ``zero_tau_samples`` reach the group's encoder: an
    offset under half a quantum is learnt at rest without a count, then removed in motion;
    ``hysteresis`` too."""
    cfg = _Cfg(
        groups={
            "a": {"scale": 1.0, "zero_rest_samples": 5, "zero_tau_samples": 2.0},
            "b": {
                "hysteresis": 0.25,
                "smooth_samples": 4.0,
                "quiet_samples": 3,
                "quiet_hysteresis": 0.4,
                "quiet_smooth_samples": 8.0,
                "quiet_needs_zero": True,
            },
        },
        max_batch_latency_ms=0.0,
        heartbeat_period_s=3600.0,
    )
    sent = _Messages()
    runner = Runner(cfg, lambda c, x: iter(()), sent, StopSignal())
    for k in range(40):  # at rest: a constant 0.3 quanta on every channel
        runner.handle(Sample("a", 1_000 + k, np.full(3, 0.3)))
    enc = runner.streams["a"].encoder
    assert enc.rest_samples == 5 and np.allclose(enc.offset, 0.3)
    assert not [p for p in sent.payloads if decode(p).__class__ is EventBatch]
    runner.handle(Sample("a", 2_000, np.array([1.1, 0.3, 0.3])))  # 0.8 of motion on x
    batches = [decode(p) for p in sent.payloads if decode(p).__class__ is EventBatch]
    assert [b.channels.tolist() for b in batches] == [[0]] and batches[0].counts.tolist() == [1]
    runner.handle(Sample("b", 3_000, np.array([0.0])))
    assert runner.streams["b"].encoder.threshold == 0.75
    assert runner.streams["b"].encoder.smooth_gain == 0.25
    enc_b = runner.streams["b"].encoder
    assert (enc_b.quiet_samples, enc_b.quiet_hysteresis, enc_b.quiet_gain) == (3, 0.4, 0.125)
    assert enc_b.quiet_needs_zero
    with pytest.raises(ValidationError, match="smooth_samples"):
        _Cfg(groups={"a": {"smooth_samples": 0.5}})
    with pytest.raises(ValidationError, match="zero_tau_samples"):
        _Cfg(groups={"a": {"zero_tau_samples": 0.5}})
    with pytest.raises(ValidationError, match="quiet_hysteresis"):
        _Cfg(groups={"a": {"quiet_hysteresis": 1.0}})


def test_a_stream_sends_packed_payloads_and_falls_back_to_the_batch():
    """A stream with ``send_payload`` sends the payload the reference encoder would write,
    with the stream's fields as they are now; a batch the compiled writer does not take
    (an epoch offset outside the wire's bounds) goes to ``send`` as an EventBatch, for the
    reference encoder to name the field."""
    payloads: list[bytes] = []
    batches: list[EventBatch] = []
    s = GroupStream("imu", "gyro", "g_in", 8.0, 0, 1000, 7, send_payload=payloads.append)
    ch, co = np.array([1, 4], np.int32), np.array([2, -3], np.int32)
    s.add(100, ch, co, None, 0, batches.append)
    s.epoch_offset_ns = 99
    s.add(200, ch, co, np.array([0, 5], np.int64), 0, batches.append)
    assert batches == []
    assert payloads == [
        encode(EventBatch("imu", 0, 100, "g_in", 8.0, ch, co, 7)),
        encode(EventBatch("imu", 1, 200, "g_in", 8.0, ch, co, 99, np.array([0, 5], np.int64))),
    ]
    s.epoch_offset_ns = 2**63
    s.add(300, ch, co, None, 0, batches.append)
    assert len(payloads) == 2 and [b.seq for b in batches] == [2]
    with pytest.raises(ProtocolError, match="epoch_offset_ns"):
        encode(batches[0])
    assert s.n_batches == 3 and s.n_events == 6 and s.totals.tolist() == [0, 6, 0, 0, -9]
