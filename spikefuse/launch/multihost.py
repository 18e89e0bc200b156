"""The launcher of a multi-host launch file: local children as before, the rest through
each host's ``spikefuse agent`` (see :mod:`spikefuse.launch.hosts` and docs/multihost.md).

Remote processes appear in the launcher's table as children without a local ``Popen``:
their state, pid, restarts and exit codes mirror the agent's reports, their output lines
arrive prefixed ``[name]`` as local ones do, and the supervisor's rules (required
processes, ``ends_launch``, the summary) apply unchanged. The launcher pings every agent
every ``heartbeat_timeout_s / 4`` (which also measures its clock offset); an agent silent
for ``heartbeat_timeout_s`` is reported lost and its required processes count as failed
for good, which stops the launch (every actuator then gets its stop, and its deadman
meanwhile)."""

from __future__ import annotations

import selectors
import time

from spikefuse.agent.link import AgentLink
from spikefuse.agent.messages import (
    KeyFile,
    LogLine,
    RemoteProcess,
    Reply,
    StartRequest,
    StateReport,
    StopRequest,
)
from spikefuse.errors import BusError, ConfigError
from spikefuse.launch import hosts as H
from spikefuse.launch.model import LAUNCH_KEY, LaunchFile
from spikefuse.launch.supervisor import NS_PER_S, Child, Supervisor
from spikefuse.transport.config import SecurityConfig

FAR_NS = 2**62
CLOCK_PROBES = 16
"""Ping/pong exchanges before anything starts (the clock estimate's first window)."""


