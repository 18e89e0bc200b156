"""``spikefuse train`` end to end on small recordings written with the project's own writer
and encoders (tests/_train_util.py): the dataset, training, conversion, the engine against
the rounding network on held-out data, config errors, and that nothing else imports JAX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikefuse.engine import Engine
from spikefuse.engine.semantics import round_half_away_array
from spikefuse.graph import Graph
from spikefuse.recording.mcapio import open_log
from spikefuse.recording.offline import replay_offline
from spikefuse.train.config import load_train_config
from spikefuse.train.dataset import load_recording
from tests._train_util import GYRO_SCALE, make_dataset

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spikefuse", "--log-level", "WARNING", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("train")
    cfg = make_dataset(folder, epochs=6, steps=25)
    proc = _cli("train", str(cfg), "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder, json.loads((folder / "out/report.json").read_text()), proc


def test_dataset_is_what_the_core_sees(tmp_path):
    cfg = load_train_config(make_dataset(tmp_path, epochs=1, steps=1))
    rec = load_recording(cfg.recordings("train")[0], {"camera": 192, "gyro": 1}, "motor/wheels")
    # gyro: the running sum of its counts / scale, sampled after every push
    gyro_counts = [co[0] for name, _, _, co in rec.pushes if name == "gyro"]
    np.testing.assert_array_equal(
        rec.inputs["gyro"].rows[1:, 0], np.cumsum(gyro_counts) / GYRO_SCALE
    )
    # camera: the DVS events integrate to the log-intensity change (multiples of the threshold)
    cam = rec.inputs["camera"].rows
    np.testing.assert_allclose(cam * 10.0, np.round(cam * 10.0), atol=1e-9)
    assert np.abs(cam).max() > 0.5
    # a sample after every push from the first motor command on; targets held, never ahead
    assert rec.n == len(rec.pushes) - rec.sample_push[0]
    assert np.array_equal(rec.sample_push, np.arange(rec.sample_push[0], len(rec.pushes)))
    log = open_log(cfg.recordings("train")[0])
    cmd_t = np.array([m.publish_time_ns for m in log.select(["motor/wheels"])])
    k = np.searchsorted(cmd_t, rec.t_ns, side="right") - 1
    assert np.all(k >= 0) and np.all(cmd_t[k] <= rec.t_ns)
    assert np.all(np.diff(rec.t_ns) >= 0)


def test_training_lowers_validation_loss(trained):
    _, rep, proc = trained
    hist = rep["history"]
    assert len(hist) == 6
    # the weights kept are the best epoch's (on a camera whose DVS events are pushed at
    # their own times the validation loss moves up and down between epochs)
    best = hist[rep["best_epoch"] - 1]["val_loss"]
    assert best == min(h["val_loss"] for h in hist)
    assert best < 0.5 * hist[0]["val_loss"]
    assert best < 0.2  # predicting the mean scores 1.0 (normalised MSE)
    assert all(h["ops_ratio_estimate"] > 0 for h in hist)
    assert "engine = rounding network: True" in proc.stdout
    assert rep["train_seconds"] > 0 and rep["n_train_samples"] > 1000


def test_conversion_trades_error_for_ops(trained):
    folder, rep, _ = trained
    curve = {c["lambda"]: c for c in rep["curve"]}
    assert sorted(curve) == [0.0, 0.05, 1.0]
    ops = [curve[lam]["ops"] for lam in (0.0, 0.05, 1.0)]
    assert ops[2] < ops[0] and ops[1] < ops[0], ops
    assert curve[1.0]["error"] < 0.5
    assert rep["picked"]["lambda"] == rep["lambda"] == 0.05
    png = (folder / "out/curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep["engine_check"]["bit_exact"]
    assert rep["engine_check"]["engine_ops"] == rep["engine_check"]["rounding_ops"] > 0


def _rounding_network(g: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node's sent/k from the nodes' own frame-based values (no JAX)."""
    rg = g.resolve()
    val: dict[str, np.ndarray] = {}
    for name in rg.order:
        node = rg.nodes[name]
        if node.type == "input":
            v = inputs[name]
        else:
            ports = {
                f: np.concatenate([val[s] for s in src]) for f, src in node.source_fields().items()
            }
            v = node.dense(ports)
        val[name] = round_half_away_array(node.scale * v) / node.scale
    return val


