"""export (JSON channels for Foxglove), plot (PNG/HTML), the progress helper."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader

from spikefuse.errors import ConfigError
from spikefuse.recording.export import export_json
from spikefuse.recording.offline import replay_offline
from spikefuse.recording.plot import plot_log
from spikefuse.recording.progress import Progress
from tests.test_replay import GRAPH, imu_batches, write_log


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    d = tmp_path_factory.mktemp("exp")
    batches = imu_batches(600, 5_000_000)
    write_log(d / "in.mcap", batches)
    replay_offline(d / "in.mcap", GRAPH, d / "out.mcap")
    return d / "out.mcap", batches


def test_export_json_channels(replayed, tmp_path: Path) -> None:
    src, batches = replayed
    out = tmp_path / "e.mcap"
    counts = export_json(src, out)
    assert (
        counts["sensor/imu"] == len(batches)
        and counts["motor/motors"] > 0
        and counts["status/replay"] >= 2
    )
    with open(out, "rb") as fh:
        r = make_reader(fh)
        summ = r.get_summary()
        assert {c.message_encoding for c in summ.channels.values()} == {"json"}
        assert {s.encoding for s in summ.schemas.values()} == {"jsonschema"}
        for s in summ.schemas.values():
            assert json.loads(s.data)["type"] == "object"
        gyro_sum = np.zeros(3)
        for _s, _ch, m in r.iter_messages(topics=["sensor/imu"]):
            obj = json.loads(m.data)
            if obj["input"] == "gyro":
                np.add.at(gyro_sum, obj["channels"], obj["counts"])
                assert obj["reconstruction"] == pytest.approx(
                    list(gyro_sum[: len(obj["reconstruction"])] / 200.0)
                )
            assert obj["timestamp"]["sec"] * 10**9 + obj["timestamp"]["nsec"] == obj["t_ns"]


def test_plot_png_and_html(replayed, tmp_path: Path) -> None:
    src, _ = replayed
    png = plot_log(src, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    page = plot_log(src, tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and "sensor/imu/gyro" in page
    with pytest.raises(ConfigError, match="png or .html"):
        plot_log(src, tmp_path / "r.pdf")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_tty_only() -> None:
    tty, pipe = _Tty(), io.StringIO()
    with Progress(10, "job", stream=tty) as p:
        for _ in range(10):
            p.update()
    assert "job [" in tty.getvalue() and "10/10" in tty.getvalue() and p.n_draws >= 1
    with Progress(10, "job", stream=pipe) as q:
        for _ in range(10):
            q.update()
    assert pipe.getvalue() == "" and q.n_draws == 0
