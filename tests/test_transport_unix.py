"""``unix://`` endpoints (spikefuse.transport.unix) behind Publisher and Subscriber, over
real AF_UNIX sockets in tmp_path and real child processes."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from _core_util import read_csv_rows, stop, wait_recorded, write_yaml

from spikefuse.errors import BusError, ConfigError
from spikefuse.graph import Graph
from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status, encode
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber

TIMEOUT_S = 10.0
NOBODY = 65534


def _batch(seq: int, channels=(0, 1), counts=(1, -1), sensor="imu", size: int = 0):
    if size:
        channels, counts = np.arange(size) % 1000, np.ones(size)
    return EventBatch(
        sensor, seq, time.monotonic_ns(), "gyro", 16.0,
        np.asarray(channels, np.int32), np.asarray(counts, np.int32),
    )  # fmt: skip


@pytest.fixture
def ep(tmp_path):
    return Endpoint.unix(tmp_path, "bus")


def _recv_n(sub, n, timeout_s=TIMEOUT_S):
    out = []
    deadline_s = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline_s:
        out.extend(sub.recv_many(0.2))
    return out


def _child(code: str, *args: str, **kw) -> subprocess.Popen:
    """A child Python process running ``code`` (sys.argv[1:] = args), lines on stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, f"child ended: {proc.stderr.read()[-2000:]}"
    return line.strip()


# ------------------------------------------------------------------ pub/sub semantics


def test_roundtrip_fan_out_and_topic_filter(ep):
    msgs = [
        _batch(0),
        Heartbeat("imu", 0, 5, "ok"),
        MotorCommand("wheels", 0, 6, 5, np.array([0.1, -0.2])),
        Status("engine", 0, 7, {"load": 0.5}),
    ]
    with (
        Publisher(ep) as pub,
        Subscriber(ep) as sub_all,
        Subscriber(ep, ["sensor/", "status/"]) as sub_some,
    ):
        assert pub.wait_for_subscribers(3, TIMEOUT_S)  # "" + two prefixes
        assert pub.n_subscribed(b"sensor/imu") == 2 and pub.n_subscribed(b"motor/wheels") == 1
        for m in msgs:
            assert pub.send(m)
        assert _recv_n(sub_all, 4) == msgs
        assert _recv_n(sub_some, 3) == [msgs[0], msgs[1], msgs[3]]
        assert sub_all.recv(0) is None and sub_some.recv(0) is None
        assert sub_all.stats.n_received == 4 and sub_all.stats.n_rejected == 0
        assert pub.n_sent == 4 and pub.n_dropped == 0
        # unsubscribing is seen by the publisher
        sub_some.unsubscribe(["sensor/"])
        deadline = time.monotonic() + TIMEOUT_S
        while pub.n_subscribed(b"sensor/imu") != 1 and time.monotonic() < deadline:
            pub.wait_notice(0.05)
            pub.poll_subscriptions()
        assert pub.n_subscribed(b"sensor/imu") == 1
    assert pub.closed and sub_all.closed
    assert not ep.socket_path.exists()  # the publisher removes its own file


def test_a_child_publisher_reaches_two_subscribers_and_large_messages_pass(ep):
    """Fan-out from a real child process; a message longer than a datagram's inline limit
    (here 1.2 MB) travels in a memfd and arrives whole."""
    code = """
        import sys, time, numpy as np
        from spikefuse.protocol import EventBatch
        from spikefuse.transport.publisher import Publisher
        with Publisher(sys.argv[1]) as pub:
            assert pub.wait_for_subscribers(2, 30.0)
            for seq in range(50):
                n = 300_000 if seq == 25 else 2
                b = EventBatch("imu", seq, seq, "gyro", 16.0, np.arange(n, dtype=np.int32),
                               np.full(n, seq, np.int32))
                assert pub.send(b)
            print("sent", pub.n_sent, pub.n_dropped, flush=True)
            sys.stdin.readline()
    """
    with Subscriber(ep, ["sensor/"]) as a, Subscriber(ep, ["sensor/imu"]) as b:
        proc = _child(code, ep)  # the subscribers were first: they connect when it binds
        try:
            got_a, got_b = _recv_n(a, 50), _recv_n(b, 50)
            assert _line(proc) == "sent 50 0"
        finally:
            proc.stdin.close()
            assert proc.wait(TIMEOUT_S) == 0
    for got in (got_a, got_b):
        assert [m.seq for m in got] == list(range(50))
        big = got[25]
        assert big.channels.size == 300_000 and np.all(big.counts == 25)
        assert np.array_equal(big.channels, np.arange(300_000))


