"""The transport package (spikefuse.transport) over real sockets (ipc in tmp_path, tcp on 127.0.0.1 with ephemeral
ports) and real child processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from spikefuse.config import parse_yaml, validate_data
from spikefuse.errors import BusError, ConfigError
from spikefuse.protocol import EventBatch, Heartbeat, MotorCommand, Status, encode
from spikefuse.transport.aio import AsyncPublisher, AsyncSubscriber
from spikefuse.transport.config import PublisherConfig, SecurityConfig, SubscriberConfig
from spikefuse.transport.endpoint import Endpoint
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.queue import InputQueue
from spikefuse.transport.subscriber import Subscriber

TIMEOUT_S = 5.0


def _batch(seq: int, channels=(0, 1), counts=(1, -1), sensor="imu", inp="gyro", scale=16.0):
    return EventBatch(
        sensor, seq, time.monotonic_ns(), inp, scale,
        np.asarray(channels, np.int32), np.asarray(counts, np.int32),
    )  # fmt: skip


@pytest.fixture
def ep(tmp_path):
    return Endpoint.ipc(tmp_path, "bus")


def _recv_n(sub, n, timeout_s=TIMEOUT_S):
    out = []
    deadline_s = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline_s:
        out.extend(sub.recv_many(0.2))
    return out


def test_every_kind_over_ipc_and_topic_prefixes(ep):
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
        for m in msgs:
            assert pub.send(m)
        got_all = _recv_n(sub_all, 4)
        got_some = _recv_n(sub_some, 3)
        assert got_all == msgs
        assert got_some == [msgs[0], msgs[1], msgs[3]]
        assert sub_all.recv(0) is None
        assert sub_all.stats.n_received == 4 and sub_all.stats.n_rejected == 0
    assert pub.closed and sub_all.closed


def test_recv_timeout_is_honoured(ep):
    with Publisher(ep), Subscriber(ep) as sub:
        t0 = time.monotonic()
        assert sub.recv(0.3) is None
        elapsed_s = time.monotonic() - t0
        assert 0.25 <= elapsed_s < 3.0
        assert sub.recv_many(0) == []


def test_bad_payloads_are_counted_never_raised(ep):
    good = _batch(0)
    with Publisher(ep) as pub, Subscriber(ep) as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        pub.send_payload(b"sensor/imu", b"\xc1garbage")
        pub.send_payload(b"sensor/imu", encode(good)[:-3])
        pub.send_payload(b"sensor/other", encode(good))  # topic does not match the sensor
        pub.socket.send_multipart([b"sensor/imu", b"a", b"b"])  # three frames
        pub.send(good)
        got = _recv_n(sub, 1)
        assert got == [good]
        st = sub.stats
        assert st.rejected == {"malformed": 1, "truncated": 1, "topic_mismatch": 1, "bad_frames": 1}
        assert st.n_rejected == 4 and st.n_received == 1


def test_sequence_gaps_and_resets_are_counted(ep):
    with Publisher(ep) as pub, Subscriber(ep) as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        for seq in (0, 1, 2, 5, 6, 0, 1):
            pub.send(_batch(seq))
        pub.send(_batch(0, inp="accel"))  # another stream of the same sensor: no gap
        pub.send(Heartbeat("imu", 3, 0, "ok"))
        assert len(_recv_n(sub, 9)) == 9
        st = sub.stats
        assert st.seq_gaps == {"sensor/imu/gyro": 2}
        assert st.seq_resets == {"sensor/imu/gyro": 1}
        assert st.n_seq_missing == 2


def test_fan_in_subscriber_binds(ep):
    with Subscriber(ep, bind=True) as sub:
        with Publisher(ep, bind=False) as a, Publisher(ep, bind=False) as b:
            # a binding SUB hands its subscription to newly connected publishers only while
            # it processes socket events (libzmq behaviour), as any receive loop does
            deadline_s = time.monotonic() + TIMEOUT_S
            while (a.poll_subscriptions() < 1 or b.poll_subscriptions() < 1) and (
                time.monotonic() < deadline_s
            ):
                assert sub.recv(0.01) is None
            a.send(Heartbeat("a", 0, 0, "ok"))
            b.send(Heartbeat("b", 0, 0, "degraded", "low battery"))
            got = _recv_n(sub, 2)
    assert sorted(m.sensor for m in got) == ["a", "b"]


def test_publisher_counts_drops_at_hwm_and_nothing_else_is_lost(ep):
    n_total = 3000
    payload = np.arange(512, dtype=np.int32)
    with (
        Publisher(ep, hwm=20) as pub,
        Subscriber(ep, hwm=20, max_queue=n_total) as sub,
    ):
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        for seq in range(n_total):  # the subscriber is not reading: queues fill up
            pub.send(_batch(seq, payload, payload))
        assert pub.n_dropped > 0
        assert pub.n_sent + pub.n_dropped == n_total
        got = _recv_n(sub, pub.n_sent)
        assert len(got) == pub.n_sent  # everything accepted arrived
        # the queues are empty again: the publisher learns that from the subscriber's I/O
        # thread, which a loaded machine may delay; sends until then are counted drops too
        seq, deadline = n_total, time.monotonic() + TIMEOUT_S
        while not pub.send(_batch(seq)) and time.monotonic() < deadline:
            seq += 1
            time.sleep(0.005)
        assert _recv_n(sub, 1)[0].seq == seq
        assert pub.n_sent + pub.n_dropped == seq + 1
        assert sub.stats.n_seq_missing == pub.n_dropped  # and every drop is visible as a gap


_CHILD_PUBLISHER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from spikefuse.transport.publisher import Publisher
    from spikefuse.protocol import EventBatch, Status
    endpoint, n_batches, hwm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(7)
    sums = np.zeros(8, np.int64)
    with Publisher(endpoint, hwm=hwm) as pub:
        if not pub.wait_for_subscribers(1, 10.0):
            sys.exit("no subscriber")
        for seq in range(n_batches):
            n = int(rng.integers(1, 32))
            ch = rng.integers(0, 8, n).astype(np.int32)
            co = rng.integers(-3, 4, n).astype(np.int32)
            if pub.send(EventBatch("imu", seq, seq, "gyro", 100.0, ch, co)):
                np.add.at(sums, ch, co)
        n_dropped = pub.n_dropped
        # an empty last batch and a status, retried until accepted, make tail drops visible
        last = EventBatch("imu", n_batches, 0, "gyro", 100.0, np.zeros(0, np.int32), np.zeros(0, np.int32))
        while not pub.send(last):
            pass
        while not pub.send(Status("child", 0, 0, {"done": True})):
            pass
        print(json.dumps({"sums": sums.tolist(), "n_sent": pub.n_sent,
                          "n_dropped": n_dropped}), flush=True)
        sys.stdin.read()  # keep the socket open until the parent has read everything
    """
)


