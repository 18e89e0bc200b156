"""Wire protocol: exact round trips, strict rejection with reasons and field paths, a
100k-payload fuzz of the decoder, and coalescing that preserves integrated values."""

from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikefuse.errors import ProtocolError
from spikefuse.protocol import (
    MAX_DT_NS,
    PROTOCOL_VERSION,
    Decoder,
    Encoder,
    EventBatch,
    Heartbeat,
    MotorCommand,
    Status,
    coalesce,
    coalesce_many,
    decode,
    encode,
    stream_of,
    topic_of,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
TIME = st.integers(-(2**62), 2**62)
SEQ = st.integers(0, 2**63 - 1)
NAME = st.text(min_size=1, max_size=40)


def _batch(n: int = 4, seq: int = 7, dt: bool = True) -> EventBatch:
    rng = np.random.default_rng(n)
    return EventBatch(
        sensor="imu0",
        seq=seq,
        t_ns=1_234_567_890_123,
        input="gyro",
        scale=128.0,
        channels=rng.integers(0, 6, n).astype(np.int32),
        counts=rng.integers(-5, 6, n).astype(np.int32),
        epoch_offset_ns=1_700_000_000_000_000_000,
        dt_ns=np.arange(n, dtype=np.int64) * 1000 if dt else None,
    )


def _samples() -> list:
    return [
        _batch(),
        _batch(0, dt=False),
        _batch(1024, dt=False),
        Heartbeat("imu0", 3, -5, "degraded", "i2c retry"),
        Heartbeat("cam", 0, 0, "failed"),
        MotorCommand("wheels", 9, 100, 90, np.array([0.5, -1.25, 3e300])),
        MotorCommand("arm", 0, 1, 1, np.zeros(0)),
        Status("engine", 2, 77, {"n_events": 12, "load": 0.25, "names": ["a", "b"], "x": None}),
        Heartbeat("imu0", 9, 7, "ok", "", {"gyro": np.array([3, -1, 0], np.int64)}),
    ]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_round_trip_every_kind(msg):
    payload = encode(msg)
    back = decode(payload)
    assert type(back) is type(msg)
    assert back == msg
    assert Encoder().encode(msg) == payload  # reusable packer gives the same bytes
    assert encode(back) == payload


def test_arrays_are_zero_copy_little_endian():
    b = _batch(16)
    back = decode(encode(b))
    assert back.channels.dtype == np.dtype("<i4") and back.counts.dtype == np.dtype("<i4")
    assert back.dt_ns.dtype == np.dtype("<i8")
    assert not back.channels.flags.writeable  # a view of the payload, not a copy
    assert back.counts.base is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sensor=NAME,
    inp=NAME,
    seq=SEQ,
    t_ns=TIME,
    epoch=TIME,
    scale=st.floats(min_value=1e-300, max_value=1e300),
    data=st.data(),
)
def test_event_batch_round_trip_property(sensor, inp, seq, t_ns, epoch, scale, data):
    n = data.draw(st.integers(0, 50))
    i32 = st.integers(-(2**31), 2**31 - 1)
    channels = np.array(
        data.draw(st.lists(st.integers(0, 2**31 - 1), min_size=n, max_size=n)), np.int32
    )
    counts = np.array(data.draw(st.lists(i32, min_size=n, max_size=n)), np.int32)
    dt = None
    if data.draw(st.booleans()):
        dt = np.array(
            data.draw(st.lists(st.integers(0, MAX_DT_NS), min_size=n, max_size=n)), np.int64
        )
    msg = EventBatch(sensor, seq, t_ns, inp, scale, channels, counts, epoch, dt)
    assert decode(encode(msg)) == msg


