"""Config models shared by every driver: a driver's config subclasses :class:`DriverConfig`.

Channel groups are merged over the driver's defaults, so ``--set groups.gyro.rate_hz=500``
changes one field and keeps the rest; a group the driver does not know is an error.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from spikefuse.config import StrictModel
from spikefuse.encoding import DvsEncoder
from spikefuse.errors import ConfigError
from spikefuse.transport.config import DEFAULT_RUN_DIR as DEFAULT_RUN_DIR  # its old home
from spikefuse.transport.config import SameHostConfig, SecurityConfig
from spikefuse.transport.endpoint import Endpoint

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


class GroupConfig(StrictModel):
    """One channel group (e.g. gyro x/y/z): the graph input it feeds (default: the group's
    name), its scale in counts
    per unit (one count = ``1/scale`` units) and its polling rate (``None``: every sample
    the source delivers)."""

    input: str | None = Field(default=None, min_length=1, max_length=256)
    scale: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    rate_hz: float | None = Field(default=None, gt=0.0, le=1e6, allow_inf_nan=False)
    enabled: bool = True
    zero_rest_samples: int = Field(
        default=0,
        ge=0,
        le=10**9,
        description="auto-zero of the encoder (SigmaDeltaEncoder rest_samples): learn an "
        "offset under half a quantum after this many samples at rest; 0: off",
    )
    zero_tau_samples: float = Field(
        default=1.0, ge=1.0, le=1e9, allow_inf_nan=False, description="its time constant"
    )
    hysteresis: float = Field(
        default=0.0,
        ge=0.0,
        lt=0.5,
        description="encoder hysteresis in quanta (SigmaDeltaEncoder): a still reading on a "
        "level boundary does not toggle with its noise",
    )
    smooth_samples: float = Field(
        default=1.0,
        ge=1.0,
        le=1e9,
        allow_inf_nan=False,
        description="the encoder quantizes a moving average over this many samples "
        "(SigmaDeltaEncoder smooth_samples; 1: off): a noisy sensor stays quiet at rest",
    )
    quiet_samples: int = Field(
        default=0,
        ge=0,
        le=10**9,
        description="rest hysteresis (SigmaDeltaEncoder quiet_samples): after this many "
        "samples with nothing sent the threshold widens by quiet_hysteresis; 0: off",
    )
    quiet_hysteresis: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="the extra hysteresis at rest, quanta (a still sensor's noise does not "
        "toggle a level boundary)",
    )
    quiet_smooth_samples: float = Field(
        default=1.0,
        ge=1.0,
        le=1e9,
        allow_inf_nan=False,
        description="at rest the encoder quantizes a moving average over this many samples "
        "(SigmaDeltaEncoder quiet_smooth_samples; 1: off): vibration at rest averages out",
    )
    quiet_needs_zero: bool = Field(
        default=False,
        description="at rest only where every channel's reconstruction is 0 too "
        "(SigmaDeltaEncoder quiet_needs_zero: a rate sensor, not in a steady rotation)",
    )


class RetryConfig(StrictModel):
    """Read errors (``SensorError``/``OSError``) are retried after an exponential backoff
    ``initial_backoff_s * multiplier**(n-1)`` capped at ``max_backoff_s``; the heartbeat
    says ``degraded`` from the first failure and ``failed`` after ``failed_after``
    consecutive failures (retries go on: a sensor that comes back recovers to ``ok``)."""

    initial_backoff_s: float = Field(0.05, gt=0.0, le=3600.0)
    max_backoff_s: float = Field(2.0, gt=0.0, le=3600.0)
    multiplier: float = Field(2.0, ge=1.0, le=100.0)
    failed_after: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self

    def backoff_s(self, n_failures: int) -> float:
        """Delay before the next try after ``n_failures`` consecutive failures (>= 1)."""
        exp = min(max(n_failures - 1, 0), 64)
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**exp)


class DvsSettings(StrictModel):
    """DVS emulation of a camera group: output resolution (frames are area-resampled to it),
    contrast threshold C on log intensity, optional refractory period. The group's scale is
    ``1/threshold`` (one count = one threshold crossing)."""

    width: int = Field(64, ge=1, le=8192)
    height: int = Field(48, ge=1, le=8192)
    threshold: float = Field(0.2, gt=0.0, le=10.0, allow_inf_nan=False)
    refractory_us: float = Field(0.0, ge=0.0, le=1e7)
    eps: float = Field(1e-3, gt=0.0, le=1.0)

    def encoder(self) -> DvsEncoder:
        return DvsEncoder(
            self.width,
            self.height,
            threshold=self.threshold,
            refractory_ns=round(self.refractory_us * 1000),
            eps=self.eps,
        )


class DriverConfig(SameHostConfig):
    """Base of every driver config.

    Subclasses set ``default_groups`` (group name -> dict of :class:`GroupConfig` fields)
    and normally a default ``name``."""

    default_groups: ClassVar[dict[str, dict[str, Any]]] = {}

    name: str = "sensor"
    endpoint: Endpoint | None = None
    hwm: int = Field(10000, ge=1)
    security: SecurityConfig | None = None
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    max_batch_latency_ms: float = Field(1.0, ge=0.0, le=60_000.0)
    max_batch_events: int = Field(65536, ge=1, le=1 << 24)
    heartbeat_period_s: float = Field(1.0, gt=0.0, le=3600.0)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    duration_s: float | None = Field(default=None, gt=0.0)
    wait_for_subscribers: int = Field(0, ge=0)
    wait_for_subscribers_timeout_s: float = Field(5.0, ge=0.0)

    @model_validator(mode="before")
    @classmethod
    def _merge_groups(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.default_groups:
            return data
        given = data.get("groups") or {}
        if not isinstance(given, dict):
            return data  # let field validation report the type error
        unknown = sorted(set(given) - set(cls.default_groups))
        if unknown:
            raise ValueError(
                f"unknown channel group(s) {unknown}; this driver has {sorted(cls.default_groups)}"
            )
        merged: dict[str, Any] = {}
        for gname, defaults in cls.default_groups.items():
            over = given.get(gname)
            if over is None:
                merged[gname] = dict(defaults)
            elif isinstance(over, dict):
                merged[gname] = {**defaults, **over}
            else:
                merged[gname] = over  # a type error the field validation will name
        return {**data, "groups": merged}

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                "a sensor name is 1-128 characters: a letter or _, then letters, digits, _ . -"
            )
        return v

    # ---------------------------------------------------------------- helpers
    def resolved_endpoint(self) -> str:
        """``endpoint`` or the default ``<run_dir>/<name>.sock`` (over ``local_transport``)."""
        if self.endpoint is not None:
            return self.endpoint
        return self.local_endpoint(self.name)

    def input_of(self, group: str) -> str:
        g = self.groups[group]
        return g.input if g.input is not None else group

    def enabled_groups(self) -> list[str]:
        return [g for g, c in self.groups.items() if c.enabled]

    def frame_encoder(self, group: str) -> DvsEncoder:
        """The DVS encoder of a group that yields frames: from a ``dvs`` field
        (:class:`DvsSettings`) if the config has one."""
        dvs = getattr(self, "dvs", None)
        if not isinstance(dvs, DvsSettings):
            raise ConfigError(
                f"group '{group}' yields frames but {type(self).__name__} has no 'dvs' settings"
            )
        return dvs.encoder()


def default_source_type(data: Any, default: str) -> Any:
    """For a ``source`` union discriminated by ``type``: fill in ``type: <default>`` when a
    config (or ``--set source.x=...``) gives source fields without a type."""
    if isinstance(data, dict) and isinstance(data.get("source"), dict):
        if "type" not in data["source"]:
            return {**data, "source": {"type": default, **data["source"]}}
    return data
