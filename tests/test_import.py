"""Importers on every real recording in ../shared/data: counts, rates, encoder identity
with the driver encoders, offline replay through the example graph; bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikefuse.encoding import DvsEncoder, SigmaDeltaEncoder
from spikefuse.errors import ConfigError, LogFileError
from spikefuse.protocol import EventBatch, decode
from spikefuse.recording.importers import import_log, load_import_map
from spikefuse.recording.info import summarize
from spikefuse.recording.mcapio import open_log
from spikefuse.recording.offline import replay_offline
from spikefuse.tables import load_table

REPO = Path(__file__).resolve().parents[1]
MAPS = REPO / "configs" / "import"
GRAPH = REPO / "configs" / "graphs" / "example.yaml"

# (source under ../shared/data, map, expected IMU gyro sample rate Hz)
CASES = {
    "husky_ros1": ("husky/test1.bag", "husky_ros1.yaml", 30.0),
    "husky_ros2": ("husky/test1_ros2_mcap", "husky_ros2.yaml", 30.0),
    "px4": ("px4/sample.ulg", "px4_ulog.yaml", 248.0),
    "dvxplorer": ("dvxplorer/sample.aedat4", "dvxplorer_aedat.yaml", 805.0),
    "broad": ("broad/broad_02_undisturbed_slow_rotation.csv.gz", "table_broad.yaml", 285.714),
    "vqf": ("vqf/imu_data.npz", "table_vqf.yaml", 285.714),
    "xio": ("xio/sensor_data.csv", "table_xio.yaml", 100.0),
}


@pytest.fixture(scope="module")
def imported(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out_dir = tmp_path_factory.mktemp("imported")
    done = {}
    for name, (src, mapfile, _) in CASES.items():
        overrides = ["streams.0.groups.mag.enabled=false"] if name == "broad" else None
        imap = load_import_map(MAPS / mapfile, overrides)
        out = out_dir / f"{name}.mcap"
        done[name] = (import_log(shared_data / src, out, imap), out)
    return done


def _batches(path: Path, stream: str) -> list[EventBatch]:
    out = []
    for m in open_log(path).messages:
        msg = decode(m.payload)
        if isinstance(msg, EventBatch) and f"sensor/{msg.sensor}/{msg.input}" == stream:
            out.append(msg)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_import_counts_rates_and_offline_replay(imported: dict, name: str, tmp_path: Path) -> None:
    res, out = imported[name]
    rate = CASES[name][2]
    gyro = res.streams["sensor/imu/gyro"]
    assert gyro["sample_rate_hz"] == pytest.approx(rate, rel=0.05)
    info = summarize(out)
    assert info.indexed and info.n_undecodable == 0
    assert info.stream("sensor/imu/gyro").rate_hz == pytest.approx(rate, rel=0.08)
    assert info.n_events == res.n_events > 1000
    assert info.stream("sensor/imu/gyro").n_seq_missing == 0
    rep = replay_offline(out, GRAPH, tmp_path / "out.mcap", end_s=20.0)  # the first 20 s
    in_window = [
        m
        for m in open_log(out).select(["sensor/imu"], end_s=20.0)
        if decode(m.payload).input in ("gyro", "accel")
    ]
    assert rep.n_batches == len(in_window) > 0
    assert rep.n_motor_commands > 10 and rep.counters["spikes"]["motors"] > 0
    assert rep.bad_batches == {}
    extra_inputs = {s.split("/")[-1] for s in res.streams} - {"gyro", "accel"}
    assert set(rep.unknown_inputs) == extra_inputs  # counted and skipped, not lost silently


def test_husky_bags_ros1_and_ros2_identical(imported: dict) -> None:
    a, b = imported["husky_ros1"][0], imported["husky_ros2"][0]
    assert a.streams == b.streams and a.n_events == b.n_events
    assert a.streams["sensor/odom/wheel_velocity"]["sample_rate_hz"] == pytest.approx(
        10.0, rel=0.05
    )
    assert a.streams["sensor/gps/gps"]["sample_rate_hz"] == pytest.approx(2.5, rel=0.05)
    ev_a = _batches(imported["husky_ros1"][1], "sensor/imu/gyro")
    ev_b = _batches(imported["husky_ros2"][1], "sensor/imu/gyro")
    assert ev_a == ev_b


def test_husky_events_identical_to_driver_encoder(shared_data: Path, imported: dict) -> None:
    from rosbags.highlevel import AnyReader

    enc = SigmaDeltaEncoder(3, 200.0)
    expect = []
    with AnyReader([shared_data / "husky/test1.bag"]) as r:
        conns = [c for c in r.connections if c.topic == "/imu/data"]
        for c, t, raw in r.messages(connections=conns):
            m = r.deserialize(raw, c.msgtype)
            ch, co = enc.encode([m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z])
            if ch.size:
                expect.append((t, ch.tolist(), co.tolist()))
    got = [
        (b.t_ns, b.channels.tolist(), b.counts.tolist())
        for b in _batches(imported["husky_ros1"][1], "sensor/imu/gyro")
    ]
    assert got == expect


def test_table_events_identical_to_driver_encoder(shared_data: Path, imported: dict) -> None:
    table = load_table(shared_data / "xio/sensor_data.csv", preset="xio")
    enc = SigmaDeltaEncoder(3, 20.0)
    expect = []
    for t, v in zip(table.t_ns.tolist(), table.groups["accel"], strict=True):
        ch, co = enc.encode(v)
        if ch.size:
            expect.append((t, ch.tolist(), co.tolist()))
    got = [
        (b.t_ns, b.channels.tolist(), b.counts.tolist())
        for b in _batches(imported["xio"][1], "sensor/imu/accel")
    ]
    assert got == expect


def test_px4_and_dvs_details(imported: dict) -> None:
    px4 = imported["px4"][0]
    assert px4.streams["sensor/px4_attitude/px4_q"]["n_samples"] == pytest.approx(
        94.0 * 69, rel=0.05
    )
    assert px4.streams["sensor/px4_actuators/px4_outputs"]["n_samples"] > 1000
    dvx, out = imported["dvxplorer"]
    cam = dvx.streams["sensor/dvs/camera"]
    assert cam["n_events"] == cam["n_samples"] == 111_954  # every native event, once
    batches = _batches(out, "sensor/dvs/camera")
    assert all(
        b.dt_ns is None or (b.dt_ns.min() >= 0 and b.dt_ns.max() < 1_000_000) for b in batches
    )
    assert set(np.concatenate([b.counts for b in batches]).tolist()) == {-1, 1}
    assert max(int(b.channels.max()) for b in batches) < 320 * 240


def _write_ros2_bag(path: Path) -> list[np.ndarray]:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    String = ts.types["std_msgs/msg/String"]
    rng = np.random.default_rng(1)
    frames = []
    with Writer(path, version=8) as w:
        cam = w.add_connection("/camera", Image.__msgtype__, typestore=ts)
        txt = w.add_connection("/chatter", String.__msgtype__, typestore=ts)
        for i in range(6):
            t = 1_000_000_000 + i * 50_000_000
            img = (rng.random((12, 16)) * 255).astype(np.uint8)
            frames.append(img)
            msg = Image(
                Header(Time(t // 10**9, t % 10**9), "cam"), 12, 16, "mono8", 0, 16, img.ravel()
            )
            w.write(cam, t, ts.serialize_cdr(msg, Image.__msgtype__))
            w.write(txt, t, ts.serialize_cdr(String(f"hello {i}"), String.__msgtype__))
    return frames


def test_ros2_image_dvs_and_unknown_types_counted(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    frames = _write_ros2_bag(bag)
    mp = tmp_path / "map.yaml"
    mp.write_text(
        "format: ros\nstreams:\n- topic: /camera\n  sensor: cam\n  dvs: {width: 8, height: 6, threshold: 0.15}\n"
        "  groups:\n    frame: {input: camera, scale: 6.666666666666667}\n"
    )
    res = import_log(bag, tmp_path / "o.mcap", load_import_map(mp))
    assert res.unknown_types == {"std_msgs/msg/String": 6}
    dvs = DvsEncoder(8, 6, threshold=0.15)
    expect = []
    for i, f in enumerate(frames):
        t = 1_000_000_000 + i * 50_000_000
        ch, co, dt = dvs.encode(t, f, 50_000_000 if i else 1)
        if ch.size:
            expect.append((ch.tolist(), co.tolist(), dt.tolist()))
    got = [
        (b.channels.tolist(), b.counts.tolist(), b.dt_ns.tolist())
        for b in _batches(tmp_path / "o.mcap", "sensor/cam/camera")
    ]
    assert got == expect and len(got) >= 3


def test_bad_sources_and_maps(shared_data: Path, tmp_path: Path) -> None:
    imap = load_import_map(MAPS / "husky_ros1.yaml", ["streams.1.topic=/no/such/topic"])
    with pytest.raises(
        ConfigError,
        match=r"husky_ros1.yaml: streams\[1\].topic: topic '/no/such/topic' is not in .*test1.bag",
    ):
        import_log(shared_data / "husky/test1.bag", tmp_path / "o.mcap", imap)
    with pytest.raises(ConfigError, match=r"streams\[0\].groups: group 'gyr'"):
        import_log(
            shared_data / "husky/test1.bag",
            tmp_path / "o.mcap",
            load_import_map(MAPS / "husky_ros1.yaml", ["streams.0.groups.gyr.scale=1"]),
        )
    trunc = tmp_path / "trunc.bag"
    trunc.write_bytes((shared_data / "husky/test1.bag").read_bytes()[:500_000])
    with pytest.raises(LogFileError, match="trunc.bag: cannot read as a ROS bag"):
        import_log(trunc, tmp_path / "o.mcap", load_import_map(MAPS / "husky_ros1.yaml"))
    junk = tmp_path / "junk.ulg"
    junk.write_bytes(b"not a ulog")
    with pytest.raises(LogFileError, match="junk.ulg: cannot read as a PX4 ULog"):
        import_log(junk, tmp_path / "o.mcap", load_import_map(MAPS / "px4_ulog.yaml"))
    bad_map = tmp_path / "bad.yaml"
    bad_map.write_text(
        "format: ros\nstreams:\n- topic: /imu/data\n  sensor: imu\n  groups:\n    gyro: {scale: -1}\n  colour: red\n"
    )
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_import_map(bad_map)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikefuse",
            "import",
            str(trunc),
            "-o",
            str(tmp_path / "o.mcap"),
            "--map",
            str(MAPS / "husky_ros1.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode == 1 and "cannot read as a ROS bag" in r.stderr and "Traceback" not in r.stderr
    )
