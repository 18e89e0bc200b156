"""Actuator processes: deadman (core SIGKILL -> safe values one deadman period after the last
command), console CSV, serial line protocol over a pty pair."""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest
from _core_util import core_config, read_csv_rows, small_graph, spawn, stop, wait_until, write_yaml

from spikefuse.actuators.serial_line import format_line, parse_line
from spikefuse.protocol import EventBatch, MotorCommand, Status
from spikefuse.transport.publisher import Publisher
from spikefuse.transport.subscriber import Subscriber


def _console_cfg(tmp_path, **over):
    data = {
        "name": "motors",
        "run_dir": str(tmp_path),
        "n_channels": 4,
        "csv": str(tmp_path / "m.csv"),
    }
    data.update(over)
    return write_yaml(tmp_path / "act.yaml", data)


def _cmd(seq, values):
    now = time.monotonic_ns()
    return MotorCommand("motors", seq, now, now, np.asarray(values, np.float64))


STARTUP_S = 60.0
"""A child process's start-up (imports) on a busy 2-core machine: seconds, not the 0.5 s of
an idle one; waiting longer costs nothing when it is fast."""
DEADMAN_MS = 100.0
LOAD_MARGIN_MS = 150.0
"""What a 2-core machine at load 4 may add to a process's wake-up."""


def test_core_sigkill_actuator_safe_within_deadman(tmp_path):
    graph = small_graph(tmp_path / "g.npz")
    ccfg = core_config(tmp_path, graph, inputs={"x": {"sensor": "sens", "timeout_s": 5.0}})
    sens = Publisher(f"ipc://{tmp_path}/sens.sock")
    core = spawn("core", "--config", str(ccfg))
    act = spawn("actuator", "console", "--config", str(_console_cfg(tmp_path)))
    csv = tmp_path / "m.csv"
    try:
        assert sens.wait_for_subscribers(1, STARTUP_S)
        seq = 0

        def live():
            nonlocal seq
            sens.send(
                EventBatch(
                    "sens",
                    seq,
                    time.monotonic_ns(),
                    "x",
                    1.0,
                    np.array([0], np.int32),
                    np.array([2], np.int32),
                )
            )
            seq += 1
            return any(r[1] == "cmd" and float(r[4]) != 0 for r in read_csv_rows(csv))

        assert wait_until(live, 15.0, 0.05), "actuator never received a live command"

        def steady():  # two more commands logged: the core's 20 Hz refresh is flowing
            return len([r for r in read_csv_rows(csv) if r[1] == "cmd"]) >= n_live + 2

        n_live = len([r for r in read_csv_rows(csv) if r[1] == "cmd"])
        assert wait_until(steady, 15.0), "the core's refresh commands do not flow"
        t_kill = time.monotonic_ns()
        os.kill(core.pid, signal.SIGKILL)
        core.wait(5)

        def safe_row():
            return [r for r in read_csv_rows(csv) if r[1] == "safe" and int(r[0]) > t_kill]

        rows = wait_until(safe_row, 5.0)
        assert rows, "actuator never went safe after the core was killed"
        last_cmd = max(int(r[0]) for r in read_csv_rows(csv) if r[1] == "cmd")
        after_cmd_ms = (int(rows[0][0]) - last_cmd) / 1e6
        assert after_cmd_ms >= DEADMAN_MS - 1, f"safe {after_cmd_ms:.1f} ms after the last command"
        delay_ms = (int(rows[0][0]) - t_kill) / 1e6
        assert delay_ms <= DEADMAN_MS + LOAD_MARGIN_MS, f"safe values after {delay_ms:.1f} ms"
        assert [float(v) for v in rows[0][4:]] == [0.0] * 4
    finally:
        stop(core)
        assert stop(act) == 0
        sens.close()
    out = act.stdout.read()
    assert "DEADMAN" in out
    # the stop on SIGTERM applies the safe values too, but it is a normal step: INFO
    stopping = [line for line in out.splitlines() if "stopping: safe values applied" in line]
    assert len(stopping) == 1 and " INFO " in stopping[0], stopping


