"""Start, watch, restart and stop the processes of a launch file.

One thread, one ``select`` loop over the children's output pipes and a signal wake-up
socket: output lines are printed prefixed ``[name]``; a pipe's EOF means its child is
exiting, which is reaped and handled by its restart policy (never / on-failure / always,
exponential backoff, ``max_restarts``). Children run in their own process group (signals
are sent to the group) and with ``PR_SET_PDEATHSIG=SIGKILL`` (Linux), so none outlives the
launcher. SIGINT/SIGTERM stop everything in reverse start order (SIGTERM, then SIGKILL
after ``stop_timeout_s``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from spikefuse.launch.model import LaunchFile, ProcessSpec
from spikefuse.launch.placement import Placement

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
PR_SET_PDEATHSIG = 1
STABLE_AFTER_S = 10.0
"""A child that ran this long resets its backoff (not its restart count)."""


def _pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Child:
    spec: ProcessSpec
    argv: list[str]
    order: int
    proc: subprocess.Popen | None = None
    started_ns: int = 0
    n_restarts: int = 0
    n_consecutive: int = 0
    restart_at_ns: int | None = None
    state: str = "pending"  # pending running backoff done failed stopped
    exit_codes: list[int] = field(default_factory=list)
    buf: bytes = b""

    @property
    def name(self) -> str:
        return self.spec.name


class Supervisor:
    def __init__(self, launch: LaunchFile, out=None):
        self.launch = launch
        self.out = out or sys.stdout
        self.children = [Child(p, launch.command(p), i) for i, p in enumerate(launch.processes)]
        self.sel = selectors.DefaultSelector()
        self.stop_requested = False
        self.stop_signal: int | None = None
        self.failed: list[str] = []
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self.sel.register(self._rsock, selectors.EVENT_READ, None)
        self._status_pub = None
        self._status_seq = 0

    # ---------------------------------------------------------------- output
    def say(self, text: str) -> None:
        self.out.write(f"[launch] {text}\n")
        self.out.flush()

    def _emit(self, child: Child, data: bytes, final: bool = False) -> None:
        child.buf += data
        *lines, child.buf = child.buf.split(b"\n")
        if final and child.buf:
            lines.append(child.buf)
            child.buf = b""
        for line in lines:
            self.out.write(f"[{child.name}] {line.decode('utf-8', 'replace').rstrip()}\n")
        if lines:
            self.out.flush()

    # ---------------------------------------------------------------- processes
    def start(self, child: Child) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with Placement(child.spec.cpu, child.spec.sched, before=_pdeathsig) as placement:
            try:
                child.proc = subprocess.Popen(
                    child.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=placement,
                    env=env,
                    cwd=str(self.launch.resolve_path(".")),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                refused = placement.refusal()
                if refused is None:
                    self.say(f"{child.name}: cannot start {child.argv[0]}: {exc}")
                    self._exited(child, 127)
                else:
                    self._refused(child, *refused)
                return
        os.set_blocking(child.proc.stdout.fileno(), False)
        self.sel.register(child.proc.stdout, selectors.EVENT_READ, child)
        child.started_ns = time.monotonic_ns()
        child.state = "running"
        child.restart_at_ns = None
        self.say(f"started {child.name} (pid {child.proc.pid}): {' '.join(child.argv[1:])}")

    def _refused(self, child: Child, field: str, reason: str) -> None:
        """The OS refused the process's ``cpu`` / ``sched``: restarting cannot help."""
        where = self.launch.where(f"processes[{child.order}]", field)
        self.say(f"{child.name}: not started: {where}: {reason}")
        child.exit_codes.append(126)
        child.state = "failed"
        if child.spec.required:
            self.failed.append(child.name)

    def _read(self, child: Child) -> None:
        proc = child.proc
        try:
            data = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if data:
            self._emit(child, data)
            return
        # EOF: the child is exiting
        self.sel.unregister(proc.stdout)
        proc.stdout.close()
        self._emit(child, b"", final=True)
        code = proc.wait()
        self._exited(child, code)

    def _exited(self, child: Child, code: int) -> None:
        child.exit_codes.append(code)
        ran_s = (time.monotonic_ns() - child.started_ns) / NS_PER_S if child.started_ns else 0.0
        if ran_s >= STABLE_AFTER_S:
            child.n_consecutive = 0
        desc = f"signal {-code}" if code < 0 else f"code {code}"
        if self.stop_requested:
            child.state = "stopped"
            return
        spec = child.spec
        wants = spec.restart == "always" or (spec.restart == "on-failure" and code != 0)
        if wants and child.n_restarts < spec.max_restarts:
            delay_s = min(spec.backoff_s * (2**child.n_consecutive), spec.backoff_max_s)
            child.n_consecutive += 1
            child.n_restarts += 1
            child.state = "backoff"
            child.restart_at_ns = time.monotonic_ns() + round(delay_s * NS_PER_S)
            self.say(
                f"{child.name} exited ({desc}) after {ran_s:.2f} s; restart "
                f"{child.n_restarts}/{spec.max_restarts} in {delay_s:.2f} s"
            )
            return
        if code == 0 and spec.restart != "always":
            child.state = "done"
            self.say(f"{child.name} finished ({desc})")
            return
        child.state = "failed"
        why = "no restarts left" if wants else f"restart policy '{spec.restart}'"
        self.say(f"{child.name} exited ({desc}) and stays down ({why})")
        if spec.required:
            self.failed.append(child.name)

    # ---------------------------------------------------------------- signals
    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True
        self.stop_signal = signum

    @contextlib.contextmanager
    def _signals(self):
        old_fd = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_fd)

    # ---------------------------------------------------------------- main loop
    def run(self, duration_s: float | None = None) -> int:
        duration_s = duration_s if duration_s is not None else self.launch.duration_s
        with self._signals():
            self.launch.write_security_files()
            self._open_status()
            try:
                return self._run(duration_s)
            finally:
                self.shutdown()
                self._close_status()
                self._summary()

    def _run(self, duration_s: float | None) -> int:
        t0 = time.monotonic_ns()
        end_ns = t0 + round(duration_s * NS_PER_S) if duration_s else None
        period_ns = round(self.launch.status_period_s * NS_PER_S)
        next_status_ns = t0
        for child in self.children:
            if self.stop_requested:
                break
            self.start(child)
        while not self.stop_requested and not self.failed:
            now = time.monotonic_ns()
            if end_ns is not None and now >= end_ns:
                self.say(f"duration {duration_s:g} s reached")
                break
            for child in self.children:
                if child.state == "backoff" and child.restart_at_ns <= now:
                    self.start(child)
            if now >= next_status_ns:
                self._publish_status(now)
                next_status_ns = now + period_ns
            if all(c.state in ("done", "failed") for c in self.children):
                self.say("every process has finished")
                break
            ended = [c.name for c in self.children if c.state == "done" and c.spec.ends_launch]
            if ended:
                self.say(f"{ended[0]} finished: stopping the launch (ends_launch)")
                break
            wake = [next_status_ns] + [
                c.restart_at_ns for c in self.children if c.state == "backoff"
            ]
            if end_ns is not None:
                wake.append(end_ns)
            self._pump(max(min(wake) - time.monotonic_ns(), 0) / NS_PER_S)
        if self.stop_requested:
            self.say(f"signal {self.stop_signal}: stopping")
        if self.failed:
            self.say(f"required process(es) failed for good: {', '.join(self.failed)}")
            return 1
        return 0

    def restart_due(self, now_ns: int) -> None:
        """Start every child whose restart backoff is over."""
        for child in self.children:
            if child.state == "backoff" and child.restart_at_ns <= now_ns:
                self.start(child)

    def pump(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for output or exits of the children and handle them
        (for loops that drive the supervisor themselves, such as ``spikefuse agent``)."""
        self._pump(timeout_s)

    def stop_child(self, child: Child) -> None:
        """SIGTERM one running child for good (no restart)."""
        if child.proc is not None and child.state == "running":
            child.spec.restart = "never"
            self._signal_group(child.proc, signal.SIGTERM)

    def close(self) -> None:
        """Release the selector and the signal wake-up sockets (after :meth:`shutdown`)."""
        self.sel.close()
        self._rsock.close()
        self._wsock.close()

    def _pump(self, timeout_s: float) -> None:
        for key, _ in self.sel.select(timeout_s):
            if key.data is None:
                with contextlib.suppress(OSError):
                    while self._rsock.recv(4096):
                        pass
            else:
                self._read(key.data)

    def shutdown(self) -> None:
        """Stop running children in reverse start order: SIGTERM to the group, then
        SIGKILL after the process's ``stop_timeout_s``."""
        self.stop_requested = True
        for child in sorted(self.children, key=lambda c: -c.order):
            proc = child.proc
            if proc is None or child.state not in ("running",):
                if child.state == "backoff":
                    child.state = "stopped"
                continue
            self._signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic_ns() + round(child.spec.stop_timeout_s * NS_PER_S)
            while proc.stdout is not None and not proc.stdout.closed:
                left = deadline - time.monotonic_ns()
                if left <= 0:
                    self.say(f"{child.name} did not stop in {child.spec.stop_timeout_s} s: SIGKILL")
                    self._signal_group(proc, signal.SIGKILL)
                    deadline = time.monotonic_ns() + NS_PER_S
                self._pump(max(left, 0) / NS_PER_S if left > 0 else 0.05)
            # group members that kept running after the leader left
            self._signal_group(proc, signal.SIGKILL)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    # ---------------------------------------------------------------- status
    def _open_status(self) -> None:
        from spikefuse.errors import BusError, ConfigError
        from spikefuse.launch.model import LAUNCH_KEY
        from spikefuse.transport.config import SecurityConfig
        from spikefuse.transport.publisher import Publisher

        try:
            block = self.launch.security_for(LAUNCH_KEY)
            security = None if block is None else SecurityConfig.model_validate(block)
            self._status_pub = Publisher(self.launch.status_endpoint(), security=security)
        except (BusError, ConfigError) as exc:
            self.say(f"no status publisher: {exc}")

    def _close_status(self) -> None:
        if self._status_pub is not None:
            self._status_pub.close()

    def process_table(self) -> dict[str, dict[str, object]]:
        return {
            c.name: {
                "kind": c.spec.kind,
                "state": c.state,
                "pid": c.proc.pid if c.proc is not None else 0,
                "restarts": c.n_restarts,
                "exit_codes": c.exit_codes[-5:],
            }
            for c in self.children
        }

    def _publish_status(self, now_ns: int) -> None:
        if self._status_pub is None:
            return
        from spikefuse.protocol import Status

        self._status_pub.send(
            Status(
                f"launch-{self.launch.name}",
                self._status_seq,
                now_ns,
                {"processes": self.process_table()},
            )
        )
        self._status_seq += 1

    def _summary(self) -> None:
        self.say("summary:")
        self.out.write(f"  {'process':<12} {'kind':<9} {'state':<8} {'restarts':>8}  exit codes\n")
        for c in self.children:
            codes = ",".join(str(x) for x in c.exit_codes) or "-"
            self.out.write(
                f"  {c.name:<12} {c.spec.kind:<9} {c.state:<8} {c.n_restarts:>8}  {codes}\n"
            )
        for c in self.children:
            if c.spec.kind == "record" and c.n_restarts:
                self.out.write(
                    f"  {c.name}: restarted {c.n_restarts}x; nothing was overwritten: each "
                    "start continued into a new file (its 'recording continues into' lines)\n"
                )
        self.out.flush()
