"""A host behind a real network interface: one agent in its own network namespace, joined
to the launcher's by a veth pair, so the cross-host traffic (control, CURVE handshakes,
sensor events) really crosses an interface with non-loopback addresses.

Needs root and ``ip netns`` (Debian package iproute2). Without root, or where the kernel
refuses a namespace (a container without CAP_NET_ADMIN), the test is skipped with the
reason; under CI (CI=true) a missing ``ip`` command fails it instead, naming the package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _agent_util import agent_config, demo_split, launch, live_cmds, pids, start_agent
from _core_util import pid_alive, stop, wait_until

from spikefuse.transport.security import generate_keypair

ID = os.getpid() % 100000
NS = f"sf-agent-{ID}"
VETH_HOST, VETH_NS = f"sfa{ID}h", f"sfa{ID}n"
SUBNET = f"10.{200 + ID % 50}.{ID % 250}"
HOST_IP, NS_IP = f"{SUBNET}.1", f"{SUBNET}.2"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def netns():
    if shutil.which("ip") is None:
        msg = "the 'ip' command is missing: install the Debian package iproute2"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    if os.geteuid() != 0:
        pytest.skip(f"network namespaces need root (running as uid {os.geteuid()})")
    made = _ip("netns", "add", NS, check=False)
    if made.returncode != 0:
        pytest.skip(f"'ip netns add' refused here: {made.stderr.strip()}")
    try:
        _ip("link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        _ip("link", "set", VETH_NS, "netns", NS)
        _ip("addr", "add", f"{HOST_IP}/24", "dev", VETH_HOST)
        _ip("link", "set", VETH_HOST, "up")
        _ip("-n", NS, "addr", "add", f"{NS_IP}/24", "dev", VETH_NS)
        _ip("-n", NS, "link", "set", VETH_NS, "up")
        _ip("-n", NS, "link", "set", "lo", "up")
        yield NS
    finally:
        _ip("link", "del", VETH_HOST, check=False)
        _ip("netns", "del", NS, check=False)


def _rx_bytes() -> int:
    return int(Path(f"/sys/class/net/{VETH_HOST}/statistics/rx_bytes").read_text())


def test_drivers_in_a_network_namespace_feed_the_core_across_a_veth_pair(tmp_path, netns):
    key_dir = tmp_path / "keys"
    for n in ["bus", "launch", "imu", "camera", "core", "motors", "arm"]:
        generate_keypair(key_dir, n)
    port = 7600
    security = {
        "secret_key_file": str(key_dir / "arm.key_secret"),
        "allowed_client_keys": [str(key_dir / "launch.key")],
    }
    cfg = agent_config(tmp_path, "arm", port, endpoint=f"tcp://{NS_IP}:{port}", security=security)
    agent, areader = start_agent(cfg, "ip", "netns", "exec", netns)
    hosts = {"arm": {"endpoint": f"tcp://{NS_IP}:{port}", "public_key": str(key_dir / "arm.key")}}
    csv = tmp_path / "m.csv"
    path = demo_split(
        tmp_path,
        hosts,
        {"imu": "arm", "camera": "arm"},  # core and motors stay on the launcher's machine
        csv,
        security={"key_dir": str(key_dir)},
        local_address=HOST_IP,
    )
    rx0 = _rx_bytes()
    proc, reader = launch(path)
    try:
        assert wait_until(lambda: live_cmds(csv) > 5, 60.0, 0.05), reader.text() + areader.text()
        text = reader.text()
        assert re.search(rf"^\[imu\] .*publishing on tcp://{re.escape(NS_IP)}:", text, re.M), text
        assert f"inputs.gyro.endpoint=tcp://{NS_IP}:" in text
        assert wait_until(lambda: _rx_bytes() - rx0 > 100_000, 30.0, 0.1)  # events crossed it
        started = pids(reader)
    finally:
        rc = stop(proc, 30)
    text = reader.text()
    assert rc == 0, text
    for name in ("imu", "camera"):  # their pids are the agent's namespace's pid space too
        assert wait_until(lambda n=name: not pid_alive(started[n]), 10.0), name
    assert areader.wait_for(lambda ln: "every process stopped" in ln, 10.0) is not None
    stop(agent, 15)
    assert "Traceback" not in areader.text()