def test_deadman_trips_and_rearms_and_counts_bad_commands(tmp_path):
    cfg = _console_cfg(
        tmp_path,
        deadman_ms=100,
        safe_values=[1, 2, 3, 4],
        status_endpoint=f"ipc://{tmp_path}/act-status.sock",
        status_period_s=0.2,
    )
    pub = Publisher(f"ipc://{tmp_path}/core.sock")
    act = spawn("actuator", "console", "--config", str(cfg))
    csv = tmp_path / "m.csv"
    try:
        assert pub.wait_for_subscribers(1, STARTUP_S)
        st_sub = Subscriber(f"ipc://{tmp_path}/act-status.sock", ["status/"])
        for i in range(10):
            pub.send(_cmd(i, [0.5, 0.5, 0.5, 0.5]))
            time.sleep(0.01)
        t_last = time.monotonic_ns()
        pub.send(_cmd(10, [1.0]))  # wrong length: counted, ignored
        rows = wait_until(
            lambda: [r for r in read_csv_rows(csv) if r[1] == "safe" and int(r[0]) > t_last], 5.0
        )
        assert rows
        # one deadman period after the last command it applied (its own clock), plus what a
        # loaded machine adds to a wake-up
        last_cmd = max(int(r[0]) for r in read_csv_rows(csv) if r[1] == "cmd")
        after_ms = (int(rows[0][0]) - last_cmd) / 1e6
        assert DEADMAN_MS - 1 <= after_ms <= DEADMAN_MS + LOAD_MARGIN_MS, after_ms
        assert [float(v) for v in rows[0][4:]] == [1, 2, 3, 4]
        pub.send(_cmd(11, [0.25] * 4))
        assert wait_until(
            lambda: read_csv_rows(csv)[-1][1] == "cmd" if read_csv_rows(csv) else False, 2.0
        )
        st = None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = st_sub.recv(0.5)
            if (
                isinstance(m, Status)
                and m.metrics["n_deadman"] >= 1
                and m.metrics["n_commands"] >= 11
            ):
                st = m
                break
        assert st is not None
        assert st.metrics["n_bad"] == 1
        st_sub.close()
    finally:
        assert stop(act) == 0
        pub.close()


def test_serial_line_protocol_roundtrip():
    line = format_line("SET", ["7", "0.5", "-1"])
    assert line.startswith(b"$SET,7,0.5,-1*") and line.endswith(b"\r\n")
    assert parse_line(line) == ("SET", ["7", "0.5", "-1"])
    with pytest.raises(ValueError, match="checksum"):
        parse_line(line.replace(b"0.5", b"0.6"))
    with pytest.raises(ValueError, match="not a"):
        parse_line(b"hello")


