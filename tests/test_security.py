"""CurveZMQ on every socket of real processes: the core's inputs accept only listed,
correctly keyed publishers (unkeyed, unlisted and wrong-secret ones get nothing applied),
and one ``security:`` block in a launch file turns it on for the whole system."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _core_util import LineReader, spawn, stop, write_yaml

from spikefuse.graph import Graph
from spikefuse.protocol import EventBatch, MotorCommand, Status
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.security import generate_keypair
from spikefuse.transport.subscriber import Subscriber

REPO = Path(__file__).resolve().parents[1]
SENDERS = ("good", "unkeyed", "unlisted", "wrong_secret")


def _keys(key_dir: Path) -> dict[str, tuple[Path, Path]]:
    keys = {n: generate_keypair(key_dir, n) for n in ("bus", "core", "good", "rogue")}
    # a file that claims good's public key but holds rogue's secret
    good_public = keys["good"][0].read_text().split('public-key = "')[1].split('"')[0]
    rogue_secret = keys["rogue"][1].read_text().split('secret-key = "')[1].split('"')[0]
    forged = key_dir / "forged.key_secret"
    forged.write_text(
        f'metadata\ncurve\n    public-key = "{good_public}"\n    secret-key = "{rogue_secret}"\n'
    )
    keys["forged"] = (keys["good"][0], forged)
    return keys


def _graph(path: Path) -> Path:
    g = Graph("sec")
    for name in SENDERS:
        g.input(name, 1, scale=1.0)
        g.output(f"y_{name}", name, scale=1.0)
    return g.save(path)


def _batch(sensor: str, seq: int) -> EventBatch:
    one = np.ones(1, np.int32)
    return EventBatch(sensor, seq, time.monotonic_ns(), sensor, 1.0, np.zeros(1, np.int32), one)


def test_core_inputs_accept_only_listed_keyed_publishers(tmp_path):
    keys = _keys(tmp_path / "keys")
    core_security = {
        "secret_key_file": "keys/core.key_secret",
        "server_public_key_file": "keys/bus.key",
        "server_secret_key_file": "keys/bus.key_secret",
        "allowed_client_keys": ["keys/good.key"],
    }
    inputs = {
        n: {"sensor": n, "endpoint": f"ipc://{tmp_path}/{n}.sock", "timeout_s": 30.0}
        for n in SENDERS
    }
    cfg = write_yaml(
        tmp_path / "core.yaml",
        {
            "graph": "g.npz",
            "run_dir": str(tmp_path),
            "security": core_security,  # relative key paths follow the config file
            "inputs": inputs,
            "actuators": {"motors": {"output": "y_good"}},
            "status_period_s": 0.2,
            # each batch counted on its own: under load, "coalesce" (the default) may merge
            # two of good's batches into one applied batch (same sum, one count fewer)
            "queue_policy": "keep",
        },
    )
    _graph(tmp_path / "g.npz")
    bus_public = keys["bus"][0]

    def client(secret: Path) -> SecurityConfig:
        return SecurityConfig(secret_key_file=secret, server_public_key_file=bus_public)

    pubs = {
        "good": Publisher(inputs["good"]["endpoint"], security=client(keys["good"][1])),
        "unkeyed": Publisher(inputs["unkeyed"]["endpoint"]),
        "unlisted": Publisher(inputs["unlisted"]["endpoint"], security=client(keys["rogue"][1])),
        "wrong_secret": Publisher(
            inputs["wrong_secret"]["endpoint"], security=client(keys["forged"][1])
        ),
    }
    # the test listens like an actuator: a receiver under the bus key that accepts the core
    sub_security = SecurityConfig(
        secret_key_file=keys["bus"][1], allowed_client_keys=[keys["core"][0]]
    )
    sub = Subscriber(f"ipc://{tmp_path}/core.sock", ["status/", "motor/"], security=sub_security)
    proc = spawn("core", "--config", str(cfg))
    try:
        assert pubs["good"].wait_for_subscribers(1, 20.0), "the keyed publisher got no handshake"
        n = 50
        for seq in range(n):
            for name, pub in pubs.items():
                pub.send(_batch(name, seq))
            time.sleep(0.002)
        status, motor = None, None
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            m = sub.recv(0.5)
            if isinstance(m, MotorCommand):
                motor = m
            if isinstance(m, Status) and m.source == "core":
                status = m
                if m.metrics["inputs"]["good"]["n_batches"] == n and motor is not None:
                    if motor.values[0] == n:
                        break
        assert proc.poll() is None, proc.stdout.read()
        assert status is not None, "no status from the core (its output is keyed too)"
        applied = {k: status.metrics["inputs"][k]["n_batches"] for k in SENDERS}
        assert applied == {"good": n, "unkeyed": 0, "unlisted": 0, "wrong_secret": 0}
        assert motor is not None and motor.values[0] == n
        for name in ("unkeyed", "unlisted", "wrong_secret"):
            assert pubs[name].n_subscriptions == 0, f"{name} completed a handshake"
        assert status.metrics["n_auth_denied"] >= 1  # the unlisted key, refused by ZAP
    finally:
        rc = stop(proc)
        for pub in pubs.values():
            pub.close()
        sub.close()
    assert rc == 0


def _keygen(key_dir: Path, name: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "spikefuse", "keygen", name, "--dir", str(key_dir)],
        check=True,
        capture_output=True,
    )


def _count(sub: Subscriber, seconds: float) -> int:
    n, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += len(sub.recv_many(0.1))
    return n


def test_one_security_block_keys_a_whole_launch(tmp_path):
    """``security: {key_dir: ...}`` on the demo launch (set from the command line here): every
    process gets its key pair, the receiving pair and the allow-list; the system works end
    to end, a keyed listener hears the core and a plaintext one hears nothing."""
    key_dir = tmp_path / "keys"
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "spikefuse", "launch", str(REPO / "launch/demo.yaml")]
    argv += ["--duration", "6", "--set", f"security.key_dir={key_dir}"]
    env = {**os.environ, "SPIKEFUSE_RUN_DIR": str(run_dir)}
    missing = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "security.key_dir" in missing.stderr and "spikefuse keygen bus" in missing.stderr
    for name in ("bus", "launch", "imu", "camera", "core", "motors"):
        _keygen(key_dir, name)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    reader = LineReader(proc)
    keyed = SecurityConfig(
        secret_key_file=key_dir / "bus.key_secret", allowed_client_keys=[key_dir / "core.key"]
    )
    try:
        assert reader.wait_for(lambda ln: "started motors" in ln, 30.0), reader.text()
        with (
            Subscriber(f"ipc://{run_dir}/core.sock", ["status/core"], security=keyed) as good,
            Subscriber(f"ipc://{run_dir}/core.sock", ["status/core"]) as plain,
        ):
            assert good.recv(10.0) is not None, "a keyed listener hears nothing from the core"
            assert _count(plain, 1.5) == 0, "a plaintext listener heard the keyed core"
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = reader.text()
    assert proc.returncode == 0, out
    core_line = next(ln for ln in out.splitlines() if "core 'core':" in ln and "batches" in ln)
    n_batches = int(core_line.split("core 'core':")[1].split("batches")[0].split()[-1])
    assert n_batches > 100, core_line
    act_line = next(ln for ln in out.splitlines() if "actuator 'motors':" in ln)
    assert int(act_line.split("actuator 'motors':")[1].split("commands")[0]) > 10, act_line


def test_key_paths_in_every_kind_of_config_follow_their_file(tmp_path):
    # a hand-written driver, actuator or core config names its keys relative to itself,
    # wherever the process is started from
    from spikefuse.actuators.base import load_actuator_config, resolve_actuator
    from spikefuse.core.config import load_core_config
    from spikefuse.sdk.registry import load_driver_config, resolve_kind

    sub = tmp_path / "cfg"
    sub.mkdir()
    sec = {"secret_key_file": "keys/me.key_secret", "allowed_client_keys": ["keys/a.key"]}
    want = (sub / "keys/me.key_secret", [sub / "keys/a.key"])
    drv = write_yaml(sub / "imu.yaml", {"source": {"type": "synthetic"}, "security": sec})
    act = write_yaml(sub / "act.yaml", {"security": sec})
    core = write_yaml(
        sub / "core.yaml",
        {
            "graph": str(_graph(tmp_path / "g.yaml")),
            "inputs": {SENDERS[0]: {"sensor": "s"}},
            "security": sec,
        },
    )
    configs = [
        load_driver_config(resolve_kind("imu"), drv),
        load_actuator_config(resolve_actuator("console"), act),
        load_core_config(core),
    ]
    for cfg in configs:
        s = cfg.resolved_security()
        assert (s.secret_key_file, list(s.allowed_client_keys)) == want, type(cfg).__name__
