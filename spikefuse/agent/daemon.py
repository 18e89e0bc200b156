"""``spikefuse agent``: starts, supervises and stops one launcher's processes on this host.

One thread: a ROUTER control socket (see :class:`~spikefuse.transport.control.ControlSocket`) and the
launcher's :class:`~spikefuse.launch.Supervisor` share one ``select`` loop. A launcher
opens a session with a :class:`StartRequest`; the agent writes the keys it was sent into
``<run_dir>/<launch>-keys/`` (0600), starts the processes exactly as ``spikefuse launch``
does (same supervisor: restart policies, process groups, PDEATHSIG) and streams every
output line back. Any message from the launcher counts as a heartbeat; after
``heartbeat_timeout_s`` of silence everything the session started is stopped. One
session at a time; a bad request gets a :class:`Reply` with the reason, never a crash."""

from __future__ import annotations

import logging
import os
import selectors
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spikefuse.agent.config import AgentConfig
from spikefuse.agent.messages import (
    ControlMessage,
    LogLine,
    Ping,
    Pong,
    ProcState,
    Reply,
    StartRequest,
    StateReport,
    StatusRequest,
    StopRequest,
    decode_control,
    encode_control,
)
from spikefuse.errors import ConfigError, ProtocolError
from spikefuse.launch.model import LaunchFile
from spikefuse.launch.supervisor import Supervisor
from spikefuse.transport.control import ControlSocket

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
IDLE_WAIT_S = 0.1
"""Longest one wait of the loop (a stop signal is seen within this)."""


class LineSink:
    """File-like ``out`` of the session's supervisor: each complete line goes to the
    launcher (:class:`LogLine`) and to the agent's own stdout (its journal)."""

    def __init__(self, agent: Agent, peer: bytes) -> None:
        self.agent = agent
        self.peer = peer
        self._buf = ""

    def write(self, text: str) -> None:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self.agent.local_out.write(line + "\n")
            self.agent.send(self.peer, LogLine(line=line))

    def flush(self) -> None:
        self.agent.local_out.flush()


@dataclass
class Session:
    peer: bytes
    launch: str
    sup: Supervisor
    timeout_ns: int
    last_seen_ns: int
    last_table: dict = field(default_factory=dict)