def test_serial_actuator_over_pty(tmp_path):
    master, slave = os.openpty()
    port = os.ttyname(slave)
    cfg = write_yaml(
        tmp_path / "serial.yaml",
        {
            "name": "motors",
            "run_dir": str(tmp_path),
            "n_channels": 2,
            "port": port,
            "deadman_ms": 100,
            "status_endpoint": f"ipc://{tmp_path}/st.sock",
            "status_period_s": 0.2,
        },
    )
    pub = Publisher(f"ipc://{tmp_path}/core.sock")
    act = spawn("actuator", "serial", "--config", str(cfg))
    os.set_blocking(master, False)
    buf = b""

    def lines():
        nonlocal buf
        try:
            buf += os.read(master, 65536)
        except BlockingIOError:
            pass
        out = []
        while b"\n" in buf:
            ln, _, buf = buf.partition(b"\n")
            out.append(parse_line(ln))
        return out

    got = []
    try:
        assert pub.wait_for_subscribers(1, STARTUP_S)
        st_sub = Subscriber(f"ipc://{tmp_path}/st.sock", ["status/"])
        for i in range(5):
            pub.send(_cmd(i, [0.25 * i, -1.5]))
            time.sleep(0.02)
        assert wait_until(lambda: got.extend(lines()) or any(k == "SAFE" for k, _ in got[1:]), 3.0)
        sets = [f for k, f in got if k == "SET"]
        assert sets[0] == ["0", "0", "-1.5"] and sets[-1] == ["4", "1", "-1.5"]
        assert got[0] == ("SAFE", ["0", "0"])  # starts safe
        assert got[-1] == ("SAFE", ["0", "0"])  # deadman
        os.write(
            master, format_line("ACK", ["4"]) + b"garbage\r\n" + format_line("ERR", ["overcurrent"])
        )
        st = None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = st_sub.recv(0.5)
            if (
                isinstance(m, Status)
                and m.metrics.get("n_acks") == 1
                and m.metrics.get("n_bad_lines") == 1
            ):
                st = m
                break
        assert st is not None and st.metrics["n_errors"] == 1
        st_sub.close()
    finally:
        assert stop(act) == 0
        pub.close()
        os.close(master)
        os.close(slave)


def test_unknown_actuator_kind_exits_2(tmp_path):
    proc = spawn("actuator", "warpdrive")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown actuator kind 'warpdrive'" in out and "console" in out


def test_repeated_deadman_trips_are_counted_and_logged_at_most_every_10_s(tmp_path, caplog):
    """An actuator whose commands stop and start again every few hundred ms (a lock-stepped
    world idle between its runs) says so once per DEADMAN_LOG_EVERY_NS with a count, not once
    per trip; every trip is still counted and applies the safe values."""
    from spikefuse.actuators.base import (
        DEADMAN_LOG_EVERY_NS,
        ActuatorRunner,
        load_actuator_config,
        resolve_actuator,
    )

    spec = resolve_actuator("console")
    cfg = load_actuator_config(spec, _console_cfg(tmp_path, safe_values=[1, 2, 3, 4]))
    runner = ActuatorRunner(cfg, spec.factory(cfg))
    ms = 1_000_000
    runner.start(0)
    caplog.set_level("INFO", logger="spikefuse.actuators.base")
    t, n_trips = 0, 0
    while t < DEADMAN_LOG_EVERY_NS + 2_000 * ms:  # a command, then silence, every 300 ms
        runner.on_command(MotorCommand("motors", n_trips, t, t, np.full(4, 0.5)), t)
        t += 300 * ms
        runner.check(t)
        n_trips += 1
    lines = [r.getMessage() for r in caplog.records if "DEADMAN" in r.getMessage()]
    assert runner.n_deadman == n_trips > 35 and runner.tripped
    assert len(lines) == 2, lines  # the first trip, then one 10 s later naming the others
    # trip 1 at 0.3 s; trip 35 (10.5 s) is the first 10 s later
    assert "(trip 35; 33 more since the last such line)" in lines[1]
    flowing = [r for r in caplog.records if "commands flowing" in r.getMessage()]
    assert len(flowing) == 3  # at the start and after each logged trip
    runner.actuator.close()