METRIC = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    source=NAME,
    seq=SEQ,
    t_ns=TIME,
    metrics=st.dictionaries(st.text(max_size=8), METRIC, max_size=6),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=16),
    state=st.sampled_from(["ok", "degraded", "failed", "ended"]),
    detail=st.text(max_size=100),
)
def test_other_kinds_round_trip_property(source, seq, t_ns, metrics, values, state, detail):
    for msg in (
        Status(source, seq, t_ns, metrics),
        MotorCommand(source, seq, t_ns, t_ns // 2, np.array(values, np.float64)),
        Heartbeat(source, seq, t_ns, state, detail),
    ):
        assert decode(encode(msg)) == msg


def test_topics_and_streams():
    b = _batch()
    assert topic_of(b) == b"sensor/imu0"
    assert topic_of(Heartbeat("imu0", 0, 0, "ok")) == b"sensor/imu0"
    assert topic_of(MotorCommand("wheels", 0, 0, 0, np.zeros(2))) == b"motor/wheels"
    assert topic_of(Status("engine", 0, 0, {})) == b"status/engine"
    assert stream_of(b) == "sensor/imu0/gyro"
    assert stream_of(Heartbeat("imu0", 0, 0, "ok")) == "heartbeat/imu0"


# --------------------------------------------------------------------------- rejections


def _raw(*fields) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


def _eb_fields(**over):
    f = dict(
        sensor="imu",
        seq=1,
        t_ns=5,
        epoch=0,
        input="gyro",
        scale=10.0,
        channels=np.array([0, 1, 2, 3], "<i4").tobytes(),
        counts=np.array([1, 1, 1, 1], "<i4").tobytes(),
        dt=None,
    )
    f.update(over)
    return list(f.values())


@pytest.mark.parametrize(
    "payload, reason, text",
    [
        (b"", "empty", "empty"),
        (encode(_batch())[:-5], "truncated", "truncated"),
        (b"\xc1", "malformed", "msgpack"),
        (encode(_batch()) + b"\x00", "malformed", "msgpack"),
        (_raw(PROTOCOL_VERSION + 1, 1, *_eb_fields()), "version_newer", "newer"),
        (_raw(0, 1, *_eb_fields()), "version_unknown", "version 0"),
        (_raw(PROTOCOL_VERSION, 99), "unknown_kind", "kind 99"),
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields()[:-2]), "truncated", "expected 9 fields"),
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields(), 1), "bad_arity", "expected 9 fields"),
        (msgpack.packb({"kind": 1}), "bad_envelope", "expected [version"),
        (
            _raw(PROTOCOL_VERSION, 1, *_eb_fields(counts=np.ones(3, "<i4").tobytes())),
            "length_mismatch",
            "EventBatch.counts: length 3 != channels length 4",
        ),
        (
            _raw(PROTOCOL_VERSION, 1, *_eb_fields(dt=np.ones(2, "<i8").tobytes())),
            "length_mismatch",
            "EventBatch.dt_ns: length 2 != channels length 4",
        ),
        (
            _raw(PROTOCOL_VERSION, 1, *_eb_fields(counts=b"\x00" * 15)),
            "truncated",
            "EventBatch.counts: 15 bytes",
        ),
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields(seq=-1)), "bad_field", "EventBatch.seq"),
        (
            _raw(PROTOCOL_VERSION, 1, *_eb_fields(seq="1")),
            "bad_field",
            "EventBatch.seq: expected int",
        ),
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields(scale=0.0)), "bad_field", "EventBatch.scale"),
        (
            _raw(PROTOCOL_VERSION, 1, *_eb_fields(scale=float("nan"))),
            "bad_field",
            "EventBatch.scale",
        ),
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields(sensor="")), "bad_field", "EventBatch.sensor"),
        (
            _raw(
                PROTOCOL_VERSION, 1, *_eb_fields(channels=np.array([0, -1, 2, 3], "<i4").tobytes())
            ),
            "bad_field",
            "EventBatch.channels: negative",
        ),
        # times: every sum of a time, an offset and dt_ns must stay within int64
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields(t_ns=2**62 + 1)), "bad_field", "EventBatch.t_ns"),
        (_raw(PROTOCOL_VERSION, 1, *_eb_fields(t_ns=-(2**63))), "bad_field", "EventBatch.t_ns"),
        (
            _raw(PROTOCOL_VERSION, 1, *_eb_fields(epoch=2**63 - 1)),
            "bad_field",
            "EventBatch.epoch_offset_ns",
        ),
        (
            _raw(
                PROTOCOL_VERSION,
                1,
                *_eb_fields(t_ns=1, dt=np.array([0, 0, 0, 2**63 - 1], "<i8").tobytes()),
            ),
            "bad_field",
            "EventBatch.dt_ns: offset outside",
        ),
        (
            _raw(
                PROTOCOL_VERSION,
                1,
                *_eb_fields(dt=np.array([MAX_DT_NS + 1, 0, 0, 0], "<i8").tobytes()),
            ),
            "bad_field",
            "EventBatch.dt_ns: offset outside",
        ),
        (_raw(PROTOCOL_VERSION, 2, "imu", 1, 2**63 - 1, "ok", "", None), "bad_field", "t_ns"),
        (
            _raw(PROTOCOL_VERSION, 3, "m", 1, 2, 2**63 - 1, np.zeros(1).tobytes()),
            "bad_field",
            "MotorCommand.cause_t_ns",
        ),
        (_raw(PROTOCOL_VERSION, 4, "e", 1, -(2**63), {}), "bad_field", "Status.t_ns"),
        (_raw(PROTOCOL_VERSION, 2, "imu", 1, 2, "great", "", None), "bad_field", "Heartbeat.state"),
        (_raw(PROTOCOL_VERSION, 2, "imu", 1, 2, "ok", ""), "truncated", "Heartbeat"),
        (
            _raw(PROTOCOL_VERSION, 2, "imu", 1, 2, "ok", "", {"gyro": b"\x01\x02\x03"}),
            "truncated",
            "Heartbeat.totals.gyro",
        ),
        (_raw(PROTOCOL_VERSION, 2, "imu", 1, 2, "ok", "", [1, 2]), "bad_field", "Heartbeat.totals"),
        (
            _raw(PROTOCOL_VERSION, 3, "m", 1, 2, 3, np.array([np.inf]).tobytes()),
            "bad_field",
            "MotorCommand.values: non-finite",
        ),
        (_raw(PROTOCOL_VERSION, 4, "e", 1, 2, [1]), "bad_field", "Status.metrics: expected map"),
        (
            msgpack.packb([PROTOCOL_VERSION, 4, "e", 1, 2, {"a": msgpack.ExtType(3, b"x")}]),
            "bad_field",
            "Status.metrics.a",
        ),
    ],
)
def test_rejections_name_reason_and_field(payload, reason, text):
    with pytest.raises(ProtocolError) as err:
        decode(payload)
    assert err.value.reason == reason
    assert text in str(err.value)
    dec = Decoder()
    assert dec.decode(payload) is None
    assert dec.rejected == {reason: 1} and dec.n_ok == 0