@pytest.mark.parametrize("mode", ["backlog", "concurrent"])
def test_coalescing_under_overload_preserves_summed_counts(ep, mode):
    """A child process floods one stream. ``backlog``: nothing is read until it has sent
    everything; ``concurrent``: a tiny publisher HWM forces counted drops while we read.
    Either way the coalesced batches integrate exactly to what was sent."""
    n_batches = 20000 if mode == "backlog" else 5000
    hwm = n_batches + 10 if mode == "backlog" else 5
    with Subscriber(ep, hwm=n_batches + 10, policy="coalesce") as sub:
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD_PUBLISHER, ep, str(n_batches), str(hwm)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                got = []
                if mode == "backlog":
                    report = json.loads(child.stdout.readline())
                deadline_s = time.monotonic() + 60
                while time.monotonic() < deadline_s:
                    got.extend(sub.recv_many(0.5))
                    if got and isinstance(got[-1], Status):
                        break
                if mode == "concurrent":
                    report = json.loads(child.stdout.readline())
            finally:
                child.stdin.close()
                child.wait(timeout=30)
    assert isinstance(got[-1], Status), "the child's final status never arrived"
    batches = [m for m in got if isinstance(m, EventBatch)]
    sums = np.zeros(8, np.int64)
    for b in batches:
        np.add.at(sums, b.channels.astype(np.int64), b.counts)
    assert sums.tolist() == report["sums"]
    st = sub.stats
    assert st.n_received == report["n_sent"]  # batches + the final status
    assert st.n_coalesced == report["n_sent"] - 1 - len(batches)
    assert report["n_sent"] - 2 + report["n_dropped"] == n_batches
    assert st.n_dropped == 0
    assert st.n_seq_missing == report["n_dropped"]
    if mode == "backlog":
        assert len(batches) <= 3 and report["n_dropped"] == 0  # the backlog became ~1 batch
    else:
        assert report["n_dropped"] > 0 or st.n_coalesced > 0