_PUBLISHER = """
    import sys, numpy as np
    from spikefuse.protocol import EventBatch
    from spikefuse.transport.publisher import Publisher
    with Publisher(sys.argv[1]) as pub:
        assert pub.wait_for_subscribers(1, 30.0)
        print("ready", flush=True)
        for line in sys.stdin:
            seq = int(line)
            pub.send(EventBatch("imu", seq, seq, "gyro", 1.0, np.array([0], np.int32),
                                np.array([1], np.int32)))
            print("sent", seq, flush=True)
"""


def _await_line(proc: subprocess.Popen, sub: Subscriber) -> str:
    """The child's next line, ``sub`` waiting meanwhile (waiting is what connects it)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0)[0]:
            return _line(proc)
        assert sub.recv(0.05) is None
    raise AssertionError("no line from the child")


def test_reconnect_after_the_publisher_restarts_and_a_stale_file_is_replaced(ep):
    """The subscriber starts first; the publisher child binds, sends, is killed (SIGKILL:
    its socket file stays behind, stale), a new one binds over the stale file and the
    subscriber, still waiting, reconnects by itself and gets its messages too."""
    with Subscriber(ep) as sub:
        got = []
        for _ in range(2):
            proc = _child(_PUBLISHER, ep)
            try:
                assert _await_line(proc, sub) == "ready"
                for seq in (0, 1, 2):
                    proc.stdin.write(f"{seq}\n")
                    proc.stdin.flush()
                    assert _line(proc) == f"sent {seq}"
                got.extend(_recv_n(sub, 3))
            finally:
                proc.kill()
                proc.wait()
            assert stat.S_ISSOCK(os.lstat(ep.address).st_mode)  # left behind by the kill
        assert [m.seq for m in got] == [0, 1, 2, 0, 1, 2]
        assert sub.stats.seq_resets == {"sensor/imu/gyro": 1}  # the restart, counted
        assert sub._unix.n_connects == 2


def test_a_slow_subscriber_drops_without_blocking_and_is_counted(ep):
    """A child subscriber that does not read while the publisher sends 60 000 messages:
    the sends never block, the messages its socket could not take are counted as drops,
    a subscriber that keeps up misses none, and the slow one gets exactly the rest."""
    code = """
        import sys
        from spikefuse.transport.subscriber import Subscriber
        with Subscriber(sys.argv[1], ["sensor/"]) as sub:
            while sub._unix.n_connected == 0:
                sub.recv_frames(0.05)
            print("connected", flush=True)
            sys.stdin.readline()  # asleep while the publisher floods
            n = 0
            while frames := sub.recv_frames(2.0, 100_000):
                n += len(frames)
            print(n, flush=True)
    """
    n_msgs = 60_000
    with Publisher(ep) as pub, Subscriber(ep, ["sensor/"], max_queue=n_msgs) as fast:
        proc = _child(code, ep)
        try:
            assert _line(proc) == "connected"
            assert pub.wait_for_subscribers(2, TIMEOUT_S)
            n_fast = 0
            worst_s = 0.0
            for seq in range(n_msgs):
                t0 = time.perf_counter()
                pub.send_payload(b"sensor/imu", b"x" * 100)
                worst_s = max(worst_s, time.perf_counter() - t0)
                if seq % 100 == 99:
                    n_fast += len(fast.recv_frames(0, 100_000))
            while frames := fast.recv_frames(1.0, 100_000):
                n_fast += len(frames)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            n_slow = int(_line(proc))
        finally:
            proc.stdin.close()
            proc.wait(TIMEOUT_S)
    assert pub.n_dropped > 0, "the slow subscriber's socket never filled"
    assert n_fast == n_msgs
    assert n_slow == n_msgs - pub.n_dropped
    assert pub.n_sent + pub.n_dropped == n_msgs
    assert worst_s < 1.0  # a full peer is a drop, not a wait (wide bound for a loaded host)


def test_a_retry_after_a_drop_reaches_only_who_missed_it(ep):
    """Fast replay retries a send that returned False (``retry_dropped``): the subscribers
    that already have the message do not get it twice (as with ZeroMQ's all-or-nothing
    high-water mark)."""
    with Publisher(ep) as pub, Subscriber(ep) as slow, Subscriber(ep) as fast:
        assert pub.wait_for_subscribers(2, TIMEOUT_S)
        payloads = [encode(_batch(seq)) for seq in range(40_000)]
        n_fast = n_retries = 0
        for seq, payload in enumerate(payloads):
            ok = pub.send_payload(b"sensor/imu", payload)
            while not ok:
                n_retries += 1
                # the slow one drains only now; the fast one is drained all along
                n_fast += len(fast.recv_frames(0, 100_000))
                slow.recv_frames(0, 100_000)
                assert pub.wait_writable(TIMEOUT_S)
                ok = pub.retry_dropped()
            if seq % 50 == 49:
                n_fast += len(fast.recv_frames(0, 100_000))
        while frames := fast.recv_frames(1.0, 100_000):
            n_fast += len(frames)
    assert n_retries > 0
    assert n_fast == len(payloads)  # none twice


def test_mixed_zmq_and_unix_endpoints_in_one_subscriber(tmp_path):
    """One subscriber on an ipc:// and a unix:// publisher waits on both in one poll and
    dispatches both, in arrival order per publisher."""
    ipc, unix = Endpoint.ipc(tmp_path, "z"), Endpoint.unix(tmp_path, "u")
    with Publisher(ipc) as pz, Publisher(unix) as pu, Subscriber([ipc, unix]) as sub:
        assert pz.wait_for_subscribers(1, TIMEOUT_S) and pu.wait_for_subscribers(1, TIMEOUT_S)
        assert sub.endpoints == [str(ipc), str(unix)]
        raw_seen, decoded = [], []

        def raw(topic, payload):
            raw_seen.append(topic)
            return topic == b"sensor/a"  # taken raw; the rest decoded

        for seq in range(20):
            pz.send(_batch(seq, sensor="a"))
            pu.send(_batch(seq, sensor="b"))
        deadline = time.monotonic() + TIMEOUT_S
        while len(raw_seen) < 40 and time.monotonic() < deadline:
            sub.dispatch(0.2, raw, decoded.append)
        assert len(raw_seen) == 40
        assert [m.seq for m in decoded] == list(range(20))  # b's, in order
        assert {m.sensor for m in decoded} == {"b"}


# --------------------------------------------------------------- endpoints, errors


def test_endpoint_rules_and_bad_endpoint_errors(tmp_path):
    e = Endpoint(f"unix://{tmp_path}/a.sock")
    assert e.scheme == "unix" and e.is_local and e.socket_path == tmp_path / "a.sock"
    assert e.ipc_path is None
    assert Endpoint.unix(tmp_path, "x") == f"unix://{tmp_path.absolute()}/x.sock"
    with pytest.raises(ConfigError, match="longer than 107 bytes"):
        Endpoint("unix:///" + "d" * 120)
    with pytest.raises(ConfigError, match="empty address"):
        Endpoint("unix://")
    with pytest.raises(ConfigError, match="needs a socket file path"):
        Endpoint(f"unix://{tmp_path}/")
    ep = Endpoint.unix(tmp_path, "bus")
    with pytest.raises(ConfigError, match="publisher cannot connect"):
        Publisher(ep, bind=False)
    with pytest.raises(ConfigError, match="subscriber cannot bind"):
        Subscriber(ep, bind=True)
    from spikefuse.transport.aio import AsyncSubscriber
    from spikefuse.transport.raw import RawSocket

    with pytest.raises(ConfigError, match="ZeroMQ endpoints only"):
        AsyncSubscriber(ep)
    with pytest.raises(ConfigError, match="publishers and subscribers only"):
        RawSocket("pub", ep, bind=True)
    (tmp_path / "file.sock").write_text("not a socket")
    with pytest.raises(BusError, match="exists and is not a socket"):
        Publisher(Endpoint.unix(tmp_path, "file"))
    assert (tmp_path / "file.sock").read_text() == "not a socket"  # never removed
    with Publisher(ep), pytest.raises(BusError, match="another process is publishing"):
        Publisher(ep)
    zmq_there = Endpoint.ipc(tmp_path, "z")
    with Publisher(zmq_there), pytest.raises(BusError, match="in use or not ours"):
        Publisher(Endpoint.unix(tmp_path, "z"))  # a live ZeroMQ listener is never replaced


def test_curve_keys_on_a_unix_endpoint_are_a_config_error_naming_the_field(tmp_path):
    sec = SecurityConfig(secret_key_file=tmp_path / "k.key_secret")
    ep = Endpoint.unix(tmp_path, "bus")
    for make in (lambda: Publisher(ep, security=sec), lambda: Subscriber(ep, security=sec)):
        with pytest.raises(ConfigError, match="CurveZMQ keys do not apply to unix://") as exc:
            make()
        assert "security.secret_key_file" in str(exc.value)
    assert not ep.socket_path.exists()
    # through a process's config: exit 2, the field named, no traceback
    cfg = write_yaml(
        tmp_path / "drv.yaml",
        {
            "name": "imu",
            "endpoint": str(ep),
            "security": {"secret_key_file": str(tmp_path / "k.key_secret")},
            "source": {"type": "synthetic"},
        },
    )
    r = subprocess.run(
        [sys.executable, "-m", "spikefuse", "driver", "imu", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "security.secret_key_file" in r.stderr and "unix://" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------- security


def _as_nobody_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="sf-unix-", dir="/tmp"))
    os.chmod(d, 0o777)
    return d


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a child as another uid")
def test_socket_file_is_owner_only_and_other_users_are_refused():
    """The socket file is 0600 (another user cannot even connect); made reachable on
    purpose, the other user's connection is refused by its uid (SO_PEERCRED), counted and
    gets nothing. The other way round, a publisher of another user is refused by the
    subscriber."""
    d = _as_nobody_dir()
    try:
        ep = Endpoint.unix(d, "bus")
        intruder = f"""
            import os, socket, sys
            from spikefuse.transport.subscriber import Subscriber
            os.setgid({NOBODY}); os.setuid({NOBODY})
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                s.connect(sys.argv[1].removeprefix("unix://"))
                print("connected", flush=True)
            except OSError as exc:
                print(type(exc).__name__, flush=True)
            sys.stdin.readline()  # the file is opened up now
            with Subscriber(sys.argv[1]) as sub:
                got = sub.recv_many(3.0)
                print(len(got), flush=True)
        """
        with Publisher(ep) as pub:
            assert stat.S_IMODE(os.stat(ep.address).st_mode) == 0o600
            proc = _child(intruder, ep)
            try:
                assert _line(proc) == "PermissionError"
                os.chmod(ep.address, 0o666)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                deadline = time.monotonic() + TIMEOUT_S
                while pub.n_auth_denied == 0 and time.monotonic() < deadline:
                    pub.wait_notice(0.05)
                    pub.poll_subscriptions()
                assert pub.n_auth_denied >= 1
                while proc.poll() is None:
                    pub.send(_batch(0))
                    pub.wait_notice(0.01)
                assert _line(proc) == "0"
                assert pub.n_subscribed(b"sensor/imu") == 0
            finally:
                proc.kill()
                proc.wait()

        impostor = f"""
            import os, sys
            from spikefuse.protocol import Heartbeat
            from spikefuse.transport.publisher import Publisher
            os.setgid({NOBODY}); os.setuid({NOBODY})
            with Publisher(sys.argv[1]) as pub:
                print("bound", flush=True)
                for line in sys.stdin:
                    pub.send(Heartbeat("imu", 0, 1, "ok"))
        """
        ep2 = Endpoint.unix(d, "other")
        proc = _child(impostor, ep2)
        try:
            assert _line(proc) == "bound"
            with Subscriber(ep2) as sub:
                deadline = time.monotonic() + TIMEOUT_S
                while sub.stats.n_auth_denied == 0 and time.monotonic() < deadline:
                    sub.recv(0.05)
                assert sub.stats.n_auth_denied >= 1
                proc.stdin.write("x\n")
                proc.stdin.flush()
                assert sub.recv(0.5) is None and sub.stats.n_received == 0
        finally:
            proc.kill()
            proc.wait()
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


# ------------------------------------------------------------------- the whole chain

_LEVEL_DRIVER = """
import sys
from pathlib import Path