def test_hostile_length_fields_do_not_allocate():
    # bin32 / array32 / map32 headers claiming 4 GiB of data in a tiny payload
    for header in (b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff"):
        payload = b"\x9b\x01\x01" + header + b"\x00" * 16
        with pytest.raises(ProtocolError) as err:
            decode(payload)
        assert err.value.reason in ("truncated", "malformed")


def test_encode_refuses_invalid_messages():
    bad = [
        (EventBatch("s", 0, 0, "i", 1.0, np.zeros(3, np.int32), np.zeros(2, np.int32)), "length 2"),
        (EventBatch("s", 0, 0, "i", 1.0, np.array([2**40]), np.array([1])), "int32"),
        (EventBatch("s", 0, 0, "i", 1.0, np.array([0.5]), np.array([1])), "integers"),
        (EventBatch("s", -1, 0, "i", 1.0, [0], [1]), "EventBatch.seq"),
        (EventBatch("s", 0, 0, "i", -2.0, [0], [1]), "EventBatch.scale"),
        (Heartbeat("s", 0, 0, "fine"), "Heartbeat.state"),
        (MotorCommand("m", 0, 0, 0, np.array([np.nan])), "non-finite"),
        (Status("e", 0, 0, {"x": object()}), "cannot encode"),
    ]
    for msg, text in bad:
        with pytest.raises(ProtocolError) as err:
            encode(msg)
        assert err.value.reason == "encode" and text in str(err.value)
    enc = Encoder()  # a failed encode leaves the reusable packer usable
    with pytest.raises(ProtocolError):
        enc.encode(Status("e", 0, 0, {"x": object()}))
    assert decode(enc.encode(_batch())) == _batch()


def test_decoder_log_is_rate_limited(caplog):
    dec = Decoder("t", log_interval_s=60.0)
    with caplog.at_level("WARNING", logger="spikefuse.protocol"):
        for _ in range(50):
            assert dec.decode(b"\xc1") is None
    assert dec.rejected == {"malformed": 50}
    assert len(caplog.records) == 1 and "[malformed]" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------- fuzzing


def _check_fuzz_result(dec: Decoder, payload: bytes) -> None:
    msg = dec.decode(payload)
    if msg is not None:  # whatever is accepted is a valid message that re-encodes
        assert decode(encode(msg)) == msg


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_decoder_survives_random_bytes(payload):
    dec = Decoder()
    _check_fuzz_result(dec, payload)
    assert dec.n_ok + dec.n_rejected == 1


GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.lists(st.integers(-3, 3) | st.text(max_size=2), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**64 - 1) | st.none(), max_size=3),
)