def test_keep_policy_bounds_each_stream_and_counts_drops():
    q = InputQueue("keep", max_queue=3)
    for seq in range(10):
        q.put(_batch(seq))
        q.put(_batch(seq, inp="accel"))
    q.put(Heartbeat("imu", 0, 0, "ok"))
    out = q.pop_all()
    assert [m.seq for m in out if isinstance(m, EventBatch) and m.input == "gyro"] == [7, 8, 9]
    assert [m.seq for m in out if isinstance(m, EventBatch) and m.input == "accel"] == [7, 8, 9]
    assert isinstance(out[-1], Heartbeat) and len(out) == 7
    assert q.n_dropped == 14 and len(q) == 0


def test_coalesce_policy_merges_per_stream_and_keeps_scale_changes_apart():
    q = InputQueue("coalesce")
    q.put(_batch(0, (0,), (1,)))
    q.put(_batch(0, (0,), (5,), inp="accel"))
    q.put(_batch(1, (0, 1), (2, 3)))
    q.put(Heartbeat("imu", 0, 0, "ok"))
    q.put(_batch(2, (1,), (1,), scale=32.0))  # a new scale is not merged across
    q.put(_batch(3, (1,), (1,), scale=32.0))
    out = q.pop_all()
    assert [(type(m).__name__, getattr(m, "input", None), m.seq) for m in out] == [
        ("EventBatch", "gyro", 0),  # a merged batch keeps its first seq
        ("EventBatch", "accel", 0),
        ("Heartbeat", None, 0),
        ("EventBatch", "gyro", 2),
    ]
    assert out[0].channels.tolist() == [0, 1] and out[0].counts.tolist() == [3, 3]
    assert out[3].counts.tolist() == [2] and out[3].scale == 32.0
    assert q.n_coalesced == 2


def test_coalesce_policy_never_merges_across_a_sender_restart():
    q = InputQueue("coalesce")
    for seq in (700, 701, 702, 0, 1, 2):  # the driver restarted after 702
        q.put(_batch(seq, (0,), (10 if seq >= 700 else 1,)))
    out = q.pop_all()
    assert [(m.seq, m.counts.tolist()) for m in out] == [(700, [30]), (0, [3])]
    # so a consumer still sees the seq go back and can reset the input; unmergeable
    # batches beyond max_queue are dropped and counted
    q2 = InputQueue("coalesce", max_queue=1)
    for seq in (5, 6, 7):
        q2.put(_batch(seq, (0,), (1,), scale=float(seq)))  # scale changes: no merging
    assert q2.n_dropped == 2 and [m.seq for m in q2.pop_all()] == [7]


async def test_asyncio_publisher_and_subscriber(ep):
    async with AsyncPublisher(ep) as pub, AsyncSubscriber(ep, ["sensor/"]) as sub:
        assert await pub.wait_for_subscribers(1, TIMEOUT_S)
        waiter = asyncio.create_task(sub.recv(TIMEOUT_S))
        await asyncio.sleep(0)  # the task is now waiting on the socket
        await pub.send(_batch(0))
        first = await waiter
        assert isinstance(first, EventBatch) and first.seq == 0
        for seq in range(1, 4):
            await pub.send(_batch(seq))
        await pub.send(Status("ignored", 0, 0, {}))
        got = []
        deadline_s = time.monotonic() + TIMEOUT_S
        while len(got) < 3 and time.monotonic() < deadline_s:
            got.extend(await sub.recv_many(0.2))
        assert [m.seq for m in got] == [1, 2, 3]
        t0 = time.monotonic()
        assert await sub.recv(0.2) is None
        assert time.monotonic() - t0 >= 0.15
    assert sub.closed


# --------------------------------------------------------------------------- config/security


