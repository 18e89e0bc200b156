"""Node types of a fusion graph (description only: no execution state here).

Every node is a pydantic model (``extra="forbid"``). Array fields accept nested lists or
numpy arrays and are stored as C-contiguous float64 arrays; NaN/Inf is rejected.

Semantics (shared by every backend):

* every node has a ``scale`` k (spikes per unit). It sends integer counts
  ``n = round(k*value - sent)`` (round half away from zero), carrying the residual, so
  ``|k*value - sent| <= 1/2`` always; a receiver sees ``sent/k``;
* ``source`` may be one node name or a list of names, whose outputs are concatenated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid", "abs", "clip")


def _to_array(v: Any) -> np.ndarray:
    try:
        a = np.ascontiguousarray(np.asarray(v, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a numeric array ({exc})") from None
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"contains NaN/Inf at index {tuple(int(i) for i in bad)}")
    return a


Array = Annotated[
    np.ndarray,
    BeforeValidator(_to_array),
    PlainSerializer(lambda a: a.tolist(), return_type=list),
]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")]
Scale = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Sources = Name | list[Name]


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    name: Name
    scale: Scale = 100.0

    @property
    def sources(self) -> list[str]:
        return []

    @property
    def size(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


def _as_list(src: str | list[str]) -> list[str]:
    return [src] if isinstance(src, str) else list(src)


class Input(Node):
    """A group of sensor channels that receives integer counts at ``scale``."""

    type: Literal["input"] = "input"
    n: int = Field(gt=0, le=1 << 24, alias="size")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def size(self) -> int:
        return self.n


class _Activated(Node):
    activation: Literal["identity", "relu", "tanh", "sigmoid", "abs", "clip"] = "identity"
    lo: float | None = Field(default=None, allow_inf_nan=False)
    hi: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_clip(self):
        if self.activation == "clip":
            if self.lo is None or self.hi is None:
                raise ValueError("activation 'clip' needs both lo and hi")
            if not self.lo < self.hi:
                raise ValueError(f"clip needs lo < hi, found lo={self.lo}, hi={self.hi}")
        elif self.lo is not None or self.hi is not None:
            raise ValueError(f"lo/hi only apply to activation 'clip', not '{self.activation}'")
        return self


class Dense(_Activated):
    """``value = h(x @ weights + bias)``; ``weights`` is (n_in, n_out), input-major, so an
    input spike on unit i touches only row i."""

    type: Literal["dense"] = "dense"
    source: Sources
    weights: Array
    bias: Array | None = None

    @model_validator(mode="after")
    def _check_shapes(self):
        if self.weights.ndim != 2 or 0 in self.weights.shape:
            raise ValueError(
                f"weights must be a non-empty 2-D array, found shape {self.weights.shape}"
            )
        if self.bias is not None and self.bias.shape != (self.weights.shape[1],):
            raise ValueError(
                f"bias must have shape ({self.weights.shape[1]},), found {self.bias.shape}"
            )
        return self

    @property
    def sources(self) -> list[str]:
        return _as_list(self.source)

    @property
    def n_in(self) -> int:
        return int(self.weights.shape[0])

    @property
    def size(self) -> int:
        return int(self.weights.shape[1])


class Conv2d(_Activated):
    """Event-driven 2-D convolution on a C×H×W input (flattened C-order).
    ``kernels`` is (C_out, C_in, kh, kw)."""

    type: Literal["conv2d"] = "conv2d"
    source: Sources
    in_shape: tuple[int, int, int]
    kernels: Array
    bias: Array | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @model_validator(mode="after")
    def _check_shapes(self):
        k = self.kernels
        if k.ndim != 4 or 0 in k.shape:
            raise ValueError(f"kernels must be (C_out, C_in, kh, kw), found shape {k.shape}")
        c, h, w = self.in_shape
        if min(c, h, w) <= 0:
            raise ValueError(f"in_shape must be positive, found {self.in_shape}")
        if k.shape[1] != c:
            raise ValueError(f"kernels have C_in={k.shape[1]} but in_shape has C={c}")
        if min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(
                f"stride must be >= 1 and padding >= 0, found {self.stride}, {self.padding}"
            )
        if self.bias is not None and self.bias.shape != (k.shape[0],):
            raise ValueError(f"bias must have shape ({k.shape[0]},), found {self.bias.shape}")
        ho, wo = self.out_hw
        if ho <= 0 or wo <= 0:
            raise ValueError(f"output would be empty ({ho}x{wo}); kernel larger than padded input")
        return self

    @property
    def sources(self) -> list[str]:
        return _as_list(self.source)

    @property
    def n_in(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    @property
    def out_hw(self) -> tuple[int, int]:
        _, h, w = self.in_shape
        kh, kw = self.kernels.shape[2:]
        (sy, sx), (py, px) = self.stride, self.padding
        return ((h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (int(self.kernels.shape[0]), *self.out_hw)

    @property
    def size(self) -> int:
        co, ho, wo = self.out_shape
        return co * ho * wo


class Activation(_Activated):
    """Elementwise ``h(x)``."""

    type: Literal["activation"] = "activation"
    source: Sources
    n: int | None = Field(default=None, alias="size", gt=0)

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )

    @property
    def sources(self) -> list[str]:
        return _as_list(self.source)

    @property
    def size(self) -> int:
        if self.n is None:
            raise ValueError("size is resolved when the node is added to a graph")
        return self.n


class Product(Node):
    """Elementwise ``a * b`` of two equal-size inputs (exact: Δ(xy) = Δx·y + x·Δy + Δx·Δy)."""

    type: Literal["product"] = "product"
    a: Sources
    b: Sources
    n: int | None = Field(default=None, alias="size", gt=0)

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )

    @property
    def sources(self) -> list[str]:
        return _as_list(self.a) + _as_list(self.b)

    @property
    def size(self) -> int:
        if self.n is None:
            raise ValueError("size is resolved when the node is added to a graph")
        return self.n


class Integrator(Node):
    """``dy/dt = gain*x - y/tau`` with x piecewise constant between input events. Output
    spikes are emitted exactly when y crosses the next quantization level (analytic time).
    ``tau_s = None`` means no leak. ``gain``/``tau_s``/``y0`` are scalars or per-unit."""

    type: Literal["integrator"] = "integrator"
    source: Sources
    gain: float | list[float] = 1.0
    tau_s: float | list[float] | None = None
    y0: float | list[float] = 0.0
    n: int | None = Field(default=None, alias="size", gt=0)

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )

    @model_validator(mode="after")
    def _check_params(self):
        for fname in ("gain", "tau_s", "y0"):
            v = getattr(self, fname)
            if v is None:
                continue
            a = np.atleast_1d(np.asarray(v, dtype=np.float64))
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{fname} contains NaN/Inf")
            if fname == "tau_s" and np.any(a <= 0):
                raise ValueError(f"tau_s must be > 0 (use null for no leak), found {v}")
        return self

    @property
    def sources(self) -> list[str]:
        return _as_list(self.source)

    @property
    def size(self) -> int:
        if self.n is None:
            raise ValueError("size is resolved when the node is added to a graph")
        return self.n


class Output(Node):
    """A decoded value stream (e.g. motor channels), re-quantized at its own ``scale``."""

    type: Literal["output"] = "output"
    source: Sources
    n: int | None = Field(default=None, alias="size", gt=0)

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )

    @property
    def sources(self) -> list[str]:
        return _as_list(self.source)

    @property
    def size(self) -> int:
        if self.n is None:
            raise ValueError("size is resolved when the node is added to a graph")
        return self.n


NODE_TYPES: dict[str, type[Node]] = {
    "input": Input,
    "dense": Dense,
    "conv2d": Conv2d,
    "activation": Activation,
    "product": Product,
    "integrator": Integrator,
    "output": Output,
}

AnyNode = Input | Dense | Conv2d | Activation | Product | Integrator | Output
