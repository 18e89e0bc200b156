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

from pydantic import Field, ValidationInfo, field_validator

from spikefuse.config import FileConfig, load_model
from spikefuse.sdk.config import DEFAULT_RUN_DIR
from spikefuse.transport.config import SecurityConfig
from spikefuse.transport.endpoint import Endpoint


class AgentConfig(FileConfig):
    name: str = Field("agent", pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
    endpoint: Endpoint
    run_dir: Path = DEFAULT_RUN_DIR
    security: SecurityConfig | None = Field(default=None, validate_default=True)
    heartbeat_timeout_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    """stop everything after this long without a word from the launcher (null: the
    ``heartbeat_timeout_s`` the launcher's start request names)"""

    @field_validator("security")
    @classmethod
    def _curve(cls, v: SecurityConfig | None, info: ValidationInfo) -> SecurityConfig | None:
        endpoint = info.data.get("endpoint")
        curve = v is not None and v.uses_curve
        if endpoint is not None and not endpoint.is_local and not curve:
            raise ValueError(
                f"endpoint {endpoint} is not loopback: an agent there needs CurveZMQ "
                "(secret_key_file, and allowed_client_keys: the launchers' public keys); "
                "'insecure' is not accepted for agents"
            )
        if curve and not v.allowed_client_keys:
            raise ValueError("allowed_client_keys: list the launchers' public keys")
        return v


def load_agent_config(path: str | Path, overrides: list[str] | None = None) -> AgentConfig:
    cfg = load_model(AgentConfig, path, overrides)
    cfg.set_base_dir(Path(path).resolve().parent)
    return cfg