from spikefuse.sdk import DriverConfig, driver, main


class LevelConfig(DriverConfig):
    default_groups = {"level": {"scale": 10.0, "rate_hz": 200.0}}
    name: str = "tank"
    path: Path = Path("level")


@driver("level", LevelConfig)
def LEVEL(cfg, ctx):
    path = cfg.resolve_path(cfg.path)
    yield from ctx.poll({"level": lambda t_ns: [float(path.read_text())]})


if __name__ == "__main__":
    sys.exit(main(LEVEL))
"""


def _last_cmd(csv: Path) -> float | None:
    rows = [r for r in read_csv_rows(csv) if r[1] == "cmd"]
    return float(rows[-1][4]) if rows else None


def test_sdk_driver_core_actuator_chain_over_unix_ends_on_the_exact_sum(tmp_path):
    """A real SDK driver -> ``spikefuse core`` -> ``spikefuse actuator console``, both hops
    on unix:// endpoints, started actuator first (any order): the motor follows the
    driver's value and ends exactly on it (the sum of every count sent)."""
    run = tmp_path / "run"
    sensor_ep, core_ep = Endpoint.unix(run, "tank-u"), Endpoint.unix(run, "core-u")
    g = Graph("pass")
    g.input("level", 1, scale=10.0)
    g.output("y", "level", scale=10.0)
    g.save(tmp_path / "g.npz")
    (tmp_path / "drv.py").write_text(_LEVEL_DRIVER)
    level = tmp_path / "level"
    level.write_text("41.0")
    drv_cfg = write_yaml(
        tmp_path / "drv.yaml",
        {
            "name": "tank",
            "run_dir": str(run),
            "endpoint": str(sensor_ep),
            "path": str(level),
            "wait_for_subscribers": 1,
        },
    )
    core_cfg = write_yaml(
        tmp_path / "core.yaml",
        {
            "name": "core",
            "graph": str(tmp_path / "g.npz"),
            "run_dir": str(run),
            "endpoint": str(core_ep),
            "inputs": {"level": {"sensor": "tank", "endpoint": str(sensor_ep), "timeout_s": 30}},
            "actuators": {"motors": {"output": "y"}},
        },
    )
    csv = tmp_path / "act.csv"
    act_cfg = write_yaml(
        tmp_path / "act.yaml",
        {
            "name": "motors",
            "core": "core",
            "run_dir": str(run),
            "endpoint": str(core_ep),
            "n_channels": 1,
            "csv": str(csv),
            "print_hz": 0,
            "deadman_ms": 5000,
        },
    )
    sf = [sys.executable, "-m", "spikefuse", "--log-level", "WARNING"]
    procs = []
    try:
        for argv in (
            [*sf, "actuator", "console", "--config", str(act_cfg)],
            [*sf, "core", "--config", str(core_cfg)],
            [*sf, "driver", f"{tmp_path / 'drv.py'}:LEVEL", "--config", str(drv_cfg)],
        ):
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for want, value in ((41.0, None), (43.5, "43.5"), (-7.3, "-7.3")):
            if value is not None:  # atomically: the driver polls the file at 200 Hz
                (tmp_path / "level.new").write_text(value)
                os.replace(tmp_path / "level.new", level)
            deadline = time.monotonic() + 30.0
            while _last_cmd(csv) != want and time.monotonic() < deadline:
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, [(p.args[5:], p.stdout.read().decode()) for p in dead]
                time.sleep(0.05)
            assert _last_cmd(csv) == want
    finally:
        for p in reversed(procs):
            stop(p)
    outs = [p.stdout.read().decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "Traceback" not in "".join(outs)


def test_the_recorder_records_from_a_unix_endpoint(tmp_path, ep):
    """``spikefuse record --endpoint unix://...`` (a child process) stores every message
    byte for byte."""
    from spikefuse.recording.mcapio import open_log

    out = tmp_path / "r.mcap"
    payloads = [encode(_batch(seq)) for seq in range(200)] + [encode(Heartbeat("imu", 0, 9, "ok"))]
    with Publisher(ep) as pub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spikefuse", "record", "-o", str(out), "--endpoint", ep],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert pub.wait_for_subscribers(1, 30.0), proc.stdout.read1(4096) if proc.poll() else ""
            for p in payloads[:-1]:
                assert pub.send_payload(b"sensor/imu", p)
            assert pub.send_payload(b"sensor/imu", payloads[-1])
            assert wait_recorded(lambda: [out], len(payloads)) == len(payloads)
        finally:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30.0)
    assert rc == 0, proc.stdout.read().decode()
    log = open_log(out)
    got = [m.payload for m in log.messages]
    assert got == payloads


