"""The live view (spikefuse/view): DVS integration against the camera driver's encoder,
keyframe resync, pose/track parsing, what a launch file tells the view, option errors, and
a real view process fed over a real socket (camera, motors and a simulated robot's
``status/sim``), its web server on loopback, its counters and its SIGTERM exit."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

from spikefuse.cli import main
from spikefuse.drivers.camera import SyntheticCameraSource
from spikefuse.drivers.frames import MovingBar
from spikefuse.launch import load_launch
from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status
from spikefuse.sdk.config import DvsSettings
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber
from spikefuse.view.config import ViewConfig
from spikefuse.view.from_launch import launch_view
from spikefuse.view.run import Listeners
from spikefuse.view.state import CameraState, MotorTrace, PoseTrack, ViewState, world_bounds

REPO = Path(__file__).resolve().parents[1]
W, H = 16, 12
PERIOD_NS = 33_333_333


def _dvs_batches(n_frames: int, threshold: float = 0.2):
    """Batches of the camera driver's own DVS encoder on its synthetic moving bar, and the
    encoder (whose reference has moved by exactly what the events say)."""
    enc = DvsSettings(width=W, height=H, threshold=threshold).encoder()
    scene = MovingBar(W, H, SyntheticCameraSource(seed=3, speed_px_s=60.0))
    batches, ref0 = [], None
    for k in range(n_frames):
        t_ns = k * PERIOD_NS
        ch, co, dt = enc.encode(t_ns, scene.render(t_ns / 1e9), PERIOD_NS)
        if ref0 is None:
            ref0 = enc.reference.copy()
        batches.append(EventBatch("cam", k, t_ns, "camera", 1 / threshold, ch, co, 0, dt))
    return batches, enc.reference - ref0


def test_camera_integrates_to_the_encoders_state():
    batches, expected = _dvs_batches(40)
    cam = CameraState(W, H)
    for b in batches:
        cam.apply(b)
    assert cam.n_events == sum(b.n_events for b in batches) > 100
    np.testing.assert_allclose(cam.log_change().ravel(), expected, atol=1e-9)
    img = cam.image_u8()
    assert img.shape == (H, W) and img.dtype == np.uint8
    change = cam.log_change()
    assert (img[change > 0] > 128).all() and (img[change < 0] < 127).all()
    assert (img[change == 0] == 127).all()


def test_camera_event_window_colours_and_reset():
    cam = CameraState(4, 2)
    cam.apply(EventBatch("c", 0, 1, "i", 5.0, np.array([0, 1, 1, 5]), np.array([1, -1, -1, 1])))
    rgb = cam.take_events_rgb()
    assert tuple(rgb[0, 0]) == (40, 230, 40) and tuple(rgb[0, 1]) == (230, 40, 40)
    assert tuple(rgb[1, 1]) == (40, 230, 40) and tuple(rgb[0, 2]) == (24, 24, 24)
    assert not cam.changed and not cam.take_events_rgb()[..., 1].max() > 24


def test_channels_beyond_the_layout_are_counted_not_applied():
    cam = CameraState(2, 2)
    cam.apply(EventBatch("c", 0, 1, "i", 5.0, np.array([0, 4, 9]), np.array([1, 1, -1])))
    assert cam.n_outside == 2 and cam.sums.tolist() == [1, 0, 0, 0]


def test_heartbeat_totals_restore_lost_batches():
    batches, expected = _dvs_batches(30)
    state = ViewState({"cam/camera": (W, H)})
    totals = np.zeros(W * H, np.int64)
    for k, b in enumerate(batches):
        np.add.at(totals, b.channels, b.counts.astype(np.int64))
        if not 10 <= k < 15:  # five batches lost
            state.handle(b)
    cam = state.cameras["cam/camera"]
    assert not np.allclose(cam.log_change().ravel(), expected)
    state.handle(Heartbeat("cam", 0, 10**9, "ok", "", {"camera": totals}))
    assert cam.n_resyncs == 1
    np.testing.assert_allclose(cam.log_change().ravel(), expected, atol=1e-9)
    state.handle(Heartbeat("cam", 1, 2 * 10**9, "ok", "", {"camera": totals}))
    assert cam.n_resyncs == 1  # already equal: nothing to do


def test_view_state_rates_and_unlisted_streams():
    state = ViewState({"cam/camera": (2, 2)})
    state.rates.take(0)
    state.handle(EventBatch("imu", 0, 1, "gyro", 200.0, np.arange(3), np.ones(3, np.int32)))
    state.handle(EventBatch("imu", 1, 2, "gyro", 200.0, np.arange(2), np.ones(2, np.int32)))
    state.handle(MotorCommand("motors", 0, 3, 1, np.array([0.5, -0.5])))
    rates = state.rates.take(500_000_000)
    assert rates == {"imu/gyro": 10.0, "motor/motors": 2.0}
    assert state.cameras == {}  # only listed layouts become images
    assert state.rates.take(10**9) == {"imu/gyro": 0.0, "motor/motors": 0.0}
    state.handle(Heartbeat("imu", 0, 3, "ended", "stopped"))  # the stream closed ...
    assert state.ended == {"imu"}
    state.handle(EventBatch("imu", 0, 4, "gyro", 200.0, np.arange(1), np.ones(1, np.int32)))
    assert state.ended == set()  # ... and opened again (a restarted driver)


def test_motor_trace_blocks_every_command():
    tr = MotorTrace(max_samples=3)
    for k in range(5):
        tr.add(MotorCommand("m", k, 100 + k, 0, np.array([k, -k], np.float64)))
    tr.add(MotorCommand("n", 0, 7, 0, np.array([1.0])))
    out = tr.take()
    assert tr.n_dropped == 2
    (a, t_a, v_a), (b, t_b, v_b) = out
    assert a == "m" and t_a.tolist() == [102, 103, 104] and v_a[:, 1].tolist() == [-2, -3, -4]
    assert b == "n" and v_b.shape == (1, 1)
    assert tr.take() == []


def _sim_status(seq: int, t_ns: int, **extra) -> Status:
    m = dict(x_m=1.0, y_m=2.0, yaw_rad=0.5, v_mps=0.3, w_radps=0.1, progress_m=1.5, lap=0)
    m.update(cross_track_m=0.02, collisions=0, sim_t_s=t_ns / 1e9)
    m.update(extra)
    return Status("sim", seq, t_ns, m)


def test_pose_track_parses_the_sim_contract_and_counts_bad_input():
    pt = PoseTrack(max_trail=3)
    track = [[0.0, 0.0], [4.0, 0.0], [4.0, 2.0], [0.0, 2.0]]
    pt.add(_sim_status(0, 1, track_xy=track))
    assert pt.pose == (1.0, 2.0, 0.5) and pt.track_changed and pt.fresh
    assert pt.scalars["v_mps"] == 0.3 and "sim_t_s" not in pt.scalars
    assert world_bounds(pt.track_xy) == pytest.approx((-0.401, 4.401, -2.401, 0.401))
    pt.track_changed = False
    pt.add(_sim_status(1, 2, track_xy=track))
    assert not pt.track_changed  # the same track again
    for bad in ([[0, 0]], [[0, 0], [1]], "no", [[0, 0], [1, float("nan")]]):
        pt.add(_sim_status(2, 3, track_xy=bad))
    assert pt.n_bad == 4 and pt.track_xy.shape == (4, 2)
    pt.add(_sim_status(3, 4, x_m="far"))
    pt.add(_sim_status(4, 5, yaw_rad=float("inf")))
    assert pt.n_bad == 6 and pt.n_updates == 6  # a bad track still carries a pose
    assert list(pt.trail) == [(1.0, 2.0)] * 3


def test_launch_file_gives_endpoints_and_camera_layouts(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFUSE_RUN_DIR", str(tmp_path))
    lv = launch_view(load_launch(REPO / "launch" / "demo.yaml", ["camera.dvs.width=40"], False))
    assert lv.run_dir == tmp_path
    assert {k: (c.width, c.height) for k, c in lv.cameras.items()} == {"camera/camera": (40, 24)}
    assert {e.rsplit("/", 1)[1] for e in lv.endpoints} == {"launch-demo.sock", "core.sock"}
    assert {e.rsplit("/", 1)[1] for e in lv.sensor_endpoints} == {"imu.sock", "camera.sock"}
    assert lv.cores == ["core"]


def test_sensors_are_connected_only_after_the_core_spoke(tmp_path):
    """A driver waiting for its subscriber (the core) must not get the view instead."""
    core_ep, sensor_ep = f"ipc://{tmp_path}/core.sock", f"ipc://{tmp_path}/robot.sock"
    cfg = ViewConfig(
        run_dir=tmp_path,
        endpoints=[core_ep],
        sensor_endpoints=[sensor_ep],
        wait_for_status=["core"],
    )
    with Publisher(core_ep) as core, Publisher(sensor_ep) as sensor, Listeners(cfg, 0) as lis:
        assert core.wait_for_subscribers(1, 30)
        assert lis.recv(1) == [] and not sensor.wait_for_subscribers(1, 0.5)
        core.send(Status("other", 0, 1, {}))
        assert _recv_source(lis, "other") and len(lis.subs) == 1  # not the awaited source
        assert not sensor.wait_for_subscribers(1, 0.5)
        core.send(Status("core", 0, 1, {}))
        assert _recv_source(lis, "core") and len(lis.subs) == 2
        assert sensor.wait_for_subscribers(1, 30)


def _recv_source(lis: Listeners, source: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(getattr(m, "source", None) == source for m in lis.recv(1)):
            return True
        time.sleep(0.01)
    return False


def test_sensors_are_connected_after_the_timeout_without_a_core(tmp_path):
    cfg = ViewConfig(
        run_dir=tmp_path,
        endpoints=[f"ipc://{tmp_path}/core.sock"],
        sensor_endpoints=[f"ipc://{tmp_path}/robot.sock"],
        wait_for_status=["core"],
        wait_for_status_timeout_s=5,
    )
    with Publisher(f"ipc://{tmp_path}/robot.sock") as sensor, Listeners(cfg, 0) as lis:
        lis.recv(4_999_999_999)
        assert len(lis.subs) == 1
        lis.recv(5_000_000_000)
        assert len(lis.subs) == 2 and sensor.wait_for_subscribers(1, 30)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["view", "--endpoint", "ipc:///tmp/x.sock", "--camera", "cam=3"], "--camera"),
        (["view", "--endpoint", "ipc:///tmp/x.sock", "--port", "70000"], "web_port"),
        (["view", "--endpoint", "nowhere"], "endpoints"),
        (["view", "--endpoint", "ipc:///tmp/x.sock", "--set", "a=1"], "--set needs --launch"),
        (["view", "--launch", "launch/demo.yaml", "--set", "camera.dvs.width=0"], "dvs.width"),
        (["launch", "launch/demo.yaml", "--view", "70000"], "--view"),
    ],
)
def test_bad_options_are_config_errors(argv, needle, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("SPIKEFUSE_RUN_DIR", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_busy_port_is_a_config_error(capsys, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = main(["view", "--endpoint", f"ipc://{tmp_path}/x.sock", "--port", str(port)])
    assert rc == 2 and f"127.0.0.1:{port}" in capsys.readouterr().err


def test_launch_with_a_process_named_view_refuses_view(capsys, tmp_path):
    f = tmp_path / "l.yaml"
    f.write_text(
        f"run_dir: {tmp_path}\nprocesses:\n  - {{name: view, kind: exec, args: [sleep, '1']}}\n",
        encoding="utf-8",
    )
    assert main(["launch", str(f), "--view"]) == 2
    assert "already has" in capsys.readouterr().err


# --------------------------------------------------------------------------- process


def start_view(run_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """A real ``spikefuse view`` process; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spikefuse", "view", "--run-dir", str(run_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("live view: http"):
            return proc, line.split()[-1]
    proc.wait(10)
    pytest.fail(f"the view exited ({proc.returncode}) without a URL:\n{''.join(lines)}")