@pytest.mark.parametrize("scheme", ["ipc", "unix"])
def test_commands_read_compiled_keep_the_subscribers_counters(tmp_path, scheme):
    """The actuator reads its own commands with the compiled reader and the rest through
    the subscriber's checks: in-order commands, a seq gap of 2, a duplicate, a payload the
    decoder rejects, a non-finite value, a Status on its topic prefix; every one is
    accounted for in the closing summary (applied, bad, lost on the way) and in the CSV,
    stamped after the command's own cause."""
    ep = f"{scheme}://{tmp_path}/core.sock"
    cfg = _console_cfg(tmp_path, endpoint=ep, deadman_ms=60_000, n_channels=2)
    pub = Publisher(ep)
    act = spawn("actuator", "console", "--config", str(cfg))
    csv = tmp_path / "m.csv"
    try:
        assert pub.wait_for_subscribers(1, STARTUP_S)
        sent = [_cmd(s, [s, -s]) for s in (0, 1, 2, 5, 5, 6)]  # 3, 4 lost; 5 twice
        for msg in sent[:3]:
            assert pub.send(msg)
        pub.send_payload(b"motor/motors", b"\x97\x01\x03junk")  # rejected, counted
        bad = MotorCommand("motors", 99, 1, 1, np.array([1.0, 2.0]))
        pub.send_payload(b"motor/motors", _with_nan(bad))  # non-finite: the decoder's call
        pub.send(Status("motors", 0, 1, {}))  # another topic: not a command, not applied
        for msg in sent[3:]:
            assert pub.send(msg)
        pub.send(_cmd(7, [1.0]))  # the wrong width: bad

        def applied():
            return [r for r in read_csv_rows(csv) if r[1] == "cmd"]

        assert wait_until(lambda: len(applied()) >= len(sent), 20.0)
    finally:
        assert stop(act) == 0
        pub.close()
    out = act.stdout.read()
    rows = applied()
    assert [int(r[2]) for r in rows] == [m.seq for m in sent]
    assert [float(r[4]) for r in rows] == [float(m.values[0]) for m in sent]
    assert all(int(r[0]) > int(r[3]) == m.cause_t_ns for r, m in zip(rows, sent, strict=True))
    assert f"{len(sent)} commands applied, 1 bad," in out, out
    assert "2 lost on the way (seq gaps)" in out, out


def _with_nan(cmd: MotorCommand) -> bytes:
    """``cmd``'s payload with its first value made NaN (the encoder refuses to write one)."""
    from spikefuse.protocol import encode

    data = bytearray(encode(cmd))
    data[-16:-8] = np.array([np.nan]).tobytes()
    return bytes(data)


def test_a_backlog_is_applied_in_order_and_every_command_accounted_for(tmp_path):
    """An actuator stopped (SIGSTOP) while 3000 commands queue up: once it runs again it
    applies them in order, one by one up to its per-wake bound and the rest of a backlog
    under its queue policy (the newest kept, the older dropped and counted): applied +
    dropped = sent, the last one applied."""
    ep = f"ipc://{tmp_path}/core.sock"
    cfg = _console_cfg(tmp_path, endpoint=ep, deadman_ms=60_000, n_channels=1, print_hz=0)
    pub = Publisher(ep)
    act = spawn("actuator", "console", "--config", str(cfg))
    csv = tmp_path / "m.csv"
    n = 3000
    try:
        assert pub.wait_for_subscribers(1, STARTUP_S)
        assert pub.send(_cmd(0, [0.0]))
        assert wait_until(lambda: [r for r in read_csv_rows(csv) if r[1] == "cmd"], 20.0)
        os.kill(act.pid, signal.SIGSTOP)
        try:
            sent = sum(pub.send(_cmd(s, [float(s)])) for s in range(1, n))
        finally:
            os.kill(act.pid, signal.SIGCONT)
        assert sent == n - 1

        def last_seq():
            rows = [r for r in read_csv_rows(csv) if r[1] == "cmd"]
            return rows and int(rows[-1][2]) == n - 1

        assert wait_until(last_seq, 30.0)
    finally:
        assert stop(act) == 0
        pub.close()
    out = act.stdout.read()
    seqs = [int(r[2]) for r in read_csv_rows(csv) if r[1] == "cmd"]
    assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1
    m = re.search(r"(\d+) commands applied, 0 bad, (\d+) dropped from a full queue, 0 lost", out)
    assert m is not None, out
    assert int(m[1]) == len(seqs) and int(m[1]) + int(m[2]) == n, out