class MultiHostSupervisor(Supervisor):
    def __init__(self, launch: LaunchFile, out=None) -> None:
        super().__init__(launch, out)
        self.wiring = H.wiring(launch)
        self.host_of = {p.name: H.host_of(p) for p in launch.processes}
        for i, child in enumerate(self.children):
            if child.spec.host is None:
                child.argv = H.command(launch, i, self.wiring)
        self.links: dict[str, AgentLink] = {}
        self.remote_pids: dict[str, int] = {}
        self.heartbeat_ns = round(launch.heartbeat_timeout_s * NS_PER_S)

    def _remote(self, child: Child) -> bool:
        return child.spec.host is not None

    # ---------------------------------------------------------------- start
    def _link_security(self, host: str) -> SecurityConfig | None:
        spec = self.launch.hosts[host]
        if spec.public_key is None:
            return None
        key_dir = self.launch.resolve_path(self.launch.security.key_dir)
        return SecurityConfig(
            secret_key_file=key_dir / f"{LAUNCH_KEY}.key_secret",
            server_public_key_file=self.launch.resolve_path(spec.public_key),
        )

    def _connect(self) -> bool:
        used = sorted({p.host for p in self.launch.processes if p.host})
        timeout_s = max(5.0, self.launch.heartbeat_timeout_s)
        for h in used:
            spec = self.launch.hosts[h]
            try:
                link = AgentLink(h, spec.endpoint, self._link_security(h))
            except (BusError, ConfigError) as exc:
                self.say(f"host {h}: cannot open {spec.endpoint}: {exc}")
                return False
            self.links[h] = link
            self.sel.register(link.sock.fileno(), selectors.EVENT_READ, None)
            t0 = time.monotonic_ns()
            if not link.measure_clock(CLOCK_PROBES, timeout_s):
                link.lost = True  # nothing to stop there
                self.say(
                    f"host {h}: no answer from the agent at {spec.endpoint} in {timeout_s:g} s "
                    "(is it running? does its allow-list hold this launcher's key?)"
                )
                return False
            best = link.clock.best
            self.say(
                f"host {h}: agent at {spec.endpoint} answered in "
                f"{(link.last_heard_ns - t0) / 1e6:.1f} ms; clock offset "
                f"{best.offset_ns / 1e3:+.1f} us (min round trip {best.rtt_ns / 1e3:.1f} us "
                f"of {link.clock.n})"
            )
        return True

    def _start_request(self, host: str) -> StartRequest:
        idx = [i for i, p in enumerate(self.launch.processes) if p.host == host]
        names = [self.launch.processes[i].name for i in idx]
        return StartRequest(
            launch=self.launch.name,
            cwd=str(self.launch.resolve_path(".")),
            heartbeat_timeout_s=self.launch.heartbeat_timeout_s,
            processes=[
                RemoteProcess(
                    spec=self.launch.processes[i],
                    argv=H.remote_command(self.launch, i, self.wiring),
                )
                for i in idx
            ],
            files=[KeyFile(name=k, text=v) for k, v in H.key_files(self.launch, names).items()],
        )

    def _start_hosts(self) -> bool:
        t0 = time.monotonic_ns()
        if not self._connect():
            return False
        self._clock_offsets()
        for h, link in self.links.items():
            link.send(self._start_request(h))
        for h, link in self.links.items():
            reply = link.wait_reply("start", max(5.0, self.launch.heartbeat_timeout_s), self._on)
            if reply is None or not reply.ok:
                why = "no reply" if reply is None else reply.error
                self.say(f"host {h}: start refused: {why}")
                return False
            self.remote_pids.update(reply.pids)
        self.say(
            f"{len(self.remote_pids)} process(es) started on "
            f"{len(self.links)} host(s) in {(time.monotonic_ns() - t0) / 1e6:.0f} ms"
        )
        return True

    def _clock_offsets(self) -> None:
        """Tell each core how far the clock of every other host it reads a sensor from
        lies from its own (``clock_offsets_ns``): theta(core host) - theta(sensor host),
        each theta an agent's measured clock minus the launcher's (0 for the launcher)."""
        theta = {H.LOCAL: 0, **{h: lk.clock.offset_ns for h, lk in self.links.items()}}
        procs = self.launch.processes
        producers = H.producers(self.launch)
        for j, c in enumerate(procs):
            for t in c.inputs if c.kind == "core" else []:
                i = producers.get(t)
                if not t.startswith("sensor/") or i is None:
                    continue
                hi, hj = H.host_of(procs[i]), H.host_of(c)
                if hi == hj:
                    continue
                off = theta[hj] - theta[hi]
                sensor = t.partition("/")[2]
                self.wiring.sets.setdefault(j, []).append(f"clock_offsets_ns.{sensor}={off}")
                self.say(
                    f"{c.name}: times of sensor {sensor} (host {hi}) moved by "
                    f"{off / 1e3:+.1f} us onto host {hj}'s clock"
                )
        for i, child in enumerate(self.children):
            if not self._remote(child):
                child.argv = H.command(self.launch, i, self.wiring)

    def start(self, child: Child) -> None:
        if not self._remote(child):
            super().start(child)

    def _run(self, duration_s: float | None) -> int:
        if not self._start_hosts():
            self.failed.append("hosts")
            return 1
        return super()._run(duration_s)

    # ---------------------------------------------------------------- messages
    def _on(self, link: AgentLink, msg) -> None:
        if isinstance(msg, LogLine):
            line = msg.line
            if line.startswith("[launch] "):
                line = f"[launch] {link.host}: {line[9:]}"
            self.out.write(line + "\n")
            self.out.flush()
        elif isinstance(msg, StateReport):
            self._mirror(link)
        elif isinstance(msg, Reply) and not msg.ok:
            self.say(f"host {link.host}: {msg.request}: {msg.error}")

    def _mirror(self, link: AgentLink) -> None:
        for child in self.children:
            ps = link.table.get(child.name)
            if ps is None or self.host_of[child.name] != link.host:
                continue
            child.state = ps.state
            child.restart_at_ns = FAR_NS if ps.state == "backoff" else None
            child.n_restarts = ps.restarts
            child.exit_codes = list(ps.exit_codes)
            self.remote_pids[child.name] = ps.pid
            failed = ps.state == "failed" and child.spec.required
            if failed and child.name not in self.failed and not self.stop_requested:
                self.failed.append(child.name)

    def _service(self) -> None:
        now = time.monotonic_ns()
        for link in self.links.values():
            if link.lost:
                continue
            while (msg := link.receive(0.0)) is not None:
                self._on(link, msg)
            if now - link.last_ping_ns >= self.heartbeat_ns // 4:
                link.ping()
            if now - (link.last_heard_ns or now) > self.heartbeat_ns:
                self._lost(link, now)

    def _lost(self, link: AgentLink, now: int) -> None:
        link.lost = True
        silent_s = (now - link.last_heard_ns) / NS_PER_S
        self.say(f"host {link.host} lost: no answer from its agent for {silent_s:.2f} s")
        for child in self.children:
            if self.host_of[child.name] == link.host and child.state not in ("done", "failed"):
                child.state = "lost"
                if child.spec.required and not self.stop_requested:
                    self.failed.append(child.name)

    def _pump(self, timeout_s: float) -> None:
        self._service()
        if any(not lk.lost and lk.sock.readable() for lk in self.links.values()):
            timeout_s = 0.0
        tick_s = self.heartbeat_ns / 4 / NS_PER_S
        super()._pump(min(timeout_s, tick_s) if self.links else timeout_s)
        self._service()

    # ---------------------------------------------------------------- stop
    def shutdown(self) -> None:
        super().shutdown()
        for h, link in self.links.items():
            if link.lost:
                continue
            link.send(StopRequest())
            wait_s = sum(
                c.spec.stop_timeout_s + 1.0 for c in self.children if self.host_of[c.name] == h
            )
            reply = link.wait_reply("stop", wait_s + 2.0, self._on)
            while (msg := link.receive(0.0)) is not None:
                self._on(link, msg)
            if reply is None:
                self.say(f"host {h}: no answer to stop in {wait_s + 2.0:g} s")
        for link in self.links.values():
            self.sel.unregister(link.sock.fileno())
            link.close()

    # ---------------------------------------------------------------- status
    def process_table(self) -> dict[str, dict[str, object]]:
        table = super().process_table()
        for name, row in table.items():
            row["host"] = self.host_of[name]
            if name in self.remote_pids:
                row["pid"] = self.remote_pids[name]
            link = self.links.get(row["host"])
            if link is not None:
                row["clock_offset_us"] = link.clock.offset_ns / 1e3
        return table

    def clock_offsets_ns(self) -> dict[str, int]:
        return {h: lk.clock.offset_ns for h, lk in self.links.items()}