def wait_status(sub: Subscriber, source: str, done, timeout_s: float, feed=None) -> dict:
    """Newest metrics of ``status/<source>`` once ``done(metrics)`` holds (feeding
    messages meanwhile with ``feed()``)."""
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        if feed is not None:
            feed()
        for msg in sub.recv_many(0.02):
            if isinstance(msg, Status) and msg.source == source:
                last = msg.metrics
        if last and done(last):
            return last
    pytest.fail(f"status/{source} never satisfied the condition; last: {last}")


class SimStandIn:
    """Publishes what the sim and a camera would: DVS batches, motor commands and
    ``status/sim`` ground truth, one step per call."""

    def __init__(self, pub: Publisher):
        self.pub = pub
        self.batches, _ = _dvs_batches(300)
        self.k = 0
        theta = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        self.track = np.c_[3 * np.cos(theta), 1.5 * np.sin(theta)].tolist()

    def __call__(self) -> None:
        k = self.k
        now = time.monotonic_ns()
        b = self.batches[k % len(self.batches)]
        self.pub.send(EventBatch("cam", k, now, "camera", b.scale, b.channels, b.counts))
        self.pub.send(MotorCommand("wheels", k, now, now, np.array([math.sin(k / 9), 0.5])))
        a = k / 50
        extra = {"track_xy": self.track} if k % 50 == 0 else {}
        self.pub.send(
            _sim_status(k, now, x_m=3 * math.cos(a), y_m=1.5 * math.sin(a), yaw_rad=a, **extra)
        )
        self.k += 1
        time.sleep(0.005)