def test_endpoint_rules(tmp_path):
    assert Endpoint.ipc(tmp_path, "imu") == f"ipc://{tmp_path}/imu.sock"
    with pytest.raises(ConfigError, match="Unix socket limit"):
        Endpoint.ipc(tmp_path / ("x" * 120), "imu")
    with pytest.raises(ConfigError, match="scheme"):
        Publisher("udp://127.0.0.1:9")
    assert Endpoint("tcp://127.0.0.1:5").is_local and Endpoint("tcp://localhost:5").is_local
    assert Endpoint("ipc:///tmp/x").is_local and not Endpoint("tcp://*:5").is_local
    # a non-loopback tcp endpoint needs keys or an explicit insecure: true, set in the
    # process's 'security' (the core's inputs take it too: tests/test_security.py)
    with pytest.raises(ConfigError, match="requires CurveZMQ keys") as exc:
        Publisher("tcp://*:0")
    assert "'security' setting" in str(exc.value) and "security: {insecure: true}" in str(exc.value)
    with pytest.raises(ConfigError, match="requires CurveZMQ keys"):
        Subscriber(["ipc:///tmp/ok", "tcp://192.0.2.1:5555"])


def test_bind_failures_are_bus_errors_naming_the_endpoint():
    with Publisher("tcp://127.0.0.1:*") as first:
        with pytest.raises(BusError, match=f"cannot bind {first.endpoint}"):
            Publisher(first.endpoint)


def test_config_models(tmp_path):
    cfg = validate_data(
        SubscriberConfig,
        parse_yaml(
            "endpoints: [tcp://10.0.0.2:5555]\npolicy: coalesce\nsecurity: {insecure: true}\n"
        ),
        "cfg.yaml",
    )
    assert cfg.security.insecure and cfg.policy == "coalesce"
    with pytest.raises(ConfigError, match="cfg.yaml:2: policy"):
        validate_data(
            SubscriberConfig, parse_yaml("endpoints: [ipc:///x]\npolicy: fast\n"), "cfg.yaml"
        )
    with pytest.raises(ConfigError, match="endpoint"):
        validate_data(PublisherConfig, {"endpoint": "nowhere"}, "p.yaml")
    with pytest.raises(ConfigError, match="insecure: true cannot be combined"):
        validate_data(SecurityConfig, {"insecure": True, "secret_key_file": "k"}, "s.yaml")
    with pytest.raises(ConfigError, match="secret_key_file is required"):
        validate_data(SecurityConfig, {"allowed_client_keys": ["k"]}, "s.yaml")
    # unreadable key files are configuration errors that name the field
    bad = SecurityConfig(
        secret_key_file=tmp_path / "missing.key_secret", allowed_client_keys=[tmp_path / "x"]
    )
    with pytest.raises(ConfigError, match="security.secret_key_file"):
        Subscriber("tcp://127.0.0.1:1", security=bad)