def _substitute(argv: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        for k, v in values.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    os.chmod(path, 0o600)


class Agent:
    def __init__(self, cfg: AgentConfig, out=None) -> None:
        self.cfg = cfg
        self.local_out = out or sys.stdout
        self.run_dir = cfg.resolve_path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ctl = ControlSocket("server", cfg.endpoint, security=cfg.resolved_security())
        self.session: Session | None = None
        self.n_bad_requests = 0
        self.say(f"listening on {self.ctl.endpoint} (run dir {self.run_dir})")

    # ---------------------------------------------------------------- output
    def say(self, text: str) -> None:
        self.local_out.write(f"[agent {self.cfg.name}] {text}\n")
        self.local_out.flush()

    def send(self, peer: bytes, msg: ControlMessage) -> None:
        self.ctl.send([peer, *encode_control(msg)])

    # ---------------------------------------------------------------- requests
    def serve(self) -> None:
        """Handle every request waiting on the control socket."""
        while (frames := self.ctl.recv(0.0)) is not None:
            t2_ns = time.monotonic_ns()
            peer, body = frames[0], frames[1:]
            try:
                msg = decode_control(body)
            except ProtocolError as exc:
                self._bad(peer, "?", f"malformed request: {exc}")
                continue
            if self.session is not None and peer == self.session.peer:
                self.session.last_seen_ns = t2_ns
            self._handle(peer, msg, t2_ns)

    def _bad(self, peer: bytes, request: str, error: str) -> None:
        self.n_bad_requests += 1
        self.say(f"refused a {request} request: {error}")
        self.send(peer, Reply(request=request, ok=False, error=error))

    def _handle(self, peer: bytes, msg: ControlMessage, t2_ns: int) -> None:
        if isinstance(msg, Ping):
            self.send(peer, Pong(t1_ns=msg.t1_ns, t2_ns=t2_ns, t3_ns=time.monotonic_ns()))
            return
        s = self.session
        if isinstance(msg, StatusRequest):
            self.send(peer, self._state(s) if s is not None else StateReport(processes={}))
            return
        if isinstance(msg, StartRequest):
            if s is not None:
                why = "this launcher's processes are running already"
                if peer != s.peer:
                    why = f"busy: serving launch '{s.launch}' of another launcher"
                self._bad(peer, "start", why)
                return
            self._start(peer, msg)
            return
        if isinstance(msg, StopRequest):
            if s is None or peer != s.peer:
                self._bad(peer, "stop", "no processes of yours run here")
                return
            self._stop(s, msg)
            return
        self._bad(peer, msg.kind, f"'{msg.kind}' is not a request an agent takes")

    def _start(self, peer: bytes, req: StartRequest) -> None:
        key_dir = self.run_dir / f"{req.launch}-keys"
        try:
            launch = LaunchFile.model_validate(
                {
                    "name": req.launch,
                    "run_dir": str(self.run_dir),
                    "processes": [p.spec.model_dump(mode="json") for p in req.processes],
                }
            )
        except ValueError as exc:
            self._bad(peer, "start", f"invalid processes: {exc}")
            return
        cwd = Path(req.cwd)
        launch.set_base_dir(cwd if cwd.is_dir() else self.run_dir)
        try:
            self._write_keys(key_dir, req)
        except OSError as exc:
            self._bad(peer, "start", f"cannot write keys into {key_dir}: {exc}")
            return
        values = {"@PYTHON@": sys.executable, "@KEY_DIR@": str(key_dir)}
        values["@RUN_DIR@"] = str(self.run_dir)
        sup = Supervisor(launch, out=LineSink(self, peer))
        for child, rp in zip(sup.children, req.processes, strict=True):
            child.argv = _substitute(rp.argv, values)
        timeout_s = self.cfg.heartbeat_timeout_s or req.heartbeat_timeout_s
        now = time.monotonic_ns()
        s = Session(peer, req.launch, sup, round(timeout_s * NS_PER_S), now)
        self.session = s
        sup.sel.register(self.ctl.fileno(), selectors.EVENT_READ, None)
        self.say(
            f"launch '{req.launch}': starting {len(sup.children)} process(es), "
            f"heartbeat timeout {timeout_s:g} s"
        )
        for child in sup.children:
            sup.start(child)
        pids = {c.name: c.proc.pid for c in sup.children if c.proc is not None}
        self.send(peer, Reply(request="start", ok=True, pids=pids))
        self.report(s)

    def _write_keys(self, key_dir: Path, req: StartRequest) -> None:
        if not req.files:
            return
        key_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(key_dir, 0o700)
        for f in req.files:
            _write_private(key_dir / f.name, f.text)

    def _stop(self, s: Session, req: StopRequest) -> None:
        names = {c.name for c in s.sup.children}
        unknown = [n for n in req.names if n not in names]
        if unknown:
            self._bad(s.peer, "stop", f"unknown process(es) {unknown} (here: {sorted(names)})")
            return
        if not req.names or set(req.names) == names:
            self.end_session("stop requested by the launcher")
            self.send(s.peer, Reply(request="stop", ok=True))
            return
        for child in s.sup.children:
            if child.name in req.names:
                s.sup.stop_child(child)
        self.send(s.peer, Reply(request="stop", ok=True))

    # ---------------------------------------------------------------- session
    def _state(self, s: Session) -> StateReport:
        table = s.sup.process_table()
        return StateReport(processes={k: ProcState(**v) for k, v in table.items()})

    def report(self, s: Session) -> None:
        """Send the process table when it changed."""
        table = s.sup.process_table()
        if table != s.last_table:
            s.last_table = table
            self.send(s.peer, self._state(s))

    def end_session(self, why: str) -> None:
        s = self.session
        if s is None:
            return
        running = [c.name for c in s.sup.children if c.state in ("running", "backoff")]
        self.say(f"launch '{s.launch}': {why}: stopping {', '.join(running) or 'nothing'}")
        s.sup.shutdown()
        self.report(s)
        s.sup.sel.unregister(self.ctl.fileno())
        s.sup.close()
        self.session = None
        self.say(f"launch '{s.launch}': every process stopped")

    def step(self) -> None:
        """One round: requests, heartbeat deadline, due restarts, output, state."""
        self.serve()
        s = self.session
        if s is None:
            self._idle_wait()
            return
        now = time.monotonic_ns()
        if now - s.last_seen_ns > s.timeout_ns:
            self.end_session(f"no word from the launcher for {s.timeout_ns / NS_PER_S:g} s")
            return
        s.sup.restart_due(now)
        self.report(s)
        if self.ctl.readable():
            return
        wake = [s.last_seen_ns + s.timeout_ns + 1, now + round(IDLE_WAIT_S * NS_PER_S)]
        wake += [c.restart_at_ns for c in s.sup.children if c.state == "backoff"]
        s.sup.pump(max(min(wake) - time.monotonic_ns(), 0) / NS_PER_S)

    def _idle_wait(self) -> None:
        if not self.ctl.readable():
            with selectors.DefaultSelector() as sel:
                sel.register(self.ctl.fileno(), selectors.EVENT_READ)
                sel.select(IDLE_WAIT_S)

    def run(self, stop) -> int:
        try:
            while not stop.requested:
                self.step()
        finally:
            self.end_session(f"agent stopping (signal {stop.signum})")
            self.ctl.close()
        return 0


def run_agent(cfg: AgentConfig) -> int:
    from spikefuse.sdk.timing import StopSignal

    if cfg.security is not None and cfg.security.insecure:
        raise ConfigError("an agent does not run with 'insecure: true'", "security.insecure")
    with StopSignal() as stop:
        return Agent(cfg).run(stop)
