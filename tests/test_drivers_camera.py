"""The camera driver: DVS events from a synthetic scene in a real child process, from a
folder of real image files (PNG/PGM/NPY, a corrupt one among them), config errors."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _drivers_util import Received, collect, drain, run_in_thread, start_driver, stop_driver
from PIL import Image
from spikefuse.drivers.camera import CAMERA

from spikefuse.bus import Subscriber
from spikefuse.encoding import resample_area
from spikefuse.errors import ConfigError
from spikefuse.sdk import load_driver_config, run_driver

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
    assert took_s < 1.0, took_s
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


@pytest.mark.skipif(importlib.util.find_spec("cv2") is not None, reason="OpenCV is installed")
def test_opencv_source_without_opencv_is_a_clear_error(tmp_path):
    t0 = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikefuse",
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
    assert r.returncode == 2
    assert "needs OpenCV" in r.stderr and "opencv-python-headless" in r.stderr
    assert time.monotonic() - t0 < 30
