"""Node types of a fusion graph (description only: no execution state here).

Every node is a pydantic model (``extra="forbid"``). Array fields accept nested lists or
numpy arrays and are stored as C-contiguous float64 arrays; NaN/Inf is rejected.

A node class is the graph half of a node type's spec: its fields, its size rule
(:meth:`Node.resolve_size`) and its frame-based value (:meth:`Node.dense`, the float network
that the sigma-delta graph approximates, used by the dense executor and by training) with
its cost (:meth:`Node.dense_ops`). The other half, lowering and the reference engine's
semantics, is one module per type in :mod:`spikefuse.builder`; the compiled engine adds one
kernel. ``docs/engine.md`` ("Adding a node type") lists the steps.

Semantics (shared by every backend):

* every node has a ``scale`` k (spikes per unit). It sends integer counts
  ``n = round(k*value - sent)`` (round half away from zero), carrying the residual, so
  ``|k*value - sent| <= 1/2`` always; a receiver sees ``sent/k``;
* ``source`` may be one node name or a list of names, whose outputs are concatenated.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from spikefuse.errors import GraphError
from spikefuse.graph.kinds import ACTIVATIONS


def apply_activation(name: str, z: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """The activations, vectorised (the engines' scalar versions are in
    :mod:`spikefuse.engine.semantics` and ``_engine.pyx``)."""
    if name == "identity":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "abs":
        return np.abs(z)
    if name == "clip":
        return np.clip(z, lo, hi)
    raise ValueError(f"unknown activation '{name}'")


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
    # the size follows from the node's own fields (not its sources), so cycles resolve
    fixed_size: ClassVar[bool] = False

    @property
    def sources(self) -> list[str]:
        return []

    def source_fields(self) -> dict[str, list[str]]:
        """Source names per input port (field name -> concatenated sources)."""
        return {"source": self.sources} if self.sources else {}

    @property
    def size(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        """The size rule: given each port's total input size, check this node against them
        and return it with its size set (raise :class:`GraphError` naming the field).
        Default: one unit per input unit (elementwise nodes with an optional ``size``)."""
        total = port_sizes["source"]
        n = getattr(self, "n", None)
        if n is not None and n != total:
            raise GraphError(f"size {n} does not match its sources ({total})", self.name, "size")
        return self.model_copy(update={"n": total})

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        """Frame-based value from each port's concatenated input values (no quantisation)."""
        raise NotImplementedError(f"{type(self).__name__} has no frame-based value")

    def dense_ops(self) -> int:
        """Weights/elements evaluated when the node is recomputed once (frame-based cost)."""
        return self.size


def _check_n_in(node: Node, port_sizes: dict[str, int], field: str) -> Node:
    total = port_sizes["source"]
    if node.n_in != total:
        raise GraphError(
            f"expects {node.n_in} inputs but its sources give {total}", node.name, field
        )
    return node


def _as_list(src: str | list[str]) -> list[str]:
    return [src] if isinstance(src, str) else list(src)


class Input(Node):
    """A group of sensor channels that receives integer counts at ``scale``."""

    type: Literal["input"] = "input"
    n: int = Field(gt=0, le=1 << 24, alias="size")
    fixed_size: ClassVar[bool] = True

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def size(self) -> int:
        return self.n

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        return self

    def dense_ops(self) -> int:
        return 0  # the sample is given


class _Activated(Node):
    activation: Literal[ACTIVATIONS] = "identity"
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
    fixed_size: ClassVar[bool] = True

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

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        return _check_n_in(self, port_sizes, "weights")

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        z = x["source"] @ self.weights
        if self.bias is not None:
            z = z + self.bias
        return apply_activation(self.activation, z, self.lo, self.hi)

    def dense_ops(self) -> int:
        return self.n_in * self.size


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
    fixed_size: ClassVar[bool] = True

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

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        return _check_n_in(self, port_sizes, "in_shape")

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        cols = _windows(
            x["source"], self.in_shape, self.kernels.shape[2:], self.stride, self.padding
        )
        out = np.tensordot(self.kernels, cols, axes=([1, 2, 3], [0, 1, 2]))  # (co, ho, wo)
        if self.bias is not None:
            out += self.bias[:, None, None]
        return apply_activation(self.activation, out.reshape(self.size), self.lo, self.hi)

    def dense_ops(self) -> int:
        co, ho, wo = self.out_shape
        _, ci, kh, kw = self.kernels.shape
        return co * ho * wo * ci * kh * kw