def _valid_fields(kind: int) -> list:
    """The field list of a valid message of ``kind`` (as it is on the wire)."""
    return msgpack.unpackb(encode(_samples()[{1: 0, 2: 3, 3: 5, 4: 7}[kind]]), raw=False)[2:]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.integers(0, 5),
    version=st.sampled_from([PROTOCOL_VERSION] * 6 + [0, 2, -1, "1"]),
    n_extra=st.integers(-2, 1),
    data=st.data(),
)
def test_decoder_survives_structured_garbage(kind, version, n_extra, data):
    """Valid msgpack whose envelope/fields are replaced by garbage at random positions."""
    fields = _valid_fields(kind) if 1 <= kind <= 4 else []
    positions = data.draw(st.sets(st.integers(0, max(len(fields) - 1, 0)), max_size=3))
    for i in positions:
        if i < len(fields):
            fields[i] = data.draw(GARBAGE)
    if n_extra < 0:
        fields = fields[: len(fields) + n_extra]
    elif n_extra:
        fields.append(data.draw(GARBAGE))
    payload = msgpack.packb([version, kind, *fields], use_bin_type=True)
    dec = Decoder()
    _check_fuzz_result(dec, payload)
    assert dec.n_ok + dec.n_rejected == 1
    if not positions and not n_extra and version == PROTOCOL_VERSION and 1 <= kind <= 4:
        assert dec.n_ok == 1  # untouched messages still decode


def _mutate(rng: random.Random, data: bytearray, seeds: list[bytes]) -> bytes:
    op = rng.randrange(7)
    n = len(data)
    if op == 0 and n:  # flip bits
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif op == 1 and n:  # overwrite bytes with interesting values
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(n)] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0xC1, 0xDD, 0xC6, 0xCF))
    elif op == 2:  # truncate
        del data[rng.randrange(n + 1) :]
    elif op == 3:  # insert random bytes
        pos = rng.randrange(n + 1)
        data[pos:pos] = rng.randbytes(rng.randint(1, 8))
    elif op == 4 and n:  # delete a slice
        a = rng.randrange(n)
        del data[a : a + rng.randint(1, 8)]
    elif op == 5:  # splice with another seed
        other = rng.choice(seeds)
        cut = rng.randrange(len(other) + 1)
        data = data[: rng.randrange(n + 1)] + other[cut:]
    else:  # corrupt a length-like 32-bit field
        if n >= 5:
            pos = rng.randrange(n - 4)
            data[pos : pos + 4] = rng.choice(
                (b"\xff\xff\xff\xff", b"\x00\x00\x00\x10", b"\x7f\xff\xff\xff")
            )
    return bytes(data)


def test_decoder_survives_100k_mutated_payloads():
    rng = random.Random(20240611)
    seeds = [encode(m) for m in _samples()] + [encode(_batch(n)) for n in (1, 2, 7, 33)]
    dec = Decoder(log_interval_s=3600.0)
    n_total = 100_000
    for i in range(n_total):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            data = bytearray(_mutate(rng, data, seeds))
        if i % 10 == 0:
            _check_fuzz_result(dec, bytes(data))
        else:
            dec.decode(bytes(data))
    assert dec.n_ok + dec.n_rejected == n_total
    assert dec.n_rejected > n_total // 2  # the mutations mostly break things ...
    assert len(dec.rejected) >= 5  # ... in many distinct, counted ways


