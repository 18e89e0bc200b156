"""Config of ``spikefuse agent --config FILE`` (one per host of a multi-host launch).

Example (``configs/agent/agent.yaml``)::

    name: arm-board
    endpoint: tcp://0.0.0.0:7600        # where launchers reach this agent
    run_dir: /run/spikefuse              # this host's sockets, logs and received keys
    security:
      secret_key_file: keys/arm-board.key_secret   # spikefuse keygen arm-board
      allowed_client_keys: [keys/launch.key]       # the launchers allowed to start things
    heartbeat_timeout_s: null            # null: what the launcher asks for

CurveZMQ is mandatory when ``endpoint`` is not loopback (ipc or tcp://127.x may run
without keys, for tests on one machine)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from spikefuse.bus import SecurityConfig, is_loopback_or_local, validate_endpoint
from spikefuse.config import FileConfig, load_model
from spikefuse.errors import ConfigError
from spikefuse.sdk.config import DEFAULT_RUN_DIR


class AgentConfig(FileConfig):
    name: str = Field("agent", pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
    endpoint: str
    run_dir: Path = DEFAULT_RUN_DIR
    security: SecurityConfig | None = None
    heartbeat_timeout_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    """stop everything after this long without a word from the launcher (null: the
    ``heartbeat_timeout_s`` the launcher's start request names)"""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        try:
            return validate_endpoint(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _curve(self) -> AgentConfig:
        curve = self.security is not None and self.security.uses_curve
        if not is_loopback_or_local(self.endpoint) and not curve:
            raise ValueError(
                f"endpoint {self.endpoint} is not loopback: an agent there needs CurveZMQ "
                "(security.secret_key_file and allowed_client_keys: the launchers' public "
                "keys); 'insecure' is not accepted for agents"
            )
        if curve and not self.security.allowed_client_keys:
            raise ValueError("security.allowed_client_keys: list the launchers' public keys")
        return self


def load_agent_config(path: str | Path, overrides: list[str] | None = None) -> AgentConfig:
    cfg = load_model(AgentConfig, path, overrides)
    cfg.set_base_dir(Path(path).resolve().parent)
    return cfg
