"""``spikefuse keygen``: key files usable by the bus, secret kept private, no overwrite."""

from __future__ import annotations

import stat
import subprocess
import sys

from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber


def _keygen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spikefuse", "keygen", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keygen_writes_a_private_pair_and_refuses_to_overwrite(tmp_path):
    keys = tmp_path / "keys"
    res = _keygen("imu", "--dir", str(keys))
    assert res.returncode == 0, res.stderr
    public, secret = keys / "imu.key", keys / "imu.key_secret"
    assert f"public key: {public}" in res.stdout
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" in secret.read_text() and "secret-key" not in public.read_text()
    before = secret.read_text()

    res = _keygen("imu", "--dir", str(keys))
    assert res.returncode == 2 and "exists" in res.stderr and "--force" in res.stderr
    assert secret.read_text() == before

    secret.chmod(0o644)
    assert _keygen("imu", "--dir", str(keys), "--force").returncode == 0
    assert secret.read_text() != before  # a new pair ...
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600  # ... private again

    assert _keygen("../evil", "--dir", str(keys)).returncode == 2


def test_generated_keys_secure_a_real_connection(tmp_path):
    for name in ("server", "client"):
        assert _keygen(name, "--dir", str(tmp_path)).returncode == 0
    sub_sec = SecurityConfig(
        secret_key_file=tmp_path / "server.key_secret",
        allowed_client_keys=[tmp_path / "client.key"],
    )
    pub_sec = SecurityConfig(
        secret_key_file=tmp_path / "client.key_secret",
        server_public_key_file=tmp_path / "server.key",
    )
    with Publisher("tcp://127.0.0.1:*", security=pub_sec) as pub:
        with Subscriber(pub.endpoint, security=sub_sec) as sub:
            assert pub.wait_for_subscribers(1, 10.0)
            from spikefuse.protocol import Heartbeat

            pub.send(Heartbeat("client", 0, 1, "ok"))
            assert sub.recv(10.0) == Heartbeat("client", 0, 1, "ok")
