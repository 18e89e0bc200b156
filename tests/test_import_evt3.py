"""``spikefuse import`` of a Prophesee EVT 3.0 file (the driver's decoder): every event of
a file written by an independent implementation arrives exactly; bad maps are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from spikefuse.protocol import EventBatch, decode
from spikefuse.recording.importers import import_log, load_import_map
from spikefuse.recording.mcapio import open_log

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "configs" / "import" / "prophesee_evt3.yaml"
DATA = REPO / "tests" / "data" / "event_camera"
GEOMETRY = ["--set", "streams.0.width=640", "--set", "streams.0.height=480"]


def _import(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", "import", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _events(path: Path) -> np.ndarray:
    rows = []
    for m in open_log(path).messages:
        b = decode(m.payload)
        assert isinstance(b, EventBatch) and (b.sensor, b.input) == ("dvs", "camera")
        dt = b.dt_ns if b.dt_ns is not None else np.zeros(len(b.channels), np.int64)
        rows.append(np.stack([b.t_ns + dt, b.channels, b.counts], axis=1))
    return np.concatenate(rows)


def test_evt3_import_is_exact(tmp_path: Path) -> None:
    out = tmp_path / "cam.mcap"
    res = _import(str(DATA / "expelliarmus_600.raw"), "-o", str(out), "--map", str(MAP), *GEOMETRY)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stderr[res.stderr.index("{") :])
    assert summary["format"] == "evt3" and summary["n_events"] == 600
    exp = np.load(DATA / "expelliarmus_600_expected.npy")
    want = np.stack(
        [
            exp["t"].astype(np.int64) * 1000,
            exp["y"].astype(np.int64) * 640 + exp["x"],
            np.where(exp["p"] > 0, 1, -1),
        ],
        axis=1,
    )
    got = _events(out)
    order = np.lexsort(got.T[::-1])
    np.testing.assert_array_equal(got[order], want[np.lexsort(want.T[::-1])])
    # 1 ms batches, as the map says
    assert (
        max(
            b.dt_ns.max()
            for m in open_log(out).messages
            if (b := decode(m.payload)).dt_ns is not None
        )
        < 1_000_000
    )


def test_evt3_auto_format_and_out_of_frame_counted(tmp_path: Path) -> None:
    imap = load_import_map(MAP, ["format=auto", "streams.0.width=320", "streams.0.height=480"])
    res = import_log(DATA / "expelliarmus_600.raw", tmp_path / "a.mcap", imap, progress=False)
    exp = np.load(DATA / "expelliarmus_600_expected.npy")
    n_out = int(np.count_nonzero(exp["x"] >= 320))
    assert res.format == "evt3" and 0 < n_out < 600
    assert res.n_events == 600 - n_out
    assert res.bad_messages == {"evt3: events outside 320x480": n_out}


def test_evt3_map_errors_name_the_field(tmp_path: Path) -> None:
    src = str(DATA / "expelliarmus_600.raw")
    res = _import(src, "-o", str(tmp_path / "x.mcap"), "--map", str(MAP))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "streams[0].width" in res.stderr and "no geometry" in res.stderr, res.stderr
    res = _import(
        src, "-o", str(tmp_path / "x.mcap"), "--map", str(MAP), "--set", "streams.0.topic=imu"
    )
    assert res.returncode == 2 and "streams[0].topic" in res.stderr, res.stderr