def test_view_process_end_to_end_over_a_real_socket(tmp_path):
    ep = f"ipc://{tmp_path}/sim.sock"
    with Publisher(ep) as pub, Subscriber(f"ipc://{tmp_path}/view.sock", ["status/view"]) as sub:
        proc, url = start_view(
            tmp_path, "--endpoint", ep, "--camera", f"cam/camera={W}x{H}", "--port", "0",
            "--grpc-port", "0",
        )  # fmt: skip
        try:
            assert url.startswith("http://127.0.0.1:")
            page = urllib.request.urlopen(url, timeout=30).read().decode()
            assert "Rerun" in page and "<canvas" in page
            wasm = urllib.request.urlopen(url.split("?")[0] + "re_viewer_bg.wasm", timeout=30)
            assert wasm.headers["Content-Type"] == "application/wasm"
            server = psutil.Process(proc.pid).children()[0]
            listening = [c for c in server.net_connections("tcp") if c.status == "LISTEN"]
            assert len(listening) == 2 and {c.laddr.ip for c in listening} == {"127.0.0.1"}
            assert pub.wait_for_subscribers(1, 30)
            m = wait_status(
                sub,
                "view",
                lambda m: m["images_logged"] >= 5 and m["pose_logged"] >= 5 and m["motor_logged"],
                120,
                SimStandIn(pub),
            )
            assert m["frames_per_camera"]["cam/camera"] >= 5
            assert m["cameras"]["cam/camera"]["n_events"] > 100
            assert m["pose_bad"] == 0 and m["n_rejected"] == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "camera frames" in out and "Traceback" not in out
    assert not psutil.pid_exists(server.pid) or server.status() == psutil.STATUS_ZOMBIE
    assert os.path.exists(tmp_path / "view-rerun" / "rerun" / "analytics.json")


