"""The event-camera driver: the real DVXplorer AEDAT4 recording (events and IMU) and EVT3
files (a spec-conformant encoder here, and a file written by expelliarmus), republished as
EventBatches with channel = y*W + x, count = +-1, exact per-event times."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import aedat
import numpy as np
import pytest
from _drivers_util import (
    STOP_WITHIN_S,
    Received,
    collect,
    drain,
    run_in_thread,
    start_driver,
    stop_driver,
)

from spikefuse.drivers.event_camera import EVENT_CAMERA
from spikefuse.drivers.evt3 import TIME_LOW, Evt3Decoder, iter_events, read_header
from spikefuse.errors import ConfigError, LogFileError
from spikefuse.sdk import load_driver_config
from spikefuse.transport.subscriber import Subscriber

DATA = Path(__file__).resolve().parent / "data" / "event_camera"
G0 = 9.80665


def _cfg(tmp_path: Path, kind: str, path: Path, *overrides: str):
    return load_driver_config(
        EVENT_CAMERA,
        None,
        [
            f"endpoint=ipc://{tmp_path}/ev.sock",
            "wait_for_subscribers=1",
            f"source.type={kind}",
            f"source.path={path}",
            *overrides,
        ],
    )


def _event_rows(got: Received, width: int) -> np.ndarray:
    """(t_ns, x, y, on) of every received event, as the receiver reconstructs them."""
    rows = []
    for b in got.of("events"):
        dt = np.zeros(b.n_events, np.int64) if b.dt_ns is None else b.dt_ns
        ch = b.channels.astype(np.int64)
        rows.append(np.stack([b.t_ns + dt, ch % width, ch // width, (b.counts > 0)], axis=1))
    return np.concatenate(rows)


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


# --------------------------------------------------------------------------- AEDAT4


def test_dvxplorer_aedat4_events_and_imu_are_republished_exactly(tmp_path, shared_data):
    path = shared_data / "dvxplorer" / "sample.aedat4"
    got, _ = run_in_thread(EVENT_CAMERA, _cfg(tmp_path, "aedat4", path, "source.realtime=false"))
    # independent read of the same file
    events, imus = [], []
    for packet in aedat.Decoder(str(path)):
        if "events" in packet:
            events.append(packet["events"])
        elif "imus" in packet:
            imus.append(packet["imus"])
    ev = np.concatenate(events)
    imu = np.concatenate(imus)
    assert ev.size == 111_954 and imu.size == 475
    rows = _event_rows(got, 320)
    assert rows.shape[0] == ev.size  # nothing lost
    ref = np.stack(
        [ev["t"].astype(np.int64) * 1000, ev["x"], ev["y"], ev["on"].astype(np.int64)], axis=1
    )
    shift = rows[:, 0].min() - ref[:, 0].min()  # replay anchors time on the monotonic clock
    rows[:, 0] -= shift
    np.testing.assert_array_equal(_sorted(rows), _sorted(ref))
    for b in got.of("events"):
        assert b.scale == 5.0 and set(np.unique(b.counts).tolist()) <= {-1, 1}
        assert b.channels.max() < 320 * 240
        assert b.dt_ns is None or b.dt_ns.max() < 1_000_000  # a batch spans < 1 ms
    # IMU in SI units: the receiver's integral is the last sample within half a quantum
    last = imu[np.argmax(imu["t"])]
    gyro = np.array([last[f"gyroscope_{a}"] for a in "xyz"], float) * math.pi / 180
    accel = np.array([last[f"accelerometer_{a}"] for a in "xyz"], float) * G0
    assert np.all(np.abs(got.sums("gyro", 3) / 500 - gyro) <= 0.5 / 500 + 1e-9)
    assert np.all(np.abs(got.sums("accel", 3) / 50 - accel) <= 0.5 / 50 + 1e-9)
    assert 9.0 < np.linalg.norm(got.sums("accel", 3) / 50) < 11.5  # ~1.08 g in the file -> m/s²
    # IMU batches are interleaved in time order with the events (one merged timeline)
    status = got.statuses[-1].metrics["groups"]
    assert status["gyro"]["n_items"] == 475 and status["accel"]["n_items"] == 475


def test_aedat4_process_replays_in_real_time_and_stops_on_sigterm(tmp_path, shared_data):
    path = shared_data / "dvxplorer" / "sample.aedat4"
    ep = f"ipc://{tmp_path}/ev.sock"
    # 0.59 s of data at 0.1 x real time lasts ~6 s: stopped by SIGTERM half way
    proc = start_driver(
        "event_camera",
        None,
        f"endpoint={ep}",
        "wait_for_subscribers=1",
        "source.type=aedat4",
        f"source.path={path}",
        "source.speed=0.1",
        "heartbeat_period_s=0.25",
    )
    got = Received()
    with Subscriber(ep) as sub:
        try:
            assert collect(sub, got, lambda r: len(r.heartbeats) >= 5, 30.0)
        finally:
            rc, took_s, err = stop_driver(proc, signal.SIGTERM)
        drain(sub, got)
    assert rc == 0, err
    assert took_s < STOP_WITHIN_S
    n = sum(b.n_events for b in got.of("events"))
    assert 1000 < n < 111_954  # paced: only part of the file went out before SIGTERM
    assert got.heartbeats[-1].detail == "stopped by signal 15"


def test_event_camera_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="source"):
        load_driver_config(EVENT_CAMERA, None, [])
    cfg = _cfg(tmp_path, "aedat4", tmp_path / "missing.aedat4", "wait_for_subscribers=0")
    with pytest.raises(ConfigError, match="recording not found"):
        run_in_thread(EVENT_CAMERA, cfg)


# --------------------------------------------------------------------------- EVT3

HEADER = b"% evt 3.0\n% format EVT3;height=480;width=640\n% end\n"


def encode_evt3(ev: np.ndarray) -> bytes:
    """A spec-conformant EVT 3.0 writer (TIME_HIGH whenever the high bits change; runs of
    events with equal t, y, p become VECT_BASE_X + VECT_12/VECT_8 words)."""
    words: list[int] = []
    cur = {"hi": None, "lo": None, "y": None}
    i, n = 0, ev.size
    while i < n:
        t, y, p = int(ev["t"][i]) % (1 << 24), int(ev["y"][i]), int(ev["p"][i])
        if t >> 12 != cur["hi"]:
            words.append(0x8000 | (t >> 12))
            cur["hi"] = t >> 12
        if t & 0xFFF != cur["lo"]:
            words.append(0x6000 | (t & 0xFFF))
            cur["lo"] = t & 0xFFF
        if y != cur["y"]:
            words.append(y)
            cur["y"] = y
        j = i
        while j + 1 < n and (ev["t"][j + 1], ev["y"][j + 1], ev["p"][j + 1]) == (ev["t"][i], y, p):
            j += 1
        xs = ev["x"][i : j + 1].astype(int)
        if xs.size == 1:
            words.append(0x2000 | (p << 11) | int(xs[0]))
        else:
            base = int(xs[0])
            words.append(0x3000 | (p << 11) | base)
            span = xs - base
            pos = 0
            while pos <= span.max():
                width = 12 if span.max() - pos >= 8 else 8
                mask = sum(1 << int(s - pos) for s in span if pos <= s < pos + width)
                words.append((0x4000 if width == 12 else 0x5000) | mask)
                pos += width
        i = j + 1
    return np.array(words, "<u2").tobytes()


def _random_events(rng: np.random.Generator, n: int, t_span_us: int) -> np.ndarray:
    ev = np.zeros(n, [("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    ev["t"] = np.sort(rng.integers(0, t_span_us, n))
    ev["x"] = rng.integers(0, 640, n)
    ev["y"] = rng.integers(0, 480, n)
    ev["p"] = rng.integers(0, 2, n)
    # bursts: a row segment firing at once (vector words)
    ev["t"][100:140] = ev["t"][100]
    ev["y"][100:140] = 7
    ev["p"][100:140] = 1
    ev["x"][100:140] = np.sort(rng.choice(np.arange(200, 260), 40, replace=False))
    return np.sort(ev, order=["t", "y", "p", "x"])


def test_evt3_decoder_hand_assembled_words():
    words = [
        0x8FFF,  # TIME_HIGH 4095
        0x6005,  # TIME_LOW 5 -> t = 4095 * 4096 + 5
        0x0011,  # ADDR_Y 17
        0x2803,  # ADDR_X x=3, ON
        0x3000 | 100,  # VECT_BASE_X 100, OFF
        0x4000 | 0b100000000101,  # VECT_12: x = 100, 102, 111
        0x5000 | 0b10000001,  # VECT_8: x = 112, 119
        0xA001,  # EXT_TRIGGER (counted, no event)
        0x8000,  # TIME_HIGH 0, more than half the range below 4095: 24-bit wrap
        0x6000,
        0x2001,  # x=1 OFF at t = 2**24
    ]
    dec = Evt3Decoder()
    ev = dec.decode(np.array(words, np.uint16))
    assert ev["x"].tolist() == [3, 100, 102, 111, 112, 119, 1]
    assert ev["p"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert ev["y"].tolist() == [17] * 7
    assert ev["t"].tolist() == [(0xFFF << 12) + 5] * 6 + [1 << 24]
    assert dec.n_triggers == 1
    dec2 = Evt3Decoder()
    assert dec2.decode(np.array([0x2001, 0x8000, 0x2002], np.uint16)).size == 0  # no y yet
    assert dec2.n_dropped_no_state == 2


def test_evt3_stray_time_low_never_runs_time_backwards(tmp_path):
    """A conformant stream (TIME_HIGH on every change) with stray TIME_LOW words a few µs
    back: trusted TIME_HIGH words, no inferred 4096 µs jump, no time going backwards."""
    rng = np.random.default_rng(3)
    ev = _random_events(rng, 20_000, 500_000)  # 0.5 s, ~120 TIME_HIGH changes, one wrap
    ev["t"] += (1 << 24) - 250_000
    words = np.frombuffer(encode_evt3(ev), "<u2").astype(np.int64)
    lows = np.flatnonzero((words >> 12) == TIME_LOW)[5::40]
    # (before its second TIME_HIGH a stream has not shown that it writes them: a backward
    # TIME_LOW there is read as a left-out TIME_HIGH, as some writers need)
    second_high = np.flatnonzero((words >> 12) == 0x8)[1]
    lows = lows[((words[lows] & 0xFFF) >= 16) & (lows > second_high)]
    stray = 0x6000 | ((words[lows] & 0xFFF) - rng.integers(1, 16, lows.size))
    # a stray word a few µs back, between the true TIME_LOW and the events it stamps
    words = np.insert(words, lows + 1, stray).astype("<u2")
    path = tmp_path / "stray.raw"
    path.write_bytes(HEADER + words.tobytes())
    for chunk in (3, 1000, 1 << 20):
        dec = Evt3Decoder()
        out = np.concatenate(
            [dec.decode(c) for c in np.array_split(words, max(1, words.size // chunk))]
        )
        t = out["t"].astype(np.int64)
        assert np.all(np.diff(t) >= 0), "time went backwards"
        true_t = ev["t"].astype(np.int64)
        # an event stamped by a stray word keeps the true time (the clamp) or is at most
        # 15 µs early; none is 4096 µs late
        assert np.all(t <= true_t) and np.all(true_t - t < 16)
        assert dec.n_time_clamped > 0 and out.size == ev.size
    t = np.concatenate(list(iter_events(path)))["t"].astype(np.int64)
    assert abs((t[-1] - t[0]) - (int(ev["t"][-1]) - int(ev["t"][0]))) < 16


def test_evt3_round_trip_across_wraps_and_any_chunking(tmp_path):
    rng = np.random.default_rng(11)
    ev = _random_events(rng, 800, 40_000_000)  # 40 s: two 24-bit wraps
    path = tmp_path / "x.raw"
    path.write_bytes(HEADER + encode_evt3(ev))
    hdr = read_header(path)
    assert (hdr.width, hdr.height) == (640, 480)
    for chunk in (1, 7, 4096, 1 << 20):
        out = np.concatenate(list(iter_events(path, chunk_words=chunk)))
        for f in "txyp":
            np.testing.assert_array_equal(out[f].astype(np.int64), ev[f].astype(np.int64), f)


def test_evt3_file_written_by_expelliarmus_decodes_exactly():
    out = np.concatenate(list(iter_events(DATA / "expelliarmus_600.raw", chunk_words=100)))
    expected = np.load(DATA / "expelliarmus_600_expected.npy")
    for f in "txyp":
        np.testing.assert_array_equal(out[f].astype(np.int64), expected[f].astype(np.int64), f)


def test_evt3_bad_files(tmp_path):
    odd = tmp_path / "odd.raw"
    odd.write_bytes(HEADER + b"\x01\x80\x05")
    with pytest.raises(LogFileError, match="odd number"):
        list(iter_events(odd))
    evt2 = tmp_path / "evt2.raw"
    evt2.write_bytes(b"% format EVT2;height=480;width=640\n% end\n\x00\x00")
    with pytest.raises(LogFileError, match="not EVT3"):
        read_header(evt2)


def test_evt3_driver_publishes_events_exactly_and_counts_out_of_frame(tmp_path):
    rng = np.random.default_rng(5)
    ev = _random_events(rng, 2000, 2_000_000)
    ev["x"][1500] = 700  # outside 640: dropped and counted
    path = tmp_path / "cam.raw"
    path.write_bytes(HEADER + encode_evt3(ev))
    got, _ = run_in_thread(
        EVENT_CAMERA, _cfg(tmp_path, "evt3", path, "source.realtime=false", "slice_us=500")
    )
    rows = _event_rows(got, 640)
    keep = ev["x"] < 640
    ref = np.stack(
        [ev["t"][keep].astype(np.int64) * 1000, ev["x"][keep], ev["y"][keep], ev["p"][keep]], axis=1
    ).astype(np.int64)
    rows[:, 0] -= rows[:, 0].min() - ref[:, 0].min()
    np.testing.assert_array_equal(_sorted(rows), _sorted(ref))
    assert got.statuses[-1].metrics["groups"]["events"]["n_bad_items"] == 1
    assert all(b.dt_ns is None or b.dt_ns.max() < 1_000_000 for b in got.of("events"))