def _out_len(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _windows(x, in_shape, kernel, stride, padding) -> np.ndarray:
    """(C, kh, kw, Ho, Wo) view-copy of the zero-padded input under every window."""
    c, h, w = in_shape
    kh, kw = kernel
    (sy, sx), (py, px) = stride, padding
    ho, wo = _out_len(h, kh, sy, py), _out_len(w, kw, sx, px)
    xp = np.pad(np.asarray(x, np.float64).reshape(c, h, w), ((0, 0), (py, py), (px, px)))
    cols = np.empty((c, kh, kw, ho, wo))
    for ky in range(kh):
        for kx in range(kw):
            cols[:, ky, kx] = xp[:, ky : ky + sy * ho : sy, kx : kx + sx * wo : sx]
    return cols


class AvgPool2d(Node):
    """Average over ``kernel`` windows of each channel of a C×H×W input (flattened
    C-order); zero padding counts in the average (the divisor is always kh·kw). An input
    spike touches only the windows of its own channel that cover its pixel."""

    type: Literal["avgpool2d"] = "avgpool2d"
    source: Sources
    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None  # None: the kernel (non-overlapping windows)
    padding: tuple[int, int] = (0, 0)
    fixed_size: ClassVar[bool] = True

    @model_validator(mode="after")
    def _check_shapes(self):
        if min(self.in_shape) <= 0:
            raise ValueError(f"in_shape must be positive, found {self.in_shape}")
        if min(self.kernel) <= 0 or min(self.step) <= 0 or min(self.padding) < 0:
            raise ValueError(
                f"kernel and stride must be >= 1 and padding >= 0, found {self.kernel}, "
                f"{self.step}, {self.padding}"
            )
        if self.padding[0] >= self.kernel[0] or self.padding[1] >= self.kernel[1]:
            raise ValueError(
                f"padding {self.padding} must be smaller than the kernel {self.kernel}"
            )
        ho, wo = self.out_hw
        if ho <= 0 or wo <= 0:
            raise ValueError(f"output would be empty ({ho}x{wo}); kernel larger than padded input")
        return self

    @property
    def sources(self) -> list[str]:
        return _as_list(self.source)

    @property
    def step(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.kernel

    @property
    def n_in(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    @property
    def out_hw(self) -> tuple[int, int]:
        _, h, w = self.in_shape
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.step, self.padding
        return (_out_len(h, kh, sy, py), _out_len(w, kw, sx, px))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.in_shape[0], *self.out_hw)

    @property
    def size(self) -> int:
        c, ho, wo = self.out_shape
        return c * ho * wo

    @property
    def weight(self) -> float:
        """The one weight every input pixel adds with: 1/(kh·kw)."""
        return 1.0 / (self.kernel[0] * self.kernel[1])

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        return _check_n_in(self, port_sizes, "in_shape")

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        cols = _windows(x["source"], self.in_shape, self.kernel, self.step, self.padding)
        return (cols.sum(axis=(1, 2)) * self.weight).reshape(self.size)

    def dense_ops(self) -> int:
        return self.size * self.kernel[0] * self.kernel[1]


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

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return apply_activation(self.activation, x["source"], self.lo, self.hi)

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

    def source_fields(self) -> dict[str, list[str]]:
        return {"a": _as_list(self.a), "b": _as_list(self.b)}

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        sa, sb = port_sizes["a"], port_sizes["b"]
        if sa != sb:
            raise GraphError(f"inputs a ({sa}) and b ({sb}) have different sizes", self.name, "b")
        if self.n is not None and self.n != sa:
            raise GraphError(f"size {self.n} does not match inputs ({sa})", self.name, "size")
        return self.model_copy(update={"n": sa})

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return x["a"] * x["b"]

    @property
    def size(self) -> int:
        if self.n is None:
            raise ValueError("size is resolved when the node is added to a graph")
        return self.n


class Integrator(Node):
    """``dy/dt = gain*x - y/tau`` with x piecewise constant between input events. Output
    spikes are emitted exactly when y crosses the next quantization level (analytic time).
    ``tau_s = None`` means no leak. ``gain``/``tau_s``/``y0`` are scalars or per-unit.
    ``max_crossing_rate_hz`` bounds how often one unit fires: consecutive crossings of a unit
    are at least ``ceil(1e9 / max_crossing_rate_hz)`` ns apart (a deferred crossing sends
    every level passed meanwhile and counts as saturation), so no input makes it unbounded."""

    type: Literal["integrator"] = "integrator"
    source: Sources
    gain: float | list[float] = 1.0
    tau_s: float | list[float] | None = None
    y0: float | list[float] = 0.0
    max_crossing_rate_hz: float = Field(default=1e6, gt=0.0, le=1e9, allow_inf_nan=False)
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

    def resolve_size(self, port_sizes: dict[str, int]) -> Node:
        resolved = super().resolve_size(port_sizes)
        total = resolved.size
        for f in ("gain", "tau_s", "y0"):
            v = getattr(self, f)
            if v is not None and not np.isscalar(v) and len(v) != total:
                raise GraphError(f"has {len(v)} values for {total} units", self.name, f)
        return resolved

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

    def dense(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return x["source"].copy()

    @property
    def size(self) -> int:
        if self.n is None:
            raise ValueError("size is resolved when the node is added to a graph")
        return self.n


NODE_TYPES: dict[str, type[Node]] = {
    cls.model_fields["type"].default: cls
    for cls in (Input, Dense, Conv2d, AvgPool2d, Activation, Product, Integrator, Output)
}

AnyNode = Input | Dense | Conv2d | AvgPool2d | Activation | Product | Integrator | Output