def test_engine_equals_rounding_network_on_held_out_recording(trained):
    folder, _, _ = trained
    g = Graph.load(folder / "out/learned.npz")
    rec = load_recording(folder / "rec_val.mcap", {"camera": 192, "gyro": 1}, "motor/wheels")
    eng = Engine(g)
    eng.start(int(rec.pushes[0][1]))
    n_checked = 0
    for j, (name, t, ch, co) in enumerate(rec.pushes):
        eng.push(t, name, ch, co)
        i = j - int(rec.sample_push[0])
        if i < 0 or i % 7:
            continue
        want = _rounding_network(g, {n: tr.rows[tr.index[i]] for n, tr in rec.inputs.items()})
        for node in want:
            if g.nodes[node].type != "input":
                assert np.array_equal(eng.node_value(node), want[node]), (node, i)
        n_checked += 1
    assert n_checked > 100
    # the learned graph drives the normal tools: offline replay gives motor commands
    res = replay_offline(folder / "rec_val.mcap", g, keep_motor=True)
    assert res.n_motor_commands > 50
    err = np.array([m.values for m in res.motor[-20:]]) - rec.target[-1]
    assert np.abs(err).max() < 1.0


def _replace_block(text: str, edit: str) -> str:
    """``text`` with the top-level block ``edit`` starts with replaced by ``edit``."""
    key = edit.split(":")[0] + ":"
    out, skip = [], False
    for ln in text.splitlines():
        skip = ln.startswith(key) or (skip and ln.startswith(" "))
        if not skip:
            out.append(ln)
    return "\n".join(out + [edit]) + "\n"


@pytest.mark.parametrize(
    "edit,where",
    [
        ("fit: {epochs: 0}", "fit.epochs"),
        ("convert: {lambdas: [0.0], pick: 0.5}", "convert"),
        ("network: {image_input: nope, vector_inputs: [gyro]}", "network"),
        ("output: {graph: g.npz, report: r.json, bogus: 1}", "output.bogus"),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path, edit, where):
    cfg = make_dataset(tmp_path, epochs=1, steps=1)
    cfg.write_text(_replace_block(cfg.read_text(), edit))
    proc = _cli("train", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}:" in proc.stderr and where in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_split_is_by_recording_and_missing_data_is_named(tmp_path):
    cfg = make_dataset(tmp_path, epochs=1, steps=1)
    text = cfg.read_text()
    cfg.write_text(text.replace("validation: [rec_val.mcap]", "validation: [rec_0.mcap]"))
    proc = _cli("train", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2 and "both train and validation" in proc.stderr, proc.stderr
    cfg.write_text(text.replace("motor/wheels", "motor/arm"))
    proc = _cli("train", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2 and "no MotorCommand on 'motor/arm'" in proc.stderr, proc.stderr
    assert "motor/wheels" in proc.stderr
    cfg.write_text(text.replace("rec_val.mcap", "missing_*.mcap"))
    proc = _cli("train", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2 and "no recording matches" in proc.stderr, proc.stderr


def test_engine_daemon_and_drivers_never_import_jax():
    code = (
        "import sys\n"
        "import spikefuse.engine, spikefuse.core.daemon, spikefuse.core.fusion\n"
        "import spikefuse.drivers.camera, spikefuse.drivers.imu, spikefuse.actuators.base\n"
        "import spikefuse.recording.offline, spikefuse.train.config, spikefuse.train.dataset\n"
        "from spikefuse.cli import build_parser\n"
        "build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'optax'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "[]"
