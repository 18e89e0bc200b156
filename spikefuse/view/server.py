"""The web viewer's server: the ``rerun`` binary shipped in the ``rerun-sdk`` wheel, run as
a child process with ``--serve-web``. It serves the viewer (HTML + WebAssembly, from the
wheel: no internet) over HTTP and buffers the logged data for browsers over gRPC; both
sockets bind to ``bind`` (loopback by default, which the in-process ``rr.serve_web_viewer``
of rerun 0.41 cannot do: it always binds 0.0.0.0). Rerun's usage analytics are off for
this child (a private config directory under the run directory says so)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from spikefuse.errors import BusError, ConfigError
from spikefuse.launch.supervisor import _pdeathsig

READY_TIMEOUT_S = 30.0


def rerun_binary() -> Path:
    """The ``rerun`` executable of the installed ``rerun-sdk`` wheel."""
    spec = importlib.util.find_spec("rerun_cli")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("rerun_cli", name="rerun")  # -> "pip install spikefuse[view]"
    exe = Path(next(iter(spec.submodule_search_locations))) / "rerun"
    if not exe.is_file():
        raise ConfigError(f"the rerun-sdk wheel has no viewer binary at {exe}", "rerun-sdk")
    return exe


def pick_port(bind: str, port: int, what: str) -> int:
    """``port`` if it is free on ``bind`` (0: any free port); a port in use is a config
    error naming the option."""
    with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as s:
        try:
            s.bind((bind, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {bind}:{port}: {exc.strerror}", what) from None
        return s.getsockname()[1]


def _private_config(state_dir: Path) -> dict[str, str]:
    """Environment of the rerun child: its config and data directories under
    ``state_dir``, with analytics disabled."""
    conf = state_dir / "rerun"
    conf.mkdir(parents=True, exist_ok=True)
    settings = {
        "analytics_enabled": False,
        "analytics_id": "0" * 32,
        "metadata": {},
        "config_file_path": str(conf / "analytics.json"),
        "data_dir_path": str(conf / "analytics"),
    }
    (conf / "analytics.json").write_text(json.dumps(settings), encoding="utf-8")
    return {"XDG_CONFIG_HOME": str(state_dir), "XDG_DATA_HOME": str(state_dir)}


class RerunServer:
    """Start with :meth:`start`; ``url`` is what a browser opens; :meth:`close` stops it."""

    def __init__(
        self, bind: str, web_port: int, grpc_port: int, memory_limit: str, state_dir: Path
    ):
        self.bind = bind
        self.web_port = pick_port(bind, web_port, "web_port (--port)")
        self.grpc_port = pick_port(bind, grpc_port, "grpc_port (--grpc-port)")
        if self.web_port == self.grpc_port:
            raise ConfigError(f"web and gRPC ports are both {self.web_port}", "--grpc-port")
        self.memory_limit = memory_limit
        self.state_dir = state_dir
        self.log_path = state_dir / "rerun.log"
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind

    @property
    def grpc_url(self) -> str:
        return f"rerun+http://{self.host}:{self.grpc_port}/proxy"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.web_port}/?url={quote(self.grpc_url, safe='')}"

    def start(self) -> RerunServer:
        exe = rerun_binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **_private_config(self.state_dir))
        argv = [str(exe), "--serve-web", "--bind", self.bind, "--port", str(self.grpc_port)]
        argv += ["--web-viewer-port", str(self.web_port)]
        argv += ["--server-memory-limit", self.memory_limit]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # stopped by us after a last flush, not by group signals
                preexec_fn=_pdeathsig,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until both ports accept connections (or the child exits: an error)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = [self.grpc_port, self.web_port]
        while pending:
            self.check()
            if time.monotonic() > deadline:
                raise BusError(f"the rerun server did not listen within {READY_TIMEOUT_S} s")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, pending[0]), 0.2),
            ):
                pending.pop(0)
                continue
            time.sleep(0.05)

    def check(self) -> None:
        """A server that exited is an error (the view is useless without it)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BusError(
                f"the rerun server exited with code {self.proc.returncode} "
                f"(its log: {self.log_path})"
            )

    def close(self, timeout_s: float = 2.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> RerunServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
