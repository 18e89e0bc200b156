"""``spikefuse train CONFIG.yaml``: the training config (pydantic, errors name file:line).

No JAX here: the config is read (and checked) before the training extra is imported."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from spikefuse.config import FileConfig, StrictModel, load_model
from spikefuse.errors import ConfigError

Pair = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
Pad = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]
TRAINABLE_ACTIVATIONS = ("identity", "relu", "tanh", "clip")


class _ActivationFields(StrictModel):
    activation: Literal[TRAINABLE_ACTIVATIONS] = "identity"
    lo: float | None = None
    hi: float | None = None

    @model_validator(mode="after")
    def _clip_bounds(self):
        if self.activation == "clip" and (self.lo is None or self.hi is None or self.lo >= self.hi):
            raise ValueError("activation 'clip' needs lo < hi")
        return self


class Conv2dLayer(_ActivationFields):
    type: Literal["conv2d"]
    channels: int = Field(ge=1, le=256)
    kernel: Pair
    stride: Pair = (1, 1)
    padding: Pad = (0, 0)


class AvgPool2dLayer(StrictModel):
    type: Literal["avgpool2d"]
    kernel: Pair
    stride: Pair | None = None
    padding: Pad = (0, 0)


class ActivationLayer(_ActivationFields):
    type: Literal["activation"]


class DenseLayer(_ActivationFields):
    type: Literal["dense"] = "dense"
    units: int = Field(ge=1, le=4096)


ImageLayer = Annotated[Conv2dLayer | AvgPool2dLayer | ActivationLayer, Field(discriminator="type")]
TrunkLayer = Annotated[DenseLayer | ActivationLayer, Field(discriminator="type")]


class InputSpec(StrictModel):
    """A graph input = a recorded stream's ``input`` name. Images give ``shape`` (C, H, W;
    channel = (c*H + y)*W + x, as the camera drivers number pixels), vectors ``size``."""

    shape: tuple[int, int, int] | None = None
    size: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one(self):
        if (self.shape is None) == (self.size is None):
            raise ValueError("give exactly one of shape (an image) or size (a vector)")
        if self.shape is not None and min(self.shape) < 1:
            raise ValueError(f"shape must be positive, found {self.shape}")
        return self

    @property
    def n(self) -> int:
        if self.shape is None:
            return int(self.size or 0)
        c, h, w = self.shape
        return c * h * w


class NetworkSpec(StrictModel):
    """image input -> image layers -> (flattened, concatenated with the vector inputs) ->
    dense layers -> a linear layer with one unit per target channel -> Output."""

    image_input: str | None = None
    image_layers: list[ImageLayer] = Field(default_factory=list)
    vector_inputs: list[str] = Field(default_factory=list)
    dense_layers: list[TrunkLayer] = Field(default_factory=list)
    output_name: str = "motor"

    @model_validator(mode="after")
    def _has_input(self):
        if self.image_input is None and not self.vector_inputs:
            raise ValueError("the network needs an image_input or vector_inputs")
        if self.image_layers and self.image_input is None:
            raise ValueError("image_layers need an image_input")
        if self.dense_layers and not isinstance(self.dense_layers[0], DenseLayer):
            raise ValueError(
                "dense_layers must start with a dense layer (inputs are folded into it)"
            )
        return self


class TargetSpec(StrictModel):
    topic: str = Field(min_length=1, description="MotorCommand topic, e.g. motor/wheels")


class FitSpec(StrictModel):
    epochs: int = Field(default=20, ge=1, le=100_000)
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW decoupled decay")
    sample_every: int = Field(default=1, ge=1, description="train on every n-th sample")
    image_offset: tuple[float, float] = Field(
        default=(0.0, 0.0),
        description="augmentation: a uniform offset in [lo, hi] added to each training "
        "image (the DVS state of a global lighting change, log intensity)",
    )
    seed: int = 0


class ConvertSpec(StrictModel):
    """Scale search (O'Connor & Welling): minimise task error + lambda * ops/dense_ops."""

    lambdas: list[Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: [0.0, 0.01, 0.1])
    pick: float = Field(default=0.01, ge=0, description="the lambda of the shipped graph")
    steps: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    window: int = Field(default=64, ge=2, description="consecutive samples per ops window")
    windows_per_step: int = Field(default=8, ge=1)
    batch_size: int = Field(default=1024, ge=1, description="samples of the error term")
    error_target: Literal["float_network", "labels"] = Field(
        default="float_network",
        description="what the rounding network's error is measured against in the search",
    )
    resample: bool = Field(
        default=False,
        description="draw new samples and windows every step (default: one fixed draw)",
    )
    dense_rate_input: str | None = Field(
        default=None, description="input whose event rate is the ops baseline (default: the image)"
    )

    @model_validator(mode="after")
    def _pick_in_lambdas(self):
        if self.pick not in self.lambdas:
            raise ValueError(f"pick {self.pick} must be one of lambdas {self.lambdas}")
        return self


class CollectSpec(StrictModel):
    """Seeded training recordings of the simulated robot, made in-process (``spikefuse train
    CONFIG --collect``, :mod:`spikefuse.train.closedloop`): the ``sim`` driver's world and
    encoders, the teacher's clean command as the label, the executed command perturbed (an
    Ornstein-Uhlenbeck yaw-rate disturbance) so that the runs hold recoveries (DART: the
    learner sees the states its own errors lead to, labelled by the teacher). Per-run
    settings (renderer, disturbance, actuation delay) cycle over their lists by run index."""

    driver_config: str = Field(description="the sim driver's config (relative to this file)")
    set: list[str] = Field(default_factory=list, description="overrides on it (KEY=VALUE)")
    dir: str = Field(description="where the recordings go (relative to this file)")
    train_seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    validation_seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    renderers: list[Literal["numpy", "mujoco"]] = Field(default_factory=lambda: ["numpy"])
    yaw_rate_std_radps: list[Annotated[float, Field(ge=0)]] = Field(default_factory=lambda: [0.0])
    tau_s: float = Field(default=0.5, gt=0)
    delay_ms: list[Annotated[float, Field(ge=0, le=1000)]] = Field(default_factory=lambda: [0.0])
    max_s: float = Field(default=40.0, gt=0, description="sim time per run (one lap or less)")
    workers: int = Field(default=1, ge=1, le=64, description="runs recorded in parallel")

    @model_validator(mode="after")
    def _disjoint(self):
        both = set(self.train_seeds) & set(self.validation_seeds)
        if both:
            raise ValueError(f"seeds in both train_seeds and validation_seeds: {sorted(both)}")
        return self


class OutputSpec(StrictModel):
    graph: str
    report: str
    curve_png: str | None = None


class TrainConfig(FileConfig):
    train: list[str] = Field(default_factory=list)
    validation: list[str] = Field(default_factory=list)
    collect: CollectSpec | None = None
    inputs: dict[str, InputSpec]
    target: TargetSpec
    network: NetworkSpec
    fit: FitSpec = Field(default_factory=FitSpec)
    convert: ConvertSpec = Field(default_factory=ConvertSpec)
    output: OutputSpec
    dense_rates_hz: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="name -> rate of the frame-based baseline"
    )

    @model_validator(mode="after")
    def _some_recordings(self):
        for which in ("train", "validation"):
            if not getattr(self, which) and self.collect is None:
                raise ValueError(f"{which}: give recordings (or a collect section)")
        return self

    @model_validator(mode="after")
    def _inputs_known(self):
        net = self.network
        names = ([net.image_input] if net.image_input else []) + net.vector_inputs
        for name in names:
            if name not in self.inputs:
                raise ValueError(f"network input '{name}' is not in inputs {sorted(self.inputs)}")
        if net.image_input and self.inputs[net.image_input].shape is None:
            raise ValueError(f"image_input '{net.image_input}' needs a shape (C, H, W)")
        return self

    def collected(self, which: str) -> list[Path]:
        """The files the ``collect`` section makes for ``train`` or ``validation``."""
        c = self.collect
        if c is None:
            return []
        seeds = c.validation_seeds if which == "validation" else c.train_seeds
        return [self.resolve_path(c.dir) / f"{which}_{s}.mcap" for s in seeds]

    def recordings(self, which: str, must_exist: bool = True) -> list[Path]:
        """The files of ``train`` or ``validation`` (globs, relative to the config) and
        the ``collect`` section's; a collected file that does not exist names
        ``--collect``."""
        out: list[Path] = []
        for f in self.collected(which):
            if must_exist and not f.exists():
                raise ConfigError(
                    f"{f} does not exist (record the collect section's runs first: "
                    "spikefuse train CONFIG --collect)",
                    "collect",
                )
            out.append(f)
        for i, pattern in enumerate(getattr(self, which)):
            hits = sorted(glob.glob(str(self.resolve_path(pattern))))
            if not hits:
                raise ConfigError(f"no recording matches '{pattern}'", f"{which}[{i}]")
            out += [Path(h) for h in hits]
        return out


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    cfg = load_model(TrainConfig, path, overrides)
    cfg.set_base_dir(Path(path).resolve().parent)
    shared = set(cfg.recordings("train", must_exist=False)) & set(
        cfg.recordings("validation", must_exist=False)
    )
    if shared:
        raise ConfigError(
            f"recordings in both train and validation: {sorted(map(str, shared))} "
            "(the split is by recording)",
            f"{path}: validation",
        )
    return cfg


__all__ = ["TrainConfig", "load_train_config"]
