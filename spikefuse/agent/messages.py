"""The agent's control protocol: typed messages, two frames each ``[kind, JSON]``.

Launcher -> agent: :class:`StartRequest`, :class:`StopRequest`, :class:`StatusRequest`,
:class:`Ping` (heartbeat and clock probe). Agent -> launcher: :class:`Reply` (to start,
stop and malformed requests), :class:`Pong`, :class:`LogLine` (a child's output line,
already prefixed ``[name]``), :class:`StateReport` (the agent's process table). Every
payload is validated into its model (``extra="forbid"``); a bad one is a
:class:`~spikefuse.errors.ProtocolError` naming the field, never a crash."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError

from spikefuse.config import StrictModel
from spikefuse.errors import ProtocolError
from spikefuse.launch.model import ProcessSpec

MAX_CONTROL_BYTES = 16 * 1024 * 1024
_KEY_FILE = r"^[A-Za-z0-9_.\-]{1,128}\.(key|key_secret)$"


class RemoteProcess(StrictModel):
    spec: ProcessSpec
    argv: list[str] = Field(min_length=1)
    """the command; ``@PYTHON@``, ``@RUN_DIR@`` and ``@KEY_DIR@`` in it are replaced by the
    agent's Python, run folder and the folder it wrote the launch's keys to"""


class KeyFile(StrictModel):
    name: str = Field(pattern=_KEY_FILE)
    text: str = Field(max_length=4096)


class StartRequest(StrictModel):
    kind: Literal["start"] = "start"
    launch: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")
    cwd: str
    """the launch file's folder (children run there when it exists on this host)"""
    heartbeat_timeout_s: float = Field(gt=0.0, le=3600.0)
    processes: list[RemoteProcess] = Field(min_length=1)
    files: list[KeyFile] = Field(default_factory=list)


class StopRequest(StrictModel):
    kind: Literal["stop"] = "stop"
    names: list[str] = Field(default_factory=list)
    """processes to stop (empty: every one, which ends the session)"""


class StatusRequest(StrictModel):
    kind: Literal["status"] = "status"


class Ping(StrictModel):
    kind: Literal["ping"] = "ping"
    t1_ns: int
    """the launcher's monotonic clock when it sent this"""


class Reply(StrictModel):
    kind: Literal["reply"] = "reply"
    request: str
    ok: bool
    error: str = ""
    pids: dict[str, int] = Field(default_factory=dict)


class Pong(StrictModel):
    kind: Literal["pong"] = "pong"
    t1_ns: int
    t2_ns: int
    """the agent's monotonic clock when the ping arrived"""
    t3_ns: int
    """... and when this pong left"""


class LogLine(StrictModel):
    kind: Literal["log"] = "log"
    line: str


class ProcState(StrictModel):
    kind: str
    state: str
    pid: int
    restarts: int
    exit_codes: list[int]


class StateReport(StrictModel):
    kind: Literal["state"] = "state"
    processes: dict[str, ProcState]


ControlMessage = (
    StartRequest | StopRequest | StatusRequest | Ping | Reply | Pong | LogLine | StateReport
)
_BY_KIND: dict[str, type[StrictModel]] = {
    m.model_fields["kind"].default: m
    for m in (StartRequest, StopRequest, StatusRequest, Ping, Reply, Pong, LogLine, StateReport)
}


def encode_control(msg: ControlMessage) -> list[bytes]:
    return [msg.kind.encode(), msg.model_dump_json().encode()]


def decode_control(frames: list[bytes]) -> ControlMessage:
    """The message in ``[kind, JSON]``; ProtocolError (reason, path) when it is not one."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [kind, JSON], found {len(frames)}", "bad_frames")
    kind_raw, payload = frames
    kind = kind_raw.decode("utf-8", "replace")[:40]
    model = _BY_KIND.get(kind)
    if model is None:
        raise ProtocolError(
            f"unknown message kind {kind!r} (expected one of {', '.join(sorted(_BY_KIND))})",
            "unknown_kind",
        )
    if len(payload) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"{len(payload)} bytes > {MAX_CONTROL_BYTES}", "too_large", kind)
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or "payload"
        raise ProtocolError(
            f"{err.get('msg', 'invalid')} ({exc.error_count()} error(s))",
            "bad_field",
            f"{kind}.{where}",
        ) from None