def test_view_exits_with_an_error_when_its_server_dies(tmp_path):
    proc, _ = start_view(tmp_path, "--endpoint", f"ipc://{tmp_path}/x.sock", "--port", "0",
                         "--grpc-port", "0")  # fmt: skip
    try:
        psutil.Process(proc.pid).children()[0].kill()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "the rerun server exited with code -9" in out and "Traceback" not in out


def test_view_of_a_launch_with_curve_keys(tmp_path):
    """A launch with ``security``: the view receives with the launch's shared receiving
    pair (a plaintext subscriber would get nothing) and publishes its status with the
    launcher's pair."""
    from spikefuse.transport.config import SecurityConfig
    from spikefuse.transport.security import generate_keypair

    keys = tmp_path / "keys"
    for name in ("bus", "launch"):
        generate_keypair(keys, name)
    launch = tmp_path / "secure.yaml"
    launch.write_text(
        f"run_dir: {tmp_path}\nsecurity: {{key_dir: keys}}\nprocesses:\n"
        "  - {name: sim, kind: exec, args: [sleep, '1'], outputs: [status/sim]}\n",
        encoding="utf-8",
    )
    sender = SecurityConfig(
        secret_key_file=keys / "launch.key_secret", server_public_key_file=keys / "bus.key"
    )
    receiver = SecurityConfig(
        secret_key_file=keys / "bus.key_secret", allowed_client_keys=[keys / "launch.key"]
    )
    ep = f"ipc://{tmp_path}/sim.sock"
    with (
        Publisher(ep, security=sender) as pub,
        Subscriber(f"ipc://{tmp_path}/view.sock", ["status/view"], security=receiver) as sub,
    ):
        proc, _ = start_view(tmp_path, "--launch", str(launch), "--port", "0", "--grpc-port", "0")
        try:
            assert pub.wait_for_subscribers(1, 30)
            k = [0]

            def feed() -> None:
                pub.send(_sim_status(k[0], time.monotonic_ns(), track_xy=[[0, 0], [1, 1]]))
                k[0] += 1
                time.sleep(0.01)

            m = wait_status(sub, "view", lambda m: m["pose_logged"] >= 3, 120, feed)
            assert m["n_rejected"] == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