# --------------------------------------------------------------------------- coalescing


def _integrate(batches, n_channels):
    acc = np.zeros(n_channels, np.int64)
    for b in batches:
        np.add.at(acc, np.asarray(b.channels, np.int64), np.asarray(b.counts, np.int64))
    return acc


def test_coalesce_preserves_sums_and_takes_latest_header():
    rng = np.random.default_rng(3)
    batches = []
    for i in range(50):
        n = int(rng.integers(0, 30))
        batches.append(
            EventBatch(
                "imu", i, 1000 + i, "gyro", 64.0,
                rng.integers(0, 9, n).astype(np.int32),
                rng.integers(-3, 4, n).astype(np.int32),
                epoch_offset_ns=i,
                dt_ns=np.zeros(n, np.int64),
            )
        )  # fmt: skip
    merged = coalesce_many(batches)
    assert np.array_equal(_integrate([merged], 9), _integrate(batches, 9))
    assert merged.seq == 0 and merged.t_ns == 1049 and merged.epoch_offset_ns == 49
    assert merged.dt_ns is None and merged.channels.dtype == np.int32
    assert np.all(merged.counts != 0) and len(np.unique(merged.channels)) == len(merged.channels)
    pair = coalesce(batches[0], batches[1])
    assert np.array_equal(_integrate([pair], 9), _integrate(batches[:2], 9))
    assert decode(encode(merged)) == merged


def test_coalesce_splits_sums_beyond_int32():
    big = np.array([2**31 - 1], np.int32)
    a = EventBatch("s", 0, 0, "i", 1.0, np.array([3], np.int32), big)
    merged = coalesce_many(
        [a, a, a, EventBatch("s", 1, 1, "i", 1.0, np.array([3, 1]), np.array([5, -2]))]
    )
    assert np.array_equal(_integrate([merged], 4), np.array([0, -2, 0, 3 * (2**31 - 1) + 5]))
    neg = EventBatch("s", 0, 0, "i", 1.0, np.array([0], np.int32), np.array([-(2**31)], np.int32))
    merged = coalesce(neg, neg)
    assert _integrate([merged], 1)[0] == -(2**32)


def test_coalesce_refuses_different_streams():
    a = _batch()
    for other in (
        EventBatch("other", 8, 0, "gyro", 128.0, np.zeros(1), np.ones(1)),
        EventBatch("imu0", 8, 0, "accel", 128.0, np.zeros(1), np.ones(1)),
        EventBatch("imu0", 8, 0, "gyro", 64.0, np.zeros(1), np.ones(1)),
    ):
        with pytest.raises(ValueError, match="different streams"):
            coalesce(a, other)


@pytest.mark.parametrize(
    "msg, path",
    [
        (
            EventBatch("s", 0, 2**63 - 1, "x", 1.0, np.zeros(1, np.int32), np.ones(1, np.int32)),
            "t_ns",
        ),
        (
            EventBatch(
                "s", 0, 1, "x", 1.0, np.zeros(1, np.int32), np.ones(1, np.int32), 0, [2**63 - 1]
            ),
            "dt_ns",
        ),
        (MotorCommand("m", 0, 1, 2**62 + 1, np.zeros(1)), "cause_t_ns"),
    ],
)
def test_encode_refuses_times_the_decoder_would_reject(msg, path):
    with pytest.raises(ProtocolError) as err:
        encode(msg)
    assert err.value.reason == "encode" and path in str(err.value)


def test_payloads_cut_anywhere_count_as_truncated():
    """Cut inside the first bytes too (the array header then claims more items than the
    payload has bytes): ``truncated``, as the rejection table says."""
    for msg in _samples():
        payload = encode(msg)
        cuts = set(range(1, min(len(payload), 64))) | set(
            range(max(1, len(payload) - 64), len(payload))
        )
        for k in sorted(cuts):
            with pytest.raises(ProtocolError) as err:
                decode(payload[:k])
            assert err.value.reason == "truncated", (k, msg, str(err.value))