def test_seqpacket_keeps_message_boundaries_under_the_wire_format(ep):
    """A raw peer speaking the documented wire format is understood; a malformed datagram
    is a counted rejection, never an exception."""
    with Publisher(ep) as pub, Subscriber(ep) as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        peer = next(iter(pub._unix.peers.values())).sock
        payload = encode(_batch(7))
        topic = b"sensor/imu"
        peer.send(b"M" + len(topic).to_bytes(4, "little") + topic + payload)
        peer.send(b"M\xff\xff\xff\x7fjunk")  # a topic longer than the datagram
        peer.send(b"?")
        assert sub.recv(TIMEOUT_S).seq == 7
        assert sub.recv(0.5) is None
        assert sub.stats.n_rejected == 2 and sub.stats.rejected == {"bad_frames": 2}
        assert socket.SOCK_SEQPACKET == peer.type


def test_a_unix_endpoint_does_not_cross_hosts_in_a_launch_file(tmp_path):
    """``spikefuse validate``: a core reading the unix:// socket of a driver placed on
    another host is a config error naming the line and field, as for ipc://."""
    from _agent_util import load_launch_data

    run = tmp_path / "run"
    base = load_launch_data("demo.yaml", {"SPIKEFUSE_RUN_DIR": str(run)})
    edits = {"imu": {"host": "a"}, "core": {"inputs": [f"unix://{run}/imu.sock", "sensor/camera"]}}
    data = {**base, "hosts": {"a": {"endpoint": "tcp://127.0.0.1:7601"}}}
    data["processes"] = [dict(p, **edits.get(p["name"], {})) for p in base["processes"]]
    path = write_yaml(tmp_path / "split.yaml", data)
    r = subprocess.run(
        [sys.executable, "-m", "spikefuse", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert re.search(
        r"split\.yaml:\d+: processes\[\d\]\.inputs\[0\]: unix endpoint .*imu\.sock is 'imu' on "
        r"host a, but 'core' runs on local: unix does not cross hosts",
        r.stderr,
    ), r.stderr


def test_echo_finds_unix_and_ipc_publishers_in_a_run_folder(tmp_path):
    """``spikefuse echo --run-dir``: each ``*.sock`` is named by what listens there (a
    unix:// publisher, a ZeroMQ ipc one, or a stale file: ipc as before)."""
    from spikefuse.transport.unix import endpoint_of_socket_file

    (tmp_path / "dead.sock").touch()
    with (
        Publisher(Endpoint.unix(tmp_path, "u")) as pu,
        Publisher(Endpoint.ipc(tmp_path, "z")) as pz,
    ):
        assert endpoint_of_socket_file(tmp_path / "u.sock") == f"unix://{tmp_path}/u.sock"
        assert endpoint_of_socket_file(tmp_path / "z.sock") == f"ipc://{tmp_path}/z.sock"
        assert endpoint_of_socket_file(tmp_path / "dead.sock") == f"ipc://{tmp_path}/dead.sock"
        proc = subprocess.Popen(
            [sys.executable, "-m", "spikefuse", "echo", "sensor/", "--run-dir", str(tmp_path)]
            + ["--count", "2", "--json", "--duration-s", "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for pub in (pu, pz):
                assert pub.wait_for_subscribers(1, 30.0)
            assert pu.send(_batch(0, sensor="a")) and pz.send(_batch(0, sensor="b"))
            out, err = proc.communicate(timeout=60)
        finally:
            stop(proc)
    assert proc.returncode == 0, err
    assert sorted(json.loads(line)["sensor"] for line in out.splitlines()) == ["a", "b"]


def test_the_compiled_datagram_reader_on_a_real_seqpacket_pair():
    """``DatagramReader.recv``: nothing waiting, inline messages (empty parts too), a
    malformed or over-long datagram as one frame, fds passed with a datagram, the peer's
    end, a bad fd as an OSError."""
    from spikefuse.transport._unixfast import DatagramReader

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.setblocking(False)
    reader = DatagramReader(64, b"M", 5, 16)
    fd = b.fileno()
    try:
        assert reader.recv(fd) is None
        a.send(b"M" + (3).to_bytes(4, "little") + b"top" + b"payload")
        a.send(b"M\0\0\0\0")
        a.send(b"M\x05\0\0\0ab")  # a topic longer than the datagram
        a.send(b"?")
        a.send(bytes(range(100)))  # longer than the reader's buffer
        assert reader.recv(fd) == [b"top", b"payload"]
        assert reader.recv(fd) == [b"", b""]
        assert reader.recv(fd) == [b"M\x05\0\0\0ab"]
        assert reader.recv(fd) == [b"?"]
        assert reader.recv(fd) == [bytes(range(16))]
        assert reader.recv(fd) is None
        m1, m2 = os.memfd_create("t1"), os.memfd_create("t2")
        os.write(m1, b"M\x01\0\0\0tp")
        a.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("2i", m1, m2))])
        got = reader.recv(fd)
        assert type(got) is tuple and len(got) == 2
        assert reader.split(os.pread(got[0], 64, 0)) == [b"t", b"p"]
        for x in (*got, m1, m2):
            os.close(x)
        a.close()
        assert reader.recv(fd) == b""
    finally:
        a.close()
        b.close()
    with pytest.raises(OSError):
        reader.recv(fd)
    assert reader.split(b"") == [b""]
    with pytest.raises(ValueError):
        DatagramReader(64, b"MM", 5, 16)


def test_the_compiled_datagram_sender_gathers_and_reports_each_failure():
    """``DatagramSender.send``: head + payload as one datagram to each fd; a full peer
    (EAGAIN) and a gone one (EPIPE) are reported by position, the others still get it;
    ``pending`` sees a readable fd of the epoll set without taking it."""
    import errno

    from spikefuse.transport._unixfast import DatagramSender

    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]
    ok, full, gone = pairs
    for a, _ in pairs:
        a.setblocking(False)
    gone[1].close()
    while True:  # fill ``full`` until the kernel refuses
        try:
            full[0].send(b"x" * 4096)
        except BlockingIOError:
            break
    ep = select.epoll()
    sender = DatagramSender(ep.fileno())
    try:
        assert not sender.pending()
        fds = (full[0].fileno(), ok[0].fileno(), gone[0].fileno())
        assert sender.send(fds, b"M\x01\0\0\0t", b"payload") == [
            (0, errno.EAGAIN),
            (2, errno.EPIPE),
        ]
        assert ok[1].recv(64) == b"M\x01\0\0\0tpayload"
        assert sender.send((ok[0].fileno(),), b"", b"") is None  # an empty datagram
        ep.register(ok[1].fileno(), select.EPOLLIN)
        assert sender.pending() and sender.pending()  # level-triggered: not taken
        assert ok[1].recv(64) == b""
        assert not sender.pending()
    finally:
        ep.close()
        for a, b in pairs:
            a.close()
            b.close()
