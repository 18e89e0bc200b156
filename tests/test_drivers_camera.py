"""The camera driver: DVS events from a synthetic scene in a real child process, from a
folder of real image files (PNG/PGM/NPY, a corrupt one among them), from real video files
written with OpenCV (a child process per run: timing, end of file, loop, SIGTERM), bad
video inputs, a capture whose grabs fail (degraded heartbeat, recovery), config errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
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
from PIL import Image

from spikefuse.drivers.camera import CAMERA, CameraConfig, capture_frames
from spikefuse.drivers.frames import CaptureReader, open_video
from spikefuse.encoding import resample_area
from spikefuse.errors import ConfigError
from spikefuse.sdk import load_driver_config, run_driver
from spikefuse.sdk.registry import DriverSpec
from spikefuse.transport.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]


def test_synthetic_camera_process_publishes_dvs_events_and_exits_on_sigterm(tmp_path):
    ep = f"ipc://{tmp_path}/cam.sock"
    proc = start_driver(
        "camera",
        REPO / "configs" / "drivers" / "camera_synthetic.yaml",
        f"endpoint={ep}",
        "wait_for_subscribers=1",
        "heartbeat_period_s=0.25",
    )
    got = Received()
    with Subscriber(ep) as sub:
        try:
            assert collect(
                sub, got, lambda r: len(r.batches) >= 10 and len(r.heartbeats) >= 2, 30.0
            )
        finally:
            rc, took_s, err = stop_driver(proc, signal.SIGTERM)
        drain(sub, got)
    assert rc == 0, err
    assert took_s < STOP_WITHIN_S, took_s
    w, h, period_ns = 64, 48, round(1e9 / 30)
    for b in got.batches:
        assert b.input == "events" and b.scale == pytest.approx(5.0)
        assert b.channels.max() < w * h and set(np.unique(b.counts).tolist()) <= {-1, 1}
        assert b.dt_ns is not None and b.dt_ns.max() <= period_ns
        cols = np.unique(b.channels % w)
        assert 0 < cols.size <= 8  # only the two edges of the bar move
        assert np.bincount(b.channels // w, minlength=h).min() > 0  # every row sees it
    assert got.heartbeats[-1].detail == "stopped by signal 15"


def _scene(k: int, w: int = 128, h: int = 96) -> np.ndarray:
    """Frame k: dark left of an edge at x = 40 + 6k (full-resolution px), bright right."""
    img = np.full((h, w), 230, np.uint8)
    img[:, : 40 + 6 * k] = 20
    return img


def _write_frames(folder: Path, n: int) -> list[np.ndarray]:
    folder.mkdir()
    frames = []
    for k in range(n):
        img = _scene(k)
        frames.append(img)
        kind = k % 3
        if kind == 0:
            Image.fromarray(img).save(folder / f"f{k:03d}.png")
        elif kind == 1:
            Image.fromarray(img).save(folder / f"f{k:03d}.pgm")
        else:
            np.save(folder / f"f{k:03d}.npy", img)
    (folder / "f002_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return frames


def test_image_folder_events_exactly_where_and_when_the_edge_moves(tmp_path):
    frames = _write_frames(tmp_path / "frames", 6)
    cfg = load_driver_config(
        CAMERA,
        None,
        [
            f"endpoint=ipc://{tmp_path}/img.sock",
            "wait_for_subscribers=1",
            "source.type=images",
            f"source.folder={tmp_path / 'frames'}",
            "source.realtime=false",
            "dvs.width=64",
            "dvs.height=48",
            "groups.events.rate_hz=10",
        ],
    )
    got, _ = run_in_thread(CAMERA, cfg)
    assert got.heartbeats[-1].detail == "stopped"
    metrics = got.statuses[-1].metrics["groups"]["events"]
    assert metrics["n_bad_items"] == 1  # the corrupt PNG: skipped, counted, not fatal
    assert metrics["n_items"] == 6
    batches = got.batches
    assert len(batches) == 5  # the first frame only sets the reference
    period_ns = 100_000_000
    t_first = batches[0].t_ns
    # the corrupt file (f002_corrupt sorts after f002.npy) keeps its time slot: the frame
    # after it spans two frame periods
    starts = [b.t_ns - t_first for b in batches]
    assert starts == [0, period_ns, 2 * period_ns, 4 * period_ns, 5 * period_ns]
    assert batches[2].dt_ns.max() > period_ns
    prev = None
    for k, frame in enumerate(frames):
        small = resample_area(frame.astype(float) / 255, 48, 64)
        if prev is not None:
            b = batches[k - 1]
            changed = np.flatnonzero(
                np.abs(np.log(small + 1e-3) - np.log(prev + 1e-3)).ravel() >= 0.2
            )
            assert set(b.channels.tolist()) == set(changed.tolist()), k  # where
            assert np.all(b.counts == -1)  # bright -> dark: OFF events
            span_ns = 2 * period_ns if k == 3 else period_ns
            assert b.dt_ns.min() >= 1 and b.dt_ns.max() <= span_ns  # when: in the interval
            cols = np.unique(b.channels % 64)
            assert cols.min() >= (40 + 6 * (k - 1)) // 2 and cols.max() <= (40 + 6 * k) // 2
        prev = small


def test_camera_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="1/dvs.threshold"):
        load_driver_config(CAMERA, None, ["groups.events.scale=3"])
    cfg = load_driver_config(CAMERA, None, ["dvs.threshold=0.1"])
    assert cfg.groups["events"].scale == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="exactly one of device"):
        load_driver_config(CAMERA, None, ["source.type=opencv"])
    (tmp_path / "empty").mkdir()
    cfg = load_driver_config(
        CAMERA,
        None,
        [
            f"endpoint=ipc://{tmp_path}/e.sock",
            "source.type=images",
            f"source.folder={tmp_path / 'empty'}",
        ],
    )
    with pytest.raises(ConfigError, match="no images"):
        run_driver(CAMERA, cfg)


# ---------------------------------------------------------------- OpenCV video files
# A 128x96 MJPG video: a bright bar (rows 32..63, 10 px wide) moving right by 2 px a frame
# over a static striped background; DVS at 64x48 (2x2 area averaging).
VID_W, VID_H, VID_FPS, VID_N = 128, 96, 25, 40
BAR_ROWS, BAR_W, BAR_X0, BAR_STEP = (32, 64), 10, 20, 2
VID_PERIOD_NS = 40_000_000  # 25 fps: not the config's default groups.events.rate_hz of 30
DVS_W, DVS_H = 64, 48
JPEG_MARGIN = 4  # DVS px: one 8x8 JPEG block (codec ringing) around the bar


def _bar_frame(k: int) -> np.ndarray:
    img = np.full((VID_H, VID_W), 50, np.uint8)
    img[:, ::8] = 80  # static texture: must never fire
    x = BAR_X0 + BAR_STEP * k
    img[BAR_ROWS[0] : BAR_ROWS[1], x : x + BAR_W] = 235
    return img


def _write_video(path: Path, n_frames: int = VID_N) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VID_FPS, (VID_W, VID_H))
    assert vw.isOpened()
    for k in range(n_frames):
        vw.write(cv2.cvtColor(_bar_frame(k), cv2.COLOR_GRAY2BGR))
    vw.release()
    return path


def _swept_mask() -> np.ndarray:
    """DVS pixels the bar ever covers, widened by one JPEG block: outside it nothing moves."""
    mask = np.zeros((DVS_H, DVS_W), bool)
    x_end = BAR_X0 + BAR_STEP * (VID_N - 1) + BAR_W
    m = JPEG_MARGIN
    mask[
        BAR_ROWS[0] // 2 - m : (BAR_ROWS[1] + 1) // 2 + m,
        BAR_X0 // 2 - m : (x_end + 1) // 2 + m,
    ] = True
    return mask.ravel()


def _video_driver(tmp_path: Path, video: Path, *overrides: str):
    ep = f"ipc://{tmp_path}/vid.sock"
    proc = start_driver(
        "camera",
        None,
        f"endpoint={ep}",
        "wait_for_subscribers=1",
        "source.type=opencv",
        f"source.file={video}",
        f"dvs.width={DVS_W}",
        f"dvs.height={DVS_H}",
        *overrides,
    )
    return ep, proc


def test_video_file_events_only_where_the_bar_moves_at_the_files_frame_rate(tmp_path):
    video = _write_video(tmp_path / "bar.avi")
    ep, proc = _video_driver(tmp_path, video, "heartbeat_period_s=0.5")
    got, recv_s = Received(), []
    with Subscriber(ep) as sub:
        try:
            deadline = time.monotonic() + 30.0
            while proc.poll() is None and time.monotonic() < deadline:
                msg = sub.recv(0.1)
                if msg is not None:
                    got.add(msg)
                    recv_s.append((time.monotonic(), msg))
            _, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        drain(sub, got, 0.2)
    assert proc.returncode == 0, err  # the end of the file ends the driver
    assert got.heartbeats[-1].detail == "stopped", got.heartbeats[-1]
    metrics = got.statuses[-1].metrics["groups"]["events"]
    assert metrics["n_items"] == VID_N and metrics["n_bad_items"] == 0
    batches = got.batches
    assert len(batches) == VID_N - 1  # the first frame sets the reference; the bar always moves
    mask = _swept_mask()
    t_first = batches[0].t_ns
    for i, b in enumerate(batches):
        k = i + 1  # frame k: events in the interval from frame k-1 to frame k
        assert b.input == "events" and b.scale == pytest.approx(5.0)
        assert 0 <= b.channels.min() and b.channels.max() < DVS_W * DVS_H
        assert mask[b.channels].all(), f"frame {k}: static background fired"
        # the file's own rate (25 fps, not the config's 30): intervals of exactly 40 ms,
        # every event inside its frame interval
        assert b.t_ns - t_first == i * VID_PERIOD_NS
        assert b.dt_ns is not None and 1 <= b.dt_ns.min() and b.dt_ns.max() <= VID_PERIOD_NS
        # only at the bar's two edges: ON ahead of it (dark -> bright), OFF behind it
        cols = b.channels % DVS_W
        lead = (BAR_X0 + BAR_STEP * k + BAR_W) // 2
        trail = (BAR_X0 + BAR_STEP * k) // 2
        assert cols.min() >= trail - JPEG_MARGIN and cols.max() <= lead + JPEG_MARGIN, k
        on, off = cols[b.counts > 0], cols[b.counts < 0]
        assert on.size and off.size and on.mean() > off.mean() + 3, k
    # paced in real time: 39 frame intervals take ~1.56 s of wall clock to arrive
    batch_s = [t for t, m in recv_s if m in batches]
    assert batch_s[-1] - batch_s[0] >= 0.75 * (VID_N - 2) * VID_PERIOD_NS / 1e9


def test_video_file_loops_with_time_running_on_and_stops_on_sigterm(tmp_path):
    video = _write_video(tmp_path / "bar.avi")
    ep, proc = _video_driver(tmp_path, video, "source.loop=true", "source.speed=4")
    got = Received()
    with Subscriber(ep) as sub:
        try:
            assert collect(sub, got, lambda r: len(r.batches) >= VID_N + 10, 30.0)
        finally:
            rc, took_s, err = stop_driver(proc, signal.SIGTERM)
        drain(sub, got)
    assert rc == 0, err
    assert took_s < STOP_WITHIN_S, took_s
    assert got.heartbeats[-1].detail == "stopped by signal 15"
    mask = _swept_mask()
    starts = np.array([b.t_ns for b in got.batches])
    assert np.all(mask[np.concatenate([b.channels for b in got.batches])])
    # data time runs on across the restart of the file, one frame period a frame
    assert np.all(np.diff(starts) == VID_PERIOD_NS)
    wrap = got.batches[VID_N - 1]  # the last frame back to the first: the bar jumps left
    assert (wrap.channels % DVS_W).min() <= BAR_X0 // 2 + JPEG_MARGIN


def test_truncated_video_counts_a_bad_reading_and_ends(tmp_path):
    data = _write_video(tmp_path / "bar.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    cfg = load_driver_config(
        CAMERA,
        None,
        [
            f"endpoint=ipc://{tmp_path}/cut.sock",
            "wait_for_subscribers=1",
            "source.type=opencv",
            f"source.file={cut}",
            "source.realtime=false",
        ],
    )
    got, _ = run_in_thread(CAMERA, cfg)
    assert got.heartbeats[-1].detail == "stopped"
    metrics = got.statuses[-1].metrics["groups"]["events"]
    assert 5 < metrics["n_items"] < VID_N  # the frames before the cut, then the end
    assert metrics["n_bad_items"] == 1
    assert len(got.batches) == metrics["n_items"] - 1


def test_bad_opencv_sources_are_config_errors_naming_the_source(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "noise.avi").write_bytes(np.random.default_rng(1).bytes(4096))
    cases = {
        "missing": (["source.file=" + str(tmp_path / "nothere.avi")], "video file not found"),
        "text": (["source.file=" + str(tmp_path / "notes.txt")], "cannot open this file"),
        "noise": (["source.file=" + str(tmp_path / "noise.avi")], "cannot open this file"),
        "device": (["source.device=63"], "camera device 63 cannot be opened"),
    }
    procs = {
        name: start_driver(
            "camera", None, f"endpoint=ipc://{tmp_path}/{name}.sock", "source.type=opencv", *sets
        )
        for name, (sets, _) in cases.items()
    }
    for name, proc in procs.items():
        _, err_b = proc.communicate(timeout=60)
        err = err_b.decode()
        assert proc.returncode == 2, (name, err)
        assert "Traceback" not in err, err
        sets, text = cases[name]
        where = sets[0].replace("=", ": ", 1)
        assert f"error: {where}: " in err and text in err, (name, err)


def test_capture_grab_failures_degrade_the_heartbeat_and_recover(tmp_path):
    """The device path (``capture_frames`` + ``CaptureReader``) on a capture whose grabs
    fail after 15-20 frames (a truncated file opened by OpenCV stands in for a camera
    that stops delivering): degraded heartbeat naming the failure, reopen, recovery."""
    data = _write_video(tmp_path / "bar.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])

    def source(cfg, ctx):
        with CaptureReader(lambda: open_video(str(cut), "test capture"), "capture") as reader:
            yield from capture_frames(reader, ctx, cfg.frame_interval_ns())

    spec = DriverSpec("camera", CameraConfig, source)
    cfg = load_driver_config(
        spec,
        None,
        [
            f"endpoint=ipc://{tmp_path}/cap.sock",
            "wait_for_subscribers=1",
            "groups.events.rate_hz=200",
            "duration_s=0.6",
            "heartbeat_period_s=10",
        ],
    )
    got, _ = run_in_thread(spec, cfg)
    states = [(h.state, h.detail) for h in got.heartbeats]
    degraded = [d for s, d in states if s == "degraded"]
    assert degraded and "capture: frame grab failed" in degraded[0], states
    i_bad = next(i for i, (s, _) in enumerate(states) if s == "degraded")
    assert any(s == "ok" for s, _ in states[i_bad:]), states  # reopened, recovered
    m = got.statuses[-1].metrics
    assert m["n_read_errors"] >= 1 and m["n_recoveries"] >= 1
    assert m["groups"]["events"]["n_items"] > 30  # frames after the reopen too
    for b in got.batches:
        assert b.channels.max() < 64 * 48


def test_opencv_source_without_opencv_is_a_clear_error(tmp_path):
    """OpenCV is optional: a child process in which ``import cv2`` fails."""
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from spikefuse.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "driver",
            "camera",
            "--set",
            "source.type=opencv",
            "--set",
            "source.device=0",
            "--set",
            f"endpoint=ipc://{tmp_path}/o.sock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "needs OpenCV" in r.stderr and "opencv-python-headless" in r.stderr
    assert "Traceback" not in r.stderr