def _keygen(tmp_path, name):
    subprocess.run(
        [sys.executable, "-m", "spikefuse", "keygen", name, "--dir", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tmp_path / f"{name}.key", tmp_path / f"{name}.key_secret"


def test_curve_only_listed_publishers_get_through(tmp_path):
    server_pub, server_sec = _keygen(tmp_path, "engine")
    good_pub, good_sec = _keygen(tmp_path, "imu")
    _, rogue_sec = _keygen(tmp_path, "rogue")
    sub_sec = SecurityConfig(secret_key_file=server_sec, allowed_client_keys=[good_pub])

    def client(secret):
        return SecurityConfig(secret_key_file=secret, server_public_key_file=server_pub)

    with Publisher("tcp://127.0.0.1:*", security=client(rogue_sec)) as rogue:
        with Subscriber(rogue.endpoint, security=sub_sec) as sub:
            # the handshake is refused, so not even the subscription gets through
            assert not rogue.wait_for_subscribers(1, 1.0)
            deadline_s = time.monotonic() + 1.0
            seq = 0
            while time.monotonic() < deadline_s:
                rogue.send(Heartbeat("rogue", seq, 0, "ok"))
                seq += 1
                assert sub.recv(0.02) is None
            assert sub.stats.n_received == 0 and sub.stats.n_auth_denied >= 1

    with Publisher("tcp://127.0.0.1:*", security=client(good_sec)) as good:
        with Subscriber(good.endpoint, security=sub_sec) as sub:
            assert good.wait_for_subscribers(1, TIMEOUT_S)
            good.send(_batch(0))
            got = sub.recv(TIMEOUT_S)
            assert isinstance(got, EventBatch) and got.seq == 0
            assert sub.stats.n_auth_denied == 0


def test_curve_plaintext_peer_is_refused(tmp_path):
    server_pub, server_sec = _keygen(tmp_path, "engine")
    good_pub, _ = _keygen(tmp_path, "imu")
    sub_sec = SecurityConfig(secret_key_file=server_sec, allowed_client_keys=[good_pub])
    with Publisher("tcp://127.0.0.1:*") as plain:  # loopback: plaintext allowed to start
        with Subscriber(plain.endpoint, security=sub_sec) as sub:
            assert not plain.wait_for_subscribers(1, 0.5)
            plain.send(Heartbeat("plain", 0, 0, "ok"))
            assert sub.recv(0.3) is None


# --------------------------------------------------------------------------- echo command


def test_echo_prints_one_line_per_message(ep):
    cmd = [sys.executable, "-m", "spikefuse", "echo", "sensor/", "--endpoint", ep]
    with Publisher(ep) as pub:
        with subprocess.Popen(
            [*cmd, "--count", "3", "--duration-s", "60"], stdout=subprocess.PIPE, text=True
        ) as child:
            try:
                assert pub.wait_for_subscribers(1, 60.0), "echo did not subscribe"
                pub.send(Status("engine", 0, 0, {"x": 1}))  # other topic: not shown
                pub.send(_batch(0, range(20), [1] * 20))
                pub.send(Heartbeat("imu", 0, 5, "degraded", "slow bus"))
                pub.send(_batch(1, (3,), (-2,)))
                out, _ = child.communicate(timeout=60)
            finally:
                child.kill() if child.poll() is None else None
        assert child.returncode == 0
        lines = out.splitlines()
        assert len(lines) == 3
        assert lines[0].startswith("sensor/imu EventBatch seq=0 ") and "n=20" in lines[0]
        assert "...+4]" in lines[0]  # long arrays are elided
        assert lines[1] == 'sensor/imu Heartbeat seq=0 t_ns=5 state=degraded detail="slow bus"'
        assert lines[2].endswith("input=gyro scale=16 n=1 channels=[3] counts=[-2]")

        # --json, and exit status 1 when --count was not reached in --duration-s
        with subprocess.Popen(
            [*cmd, "--json", "--count", "2", "--duration-s", "3"], stdout=subprocess.PIPE, text=True
        ) as child:
            assert pub.wait_for_subscribers(2, 60.0)
            pub.send(_batch(2, (1, 2), (5, 6)))
            out, _ = child.communicate(timeout=60)
        assert child.returncode == 1
        obj = json.loads(out)
        assert obj["kind"] == "EventBatch" and obj["counts"] == [5, 6] and obj["seq"] == 2


def test_echo_reports_config_errors(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "spikefuse", "echo", "", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "no *.sock endpoints" in res.stderr


def test_mixed_recv_calls_keep_arrival_order(ep):
    """recv(0) drains into the queue, recv(t) takes queued messages first, recv_many
    returns the rest: in any mix, messages come out in arrival order, none twice."""
    with Publisher(ep) as pub, Subscriber(ep) as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        for seq in range(60):
            pub.send(_batch(seq, (seq % 7,), (1,)))
        got = []
        calls = [lambda: [sub.recv(0)], lambda: [sub.recv(0.2)], lambda: sub.recv_many(0.2)]
        deadline_s = time.monotonic() + TIMEOUT_S
        i = 0
        while len(got) < 60 and time.monotonic() < deadline_s:
            got.extend(m for m in calls[i % 3]() if m is not None)
            i += 1
        assert [m.seq for m in got] == list(range(60))
        assert sub.recv(0) is None and sub.stats.n_seq_missing == 0


def test_coalescing_what_waits_behind_a_single_recv(ep):
    with Publisher(ep) as pub, Subscriber(ep, policy="coalesce") as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        for seq in range(3):
            pub.send(_batch(seq, (seq,), (seq + 1,)))
        assert sub.recv(TIMEOUT_S).seq == 0  # a single message; the others wait
        rest = _recv_n(sub, 1)
        deadline_s = time.monotonic() + TIMEOUT_S
        while sub.stats.n_received < 3 and time.monotonic() < deadline_s:
            rest.extend(sub.recv_many(0.1))
        assert rest[-1].t_ns >= rest[0].t_ns
        sums = {}
        for b in rest:
            for c, n in zip(b.channels.tolist(), b.counts.tolist(), strict=True):
                sums[c] = sums.get(c, 0) + n
        assert sums == {1: 2, 2: 3}
        assert len(rest) + sub.stats.n_coalesced == 2


def test_bench_bus_smoke_reports_the_contract_fields():
    res = subprocess.run(
        [
            sys.executable, "-m", "spikefuse", "bench", "bus", "--json", "--quick",
            "--skip-imu", "--batch-sizes", "64", "--n-pings", "50",
        ],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    f = json.loads(res.stdout)
    for key in ("events_per_s", "hop_p50_us", "hop_p99_us", "floor_p50_us", "hop_p50_vs_floor"):
        assert f[key] > 0, key
    assert f["n_pings"] == 50
    assert f["hop_p50_vs_floor"] == pytest.approx(f["hop_p50_us"] / f["floor_p50_us"])


def test_coalesce_policy_never_moves_a_batch_before_its_sensors_heartbeat():
    """The heartbeat's totals count the batches sent before it: a batch sent after it must
    stay after it (merged into an earlier batch it would be applied first, and the keyframe
    would then 'correct' it away until the next heartbeat)."""
    q = InputQueue("coalesce", 100)
    q.put(_batch(0, [0], [1]))
    q.put(Heartbeat("imu", 0, 5, "ok"))
    q.put(_batch(1, [0], [2]))
    q.put(_batch(2, [0], [3]))  # merges with seq 1: both come after the heartbeat
    got = q.pop_all()
    assert [type(m).__name__ for m in got] == ["EventBatch", "Heartbeat", "EventBatch"]
    assert got[0].counts.tolist() == [1] and got[2].counts.tolist() == [5]
    assert q.n_coalesced == 1


def test_publisher_knows_whether_anyone_holds_a_topic(ep):
    """What ZeroMQ drops silently (a message to a topic nobody subscribes) is countable."""
    with Publisher(ep) as pub:
        pub.poll_subscriptions()
        assert not pub.has_subscriber(b"motor/m")
        sub = Subscriber(ep, ["motor/m"])
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        assert pub.has_subscriber(b"motor/m") and not pub.has_subscriber(b"status/x")
        sub.close()
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            pub.poll_subscriptions()
            if not pub.has_subscriber(b"motor/m"):
                break
            pub.socket.poll(50)
        assert not pub.has_subscriber(b"motor/m")


def test_coalescing_a_consumer_far_behind_keeps_memory_bounded():
    """100,000 batches of one stream behind a consumer that does not read: one queued
    batch whose per-channel sums are exact, not a list of every merged batch."""
    q = InputQueue("coalesce", 10)
    rng = np.random.default_rng(5)
    total = np.zeros(8, np.int64)
    for seq in range(100_000):
        ch = rng.integers(0, 8, 3)
        co = rng.integers(-3, 4, 3)
        np.add.at(total, ch, co)
        q.put(_batch(seq, ch, co))
    slot = q._order[0]
    assert len(q) == 1 and (slot.extra is None or len(slot.extra) < 64)
    q.put(_batch(3, [0], [1]))  # a restarted sender (seq back) is never merged
    first, restarted = q.pop_all()
    got = np.zeros(8, np.int64)
    np.add.at(got, first.channels, first.counts)
    assert got.tolist() == total.tolist() and first.seq == 0
    assert restarted.seq == 3


def test_subscribers_to_a_data_topic_count_once_per_matching_subscription(ep):
    # the core subscribes to sensor/imu and status/imu: one subscriber of the data, not two
    with (
        Publisher(ep) as pub,
        Subscriber(ep, ["sensor/imu", "status/imu"]),
        Subscriber(ep, ["status/"]),
    ):
        assert pub.wait_for_subscribers(3, TIMEOUT_S)
        assert pub.n_subscribed(b"sensor/imu") == 1
        assert pub.n_subscribed(b"status/imu") == 2
        # three subscriptions, one subscriber of the data: waiting for two of it times out
        assert not pub.wait_for_subscribers(2, 0.2, topics=[b"sensor/imu"])
        with Subscriber(ep):  # everything: a recorder
            assert pub.wait_for_subscribers(2, TIMEOUT_S, topics=[b"sensor/imu"])
            assert pub.n_subscribed(b"sensor/imu") == 2


# --------------------------------------------------------------------------- package rules


def test_endpoint_is_one_checked_type_in_every_config(tmp_path):
    ep = Endpoint("tcp://10.0.0.2:5555")
    assert isinstance(ep, str) and ep.scheme == "tcp" and ep.address == "10.0.0.2:5555"
    assert not ep.is_local and ep.ipc_path is None
    ipc = Endpoint.ipc(tmp_path, "imu")
    assert ipc.ipc_path == tmp_path / "imu.sock" and ipc.is_local and Endpoint(ipc) is ipc
    for bad, why in [("nowhere", "scheme://"), ("tcp://host", "host:port"), ("ipc://", "empty")]:
        with pytest.raises(ConfigError, match=why):
            Endpoint(bad)
    # as a field type: the error names the file, the line and the field
    from spikefuse.core.config import CoreConfig

    text = "graph: g.yaml\ninputs:\n  x: {sensor: imu, endpoint: 'udp://x:1'}\n"
    with pytest.raises(ConfigError, match=r"core.yaml:3: inputs.x.endpoint.*scheme must be"):
        validate_data(CoreConfig, parse_yaml(text), "core.yaml")
    cfg = validate_data(CoreConfig, parse_yaml(text.replace("udp", "tcp")), "core.yaml")
    assert type(cfg.inputs["x"].endpoint) is Endpoint
    assert cfg.model_dump(mode="json")["inputs"]["x"]["endpoint"] == "tcp://x:1"


def test_seq_tracker_counts_gaps_and_resets():
    from spikefuse.transport.seq import SeqTracker

    t = SeqTracker()
    assert [t.see("a", s) for s in (5, 6, 9, 10, 2, 2, 3)] == [0, 0, 2, 0, -1, -1, 0]
    assert t.see("b", 0) == 0 and t.last("a") == 3 and t.last("c") is None
    assert t.gaps == {"a": 2} and t.resets == {"a": 2} and t.n_missing == 2 and t.n_resets == 2


def test_the_recorder_counts_gaps_with_the_same_tracker(tmp_path, ep):
    from spikefuse.recording.recorder import Recorder
    from spikefuse.sdk.timing import StopSignal

    with Publisher(ep) as pub, Recorder(tmp_path / "r.mcap", [ep], ["sensor/"]) as rec:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        for seq in (0, 1, 4, 5, 1):  # 2 and 3 lost on the way, then a restart
            pub.send(_batch(seq))
        stats = rec.run(StopSignal(), duration_s=2.0)  # already on their way: all arrive
    assert stats.n_messages == 5 and stats.seq_gaps == {"sensor/imu/gyro": 2}
    assert rec.seq.resets == {"sensor/imu/gyro": 1}


def _imports(path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_only_the_transport_package_imports_zmq():
    from tests.conftest import REPO

    offenders = []
    for path in sorted(REPO.glob("**/*.py")) + sorted(REPO.glob("**/*.pyx")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(("spikefuse/transport/", ".", "build/")) or "/." in rel:
            continue
        text = path.read_text(encoding="utf-8")
        mods = _imports(path) if path.suffix == ".py" else set()
        if any(m == "zmq" or m.startswith("zmq.") for m in mods) or (
            path.suffix == ".pyx" and "zmq" in text
        ):
            offenders.append(rel)
    assert offenders == []


def test_config_models_take_transport_types_without_zmq():
    from tests.conftest import REPO

    zmq_free = {f"spikefuse.transport.{m}" for m in ("config", "endpoint", "queue", "seq")}
    configs = [*REPO.glob("spikefuse/**/config.py"), REPO / "spikefuse/launch/model.py"]
    for path in configs:
        used = {m for m in _imports(path) if m.startswith("spikefuse.transport")}
        assert used <= zmq_free, f"{path}: {used - zmq_free}"
    code = "import sys, " + ", ".join(sorted(zmq_free)) + "; print('zmq' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_dispatch_takes_raw_first_checks_the_rest_in_arrival_order(ep):
    """``dispatch``: each message goes to the raw handler first, in arrival order; what it
    refuses runs the subscriber's checks (rejections counted) and goes to ``handle``. Both
    count as received; nothing is queued, merged or seq-tracked."""
    with Publisher(ep) as pub, Subscriber(ep, policy="coalesce", max_queue=1) as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        sent = [encode(_batch(seq, (seq % 3,), (seq,))) for seq in range(40)]
        for seq, payload in enumerate(sent):
            pub.send_payload(b"sensor/imu", payload)
            if seq == 10:
                pub.send_payload(b"sensor/imu", b"\xc1garbage")
                pub.send_payload(b"sensor/other", payload)  # topic does not match
                pub.socket.send_multipart([b"sensor/imu", b"a", b"b"])
        order = []

        def raw(topic: bytes, payload: bytes) -> bool:
            known = topic == b"sensor/imu" and payload in sent
            taken = known and sent.index(payload) % 2 == 0
            if taken:
                order.append(("raw", sent.index(payload)))
            return taken

        def handle(msg) -> None:
            order.append(("decoded", msg.seq))

        n = 0
        deadline_s = time.monotonic() + TIMEOUT_S
        while n < 43 and time.monotonic() < deadline_s:
            n += sub.dispatch(0.2, raw, handle, max_n=7)
        assert n == 43
        assert sub.dispatch(0, raw, handle) == 0
        assert order == [("raw" if s % 2 == 0 else "decoded", s) for s in range(40)]
        st = sub.stats
        assert st.n_received == 40 and st.n_rejected == 3
        assert st.rejected == {"malformed": 1, "topic_mismatch": 1, "bad_frames": 1}
        assert st.n_coalesced == 0 and st.n_dropped == 0
        assert st.seq_gaps == {} and st.seq_resets == {}


def test_dispatch_waits_for_the_first_and_hands_over_queued_messages_first(ep):
    with Publisher(ep) as pub, Subscriber(ep) as sub:
        assert pub.wait_for_subscribers(1, TIMEOUT_S)
        t0 = time.monotonic()
        assert sub.dispatch(0.3, lambda t, p: True, lambda m: None) == 0
        assert 0.25 <= time.monotonic() - t0 < 3.0
        for seq in range(5):
            pub.send(_batch(seq))
        assert sub.recv(TIMEOUT_S).seq == 0
        deadline_s = time.monotonic() + TIMEOUT_S
        second = None
        while second is None and time.monotonic() < deadline_s:
            second = sub.recv(0)  # drains what is ready into the queue, returns the first
        assert second.seq == 1
        got = []
        while len(got) < 3 and time.monotonic() < deadline_s:
            sub.dispatch(0.2, lambda t, p: False, lambda m: got.append(m.seq))
        assert got == [2, 3, 4]  # what was queued first, then the socket's


SEQ_CASES = [(None, 0, "IN_ORDER"), (None, 7, "IN_ORDER"), (4, 5, "IN_ORDER"), (4, 9, "GAP")]
SEQ_CASES += [(4, 4, "DUPLICATE"), (4, 0, "BACK"), (4, 3, "BACK")]


@pytest.mark.parametrize(("last", "seq", "want"), SEQ_CASES)
def test_one_sequence_rule_for_tracker_queue_and_core(last, seq, want):
    """``seq_step`` is the rule; the tracker counts by it, the coalescing queue merges only
    across a seq that advances by it, and the core's inputs act on it (drop, reset)."""
    from spikefuse.core.config import InputMap
    from spikefuse.core.inputs import SEQ_DROP, SEQ_OK, SEQ_RESTART, InputSet, InputState
    from spikefuse.transport.seq import SeqStep, SeqTracker, seq_step

    step = seq_step(last, seq)
    assert step == SeqStep[want]
    tracker = SeqTracker()
    if last is not None:
        tracker.see("s", last)
    missing = tracker.see("s", seq)
    assert missing == {"IN_ORDER": 0, "GAP": seq - (last or 0) - 1}.get(want, -1)
    assert tracker.resets.get("s", 0) == int(want in ("DUPLICATE", "BACK"))

    if last is not None:
        q = InputQueue("coalesce")
        q.put(_batch(last))
        q.put(_batch(seq))
        assert (q.n_coalesced == 1) == (want in ("IN_ORDER", "GAP"))

    st = InputState("gyro", InputMap(sensor="imu"), 2, 16.0, 0)
    inputs = InputSet({"gyro": st}, lambda *a: None, {})
    st.last_seq = last
    verdict = inputs.check_seq(st, _batch(seq))
    assert verdict == {"DUPLICATE": SEQ_DROP, "BACK": SEQ_RESTART}.get(want, SEQ_OK)
    assert (st.n_gaps, st.n_duplicate, st.n_out_of_order) == (
        int(want == "GAP"),
        int(want == "DUPLICATE"),
        int(want == "BACK"),
    )
    assert st.last_seq == seq
