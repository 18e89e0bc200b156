"""``cpu`` / ``sched`` of launched processes: checked when the launch file loads, applied to
real children (read back from /proc), and a refusal by the OS is reported, not hidden."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _core_util import write_yaml

from spikefuse.errors import ConfigError
from spikefuse.launch.model import load_launch

# the child: starts a thread, reports its pid, waits for 'go' (the test reads /proc meanwhile)
CHILD = """
import os, sys, threading, time
from pathlib import Path
d = Path(sys.argv[1])
ev = threading.Event()
t = threading.Thread(target=ev.wait, daemon=True)
t.start()
(d / (sys.argv[2] + ".pid")).write_text(str(os.getpid()))
deadline = time.monotonic() + 60
while not (d / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
"""


def _proc(name: str, tmp_path: Path, **over) -> dict:
    return {
        "name": name,
        "kind": "exec",
        "args": [sys.executable, "-c", CHILD, str(tmp_path), name],
        "restart": "never",
        **over,
    }


def _launch(lf: Path, prefix: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "spikefuse", "launch", str(lf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_pid(path: Path, proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return int(path.read_text())


def _status(pid: int) -> list[tuple[str, int]]:
    """(Cpus_allowed_list, policy) of every thread of ``pid``."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        fields = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines())
        out.append((fields["Cpus_allowed_list"].strip(), os.sched_getscheduler(int(task.name))))
    return out


def test_cpu_and_sched_apply_to_every_thread_of_a_real_child(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    lf = write_yaml(
        tmp_path / "l.yaml",
        {
            "run_dir": str(tmp_path / "run"),
            "processes": [
                _proc("pinned", tmp_path, cpu=[cpus[-1]], sched={"policy": "batch"}),
                _proc("free", tmp_path),
            ],
        },
    )
    proc = _launch(lf)
    try:
        pinned = _status(_wait_pid(tmp_path / "pinned.pid", proc))
        free = _status(_wait_pid(tmp_path / "free.pid", proc))
    finally:
        (tmp_path / "go").touch()
        out, _ = proc.communicate(timeout=60)
    assert len(pinned) >= 2, "the child's own thread is there too"
    assert pinned == [(str(cpus[-1]), os.SCHED_BATCH)] * len(pinned)
    assert {p for p, _ in free} == {_cpu_range(cpus)} and {s for _, s in free} == {0}
    assert proc.returncode == 0, out


def _cpu_range(cpus: list[int]) -> str:
    """The kernel's Cpus_allowed_list form: runs as a-b, joined by commas."""
    runs: list[list[int]] = []
    for c in cpus:
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


@pytest.mark.parametrize(
    "over, field, message",
    [
        ({"cpu": []}, "cpu", "at least one CPU"),
        ({"cpu": [0, 0]}, "cpu", "listed twice"),
        ({"cpu": [-1]}, "cpu", "CPU numbers are 0-4095"),
        ({"cpu": "0"}, "cpu", "list"),
        ({"sched": {"policy": "fifo"}}, "sched", "needs a priority of 1-99"),
        ({"sched": {"policy": "other", "priority": 5}}, "sched", "applies to the fifo and rr"),
        ({"sched": {"policy": "deadline"}}, "sched.policy", "'other'"),
        ({"sched": {"policy": "rr", "priority": 100}}, "sched.priority", "99"),
        ({"sched": {"policy": "rr", "prio": 5}}, "sched.prio", "unknown field"),
    ],
)
def test_bad_placement_is_a_config_error_naming_line_and_field(tmp_path, over, field, message):
    lf = write_yaml(tmp_path / "l.yaml", {"processes": [_proc("p", tmp_path, **over)]})
    with pytest.raises(ConfigError, match=rf"l.yaml:\d+: processes.0.{field}") as exc:
        load_launch(lf)
    assert message in str(exc.value)
    r = subprocess.run(
        [sys.executable, "-m", "spikefuse", "launch", str(lf)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and field in r.stderr


def test_cpus_this_launch_cannot_use_are_reported_by_line(tmp_path):
    lf = write_yaml(
        tmp_path / "l.yaml",
        {"processes": [_proc("p", tmp_path, cpu=[4095], restart="on-failure")]},
    )
    out, _ = _launch(lf).communicate(timeout=60)
    assert "p: not started: " in out and "l.yaml:" in out, out
    assert "processes[0].cpu: cannot run on CPU 4095" in out and "(EINVAL)" in out
    assert "allowed here: " + ",".join(map(str, sorted(os.sched_getaffinity(0)))) in out
    assert "restart" not in out.split("not started", 1)[1].split("\n", 1)[0]
    assert "required process(es) failed for good: p" in out


def test_a_real_time_policy_without_the_right_is_reported_as_eperm(tmp_path):
    lf = write_yaml(
        tmp_path / "l.yaml",
        {"processes": [_proc("rt", tmp_path, sched={"policy": "fifo", "priority": 10})]},
    )
    # root holds CAP_SYS_NICE: take it away from the launcher (util-linux setpriv); others
    # lack it already, and RLIMIT_RTPRIO 0 leaves no other way in
    prefix = ["setpriv", "--bounding-set=-sys_nice"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "spikefuse", "launch", str(lf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: __import__("resource").setrlimit(
            __import__("resource").RLIMIT_RTPRIO, (0, 0)
        ),
    )
    out, _ = proc.communicate(timeout=60)
    assert "rt: not started: " in out and "processes[0].sched: cannot use policy fifo" in out
    assert "(EPERM)" in out and "CAP_SYS_NICE" in out and proc.returncode == 1, out
