"""Training (float network, Adam) and conversion (scale search) on recorded samples."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from spikefuse.builder import build
from spikefuse.engine.dense import DenseExecutor
from spikefuse.recording.progress import Progress
from spikefuse.train.config import TrainConfig
from spikefuse.train.dataset import Recording
from spikefuse.train.network import Architecture, Norm, forward, init_params, to_graph

log = logging.getLogger(__name__)

INIT_LEVELS = 16.0  # initial scale: a quantum is 1/16 of the node's standard deviation
CHUNK = 1024  # samples per evaluation chunk


@dataclass
class Batch:
    img: np.ndarray | None
    vec: np.ndarray
    y: np.ndarray


def gather(arch: Architecture, rec: Recording, idx: np.ndarray) -> Batch:
    img = None
    if arch.image_input is not None:
        img = rec.inputs[arch.image_input].at(idx).reshape(idx.size, *arch.image_shape)
    parts = [rec.inputs[v].at(idx) for v in arch.vector_inputs]
    vec = np.concatenate(parts, axis=1) if parts else np.zeros((idx.size, 0))
    return Batch(img, vec, rec.target[idx])


@dataclass
class SampleSet:
    """Samples (recording, index) of some recordings, gathered batch by batch (an image is
    stored once per camera batch in its recording, not once per sample)."""

    arch: Architecture
    recs: list[Recording]
    rec: np.ndarray
    idx: np.ndarray

    @classmethod
    def every(cls, arch: Architecture, recs: list[Recording], every: int) -> SampleSet:
        idx = [np.arange(0, r.n, every) for r in recs]
        rec = [np.full(i.size, k) for k, i in enumerate(idx)]
        return cls(arch, recs, np.concatenate(rec), np.concatenate(idx))

    @property
    def n(self) -> int:
        return int(self.idx.size)

    def take(self, sel: np.ndarray) -> Batch:
        parts, where = [], []
        for k in np.unique(self.rec[sel]):
            pos = np.flatnonzero(self.rec[sel] == k)
            parts.append(gather(self.arch, self.recs[int(k)], self.idx[sel[pos]]))
            where.append(pos)
        order = np.argsort(np.concatenate(where), kind="stable")
        img = None if parts[0].img is None else np.concatenate([p.img for p in parts])[order]
        return Batch(
            img,
            np.concatenate([p.vec for p in parts])[order],
            np.concatenate([p.y for p in parts])[order],
        )

    def chunks(self, size: int = CHUNK):
        for s in range(0, self.n, size):
            yield self.take(np.arange(s, min(s + size, self.n)))


def make_norm(train: SampleSet) -> Norm:
    arch = train.arch
    vec = np.concatenate(
        [
            np.concatenate([r.inputs[v].at(np.arange(r.n)) for v in arch.vector_inputs], axis=1)
            if arch.vector_inputs
            else np.zeros((r.n, 0))
            for r in train.recs
        ]
    )
    y = np.concatenate([r.target for r in train.recs])

    def std(a):
        s = a.std(axis=0)
        return np.where(s > 1e-9, s, 1.0)

    return Norm(vec.mean(axis=0), std(vec), y.mean(axis=0), std(y))


@dataclass
class OpsModel:
    """What one spike of each node's units costs (the built graph's fan-out) and the
    frame-based cost of the same network per step."""

    node_fanout: list[np.ndarray]
    input_fanout: dict[str, np.ndarray]
    dense_ops_per_step: int

    @classmethod
    def of(cls, arch: Architecture, graph) -> OpsModel:
        m = build(graph)
        fan = [np.asarray(m.unit_fanout[m.units_of(nd.name)], np.float64) for nd in arch.nodes]
        inp = {n: np.asarray(m.unit_fanout[m.units_of(n)], np.int64) for n in m.input_names}
        return cls(fan, inp, DenseExecutor(graph).ops_per_step)


def node_ops(counts: list, fanout: list) -> jnp.ndarray:
    """sum_l fanout_l . sum_t |n_l,t - n_l,t-1| over a window, ``counts`` n = round(k*a)
    from :func:`forward` (the integer counts, straight-through)."""
    total = 0.0
    for n, fan in zip(counts, fanout, strict=True):
        total = total + jnp.sum(jnp.abs(n[1:] - n[:-1]) @ fan)
    return total


def forward_counts(arch, norm, params, scales, img, vec):
    """(values, counts) of the rounding network."""
    counts: list = []
    vals = forward(arch, norm, params, scales, img, vec, True, counts)
    return vals, counts


@dataclass
class Trainer:
    cfg: TrainConfig
    arch: Architecture
    train: list[Recording]
    val: list[Recording]
    input_scales: dict[str, float]
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        every = self.cfg.fit.sample_every
        self.train_set = SampleSet.every(self.arch, self.train, every)
        self.val_set = SampleSet.every(self.arch, self.val, every)
        self.norm = make_norm(self.train_set)
        self.params = init_params(self.arch, self.cfg.fit.seed)
        self.rng = np.random.default_rng(self.cfg.fit.seed)
        graph = self.graph(np.ones(self.arch.n_scales))
        self.ops_model = OpsModel.of(self.arch, graph)
        self.fanout = [jnp.asarray(f) for f in self.ops_model.node_fanout]
        self.dense_rate_hz = self._baseline_rate_hz()
        arch, norm = self.arch, self.norm
        self.fwd_q = jax.jit(lambda p, k, img, vec: forward(arch, norm, p, k, img, vec, True))
        self.fwd_qc = jax.jit(lambda p, k, img, vec: forward_counts(arch, norm, p, k, img, vec))
        self._grad = None
        self._search_fixed = None

    # -- helpers -----------------------------------------------------------------------
    def graph(self, scales):
        return to_graph(self.arch, self.norm, self.params, scales, self.input_scales, "learned")

    def _baseline_rate_hz(self) -> float:
        name = (
            self.cfg.convert.dense_rate_input or self.arch.image_input or self.arch.vector_inputs[0]
        )
        if name in self.cfg.dense_rates_hz:
            return self.cfg.dense_rates_hz[name]
        n = sum(int(r.inputs[name].index[-1] - r.inputs[name].index[0]) for r in self.val)
        return n / max(sum(r.duration_s for r in self.val), 1e-9)

    def _loss_fn(self, quantize: bool):
        arch, norm = self.arch, self.norm

        def loss(params, scales, img, vec, y):
            out = forward(arch, norm, params, scales, img, vec, quantize)[-1]
            return jnp.mean(((out - y) / norm.y_std) ** 2)

        return loss

    def windows(self, recs: list[Recording], n: int) -> list[tuple[Batch, float]]:
        """``n`` windows of consecutive samples (batch, duration in seconds)."""
        w = self.cfg.convert.window
        usable = [r for r in recs if r.n > w]
        out = []
        for _ in range(n):
            r = usable[int(self.rng.integers(len(usable)))]
            s = int(self.rng.integers(0, r.n - w))
            idx = np.arange(s, s + w)
            out.append(
                (gather(self.arch, r, idx), max(float(r.t_ns[s + w - 1] - r.t_ns[s]) * 1e-9, 1e-6))
            )
        return out

    def init_scales(self) -> np.ndarray:
        """k_l = INIT_LEVELS / std(a_l) on (up to 2048) training samples."""
        b = self.train_set.take(self.rng.permutation(self.train_set.n)[:2048])
        vals = forward(self.arch, self.norm, self.params, None, b.img, b.vec, False)
        stds = np.array([max(float(np.std(np.asarray(v))), 1e-6) for v in vals])
        return INIT_LEVELS / stds

    # -- training ----------------------------------------------------------------------
    def fit(self, progress: bool | None = None) -> None:
        t0 = time.monotonic()
        fit = self.cfg.fit
        opt = optax.adamw(fit.learning_rate, weight_decay=fit.weight_decay)
        state = opt.init(self.params)
        best = (math.inf, self.params)
        loss = self._loss_fn(False)
        val_loss = jax.jit(loss)

        @jax.jit
        def step(params, state, img, vec, y):
            lv, g = jax.value_and_grad(loss)(params, None, img, vec, y)
            upd, state = opt.update(g, state, params)
            return optax.apply_updates(params, upd), state, lv

        n = self.train_set.n
        with Progress(fit.epochs, "train", enabled=progress) as bar:
            for epoch in range(fit.epochs):
                order = self.rng.permutation(n)
                losses = []
                for s in range(0, n, fit.batch_size):
                    b = self._augment(self.train_set.take(order[s : s + fit.batch_size]))
                    self.params, state, lv = step(self.params, state, b.img, b.vec, b.y)
                    losses.append(float(lv))
                row = {
                    "epoch": epoch + 1,
                    "loss": float(np.mean(losses)),
                    "val_loss": self._mean_loss(val_loss, self.val_set),
                    "ops_ratio_estimate": self.ops_estimate(self.init_scales()),
                }
                self.history.append(row)
                if row["val_loss"] < best[0]:
                    best = (row["val_loss"], self.params)
                bar.detail = (
                    f"loss {row['loss']:.4f} val {row['val_loss']:.4f} "
                    f"ops {row['ops_ratio_estimate']:.3f}x dense"
                )
                bar.update(1)
                log.info("epoch %d/%d: %s", epoch + 1, fit.epochs, bar.detail)
        # keep the epoch with the lowest validation loss (early stopping)
        self.best_val_loss, self.params = best
        self.best_epoch = 1 + [h["val_loss"] for h in self.history].index(self.best_val_loss)
        self.fit_seconds = time.monotonic() - t0

    def _augment(self, b: Batch) -> Batch:
        """Training batches only: each sample's image plus one uniform offset drawn from
        ``fit.image_offset`` (a global lighting change shifts every lit pixel's log
        intensity, and so its DVS state, by the same amount)."""
        lo, hi = self.cfg.fit.image_offset
        if b.img is None or lo == hi == 0.0:
            return b
        off = self.rng.uniform(lo, hi, b.img.shape[0])
        return Batch(b.img + off[:, None, None, None], b.vec, b.y)

    def _mean_loss(self, loss, samples: SampleSet) -> float:
        total = 0.0
        for b in samples.chunks():
            total += float(loss(self.params, None, b.img, b.vec, b.y)) * b.y.shape[0]
        return total / samples.n

    def ops_estimate(self, scales, n_windows: int = 4) -> float:
        """Ops of the rounding network over a few validation windows, as a fraction of the
        dense network at the baseline rate over the same time."""
        ops = dense = 0.0
        for b, dur in self.windows(self.val, n_windows):
            _, counts = self.fwd_qc(self.params, scales, b.img, b.vec)
            ops += float(node_ops(counts, self.fanout))
            dense += self.ops_model.dense_ops_per_step * self.dense_rate_hz * dur
        return ops / dense

    # -- conversion ---------------------------------------------------------------------
    def _objective_grad(self):
        """Gradient of task error + lam * ops/dense_ops with respect to kappa = log k
        (straight-through rounding), compiled once for every lambda."""
        loss_q = self._loss_fn(True)
        fanout, arch, norm, params = self.fanout, self.arch, self.norm, self.params
        per_s = self.ops_model.dense_ops_per_step * self.dense_rate_hz

        def objective(kappas, lam, img, vec, y, wins):
            scales = jnp.exp(kappas)
            err = loss_q(params, scales, img, vec, y)
            ops = dense = 0.0
            for wb, dur in wins:
                _, counts = forward_counts(arch, norm, params, scales, wb[0], wb[1])
                ops = ops + node_ops(counts, fanout)
                dense = dense + per_s * dur
            return err + lam * ops / dense

        return jax.jit(jax.grad(objective))

    def search_scales(self, lam: float, scales0: np.ndarray) -> np.ndarray:
        """The scales k_l = exp(kappa_l) that minimise task error + lam * ops/dense_ops.
        The task error's change by rounding is measured against the float network's own
        outputs (``convert.error_target: float_network``, the default): against the labels,
        the float network's residual times the rounding noise is a zero-mean term that
        outweighs the rounding's systematic cost and sends the scales on a random walk.
        Unless ``convert.resample``, every step and every lambda see the same samples and
        windows (drawn once): a deterministic objective, so the lambdas compare and the
        search does not random-walk on sampling noise."""
        conv = self.cfg.convert
        if self._grad is None:
            self._grad = self._objective_grad()
        opt = optax.adam(conv.learning_rate)
        kappas = jnp.log(jnp.asarray(scales0))
        state = opt.init(kappas)
        for _ in range(conv.steps):
            b, wins = self._search_data(conv.resample)
            g = self._grad(kappas, lam, b.img, b.vec, b.y, wins)
            upd, state = opt.update(g, state, kappas)
            kappas = optax.apply_updates(kappas, upd)
        return np.exp(np.asarray(kappas, np.float64))

    def _search_data(self, resample: bool):
        if resample or self._search_fixed is None:
            conv = self.cfg.convert
            n = self.train_set.n
            b = self.train_set.take(np.sort(self.rng.choice(n, min(n, conv.batch_size), False)))
            if conv.error_target == "float_network":
                out = forward(self.arch, self.norm, self.params, None, b.img, b.vec, False)[-1]
                b = Batch(b.img, b.vec, np.asarray(out))
            wins = [((w.img, w.vec), d) for w, d in self.windows(self.train, conv.windows_per_step)]
            if resample:
                return b, wins
            self._search_fixed = (b, wins)
        return self._search_fixed

    def evaluate(self, scales, recs: list[Recording]) -> dict:
        """Exact figures of the rounding network on whole sequences (every sample): task
        error (normalised MSE, and RMS per output), ops as the engine counts them, and the
        ops of the dense network at each configured rate over the same time."""
        sq = np.zeros(self.arch.n_out)
        n_samples = 0
        ops = 0.0
        duration = 0.0
        for r in recs:
            for s in range(0, r.n, CHUNK):
                # one sample of overlap so the change across the chunk boundary is counted
                b = gather(self.arch, r, np.arange(max(s - 1, 0), min(s + CHUNK, r.n)))
                vals, counts = self.fwd_qc(self.params, scales, b.img, b.vec)
                ops += float(node_ops(counts, self.fanout))
                fresh = slice(1, None) if s > 0 else slice(None)
                out = np.asarray(vals[-1])[fresh]
                sq += (((out - b.y[fresh]) / self.norm.y_std) ** 2).sum(axis=0)
                n_samples += out.shape[0]
            ops += self._input_ops(r)
            duration += r.duration_s
        dense_rates = dict(self.cfg.dense_rates_hz)
        dense_rates.setdefault("baseline", self.dense_rate_hz)
        ratios = {
            name: ops / (self.ops_model.dense_ops_per_step * hz * duration)
            for name, hz in dense_rates.items()
        }
        return {
            "error": float(sq.sum() / (n_samples * self.arch.n_out)),
            "rms_per_output": (np.sqrt(sq / n_samples) * self.norm.y_std).tolist(),
            "ops": ops,
            "ops_per_s": ops / max(duration, 1e-9),
            "duration_s": duration,
            "ops_ratio_vs_dense": ratios,
        }

    def _input_ops(self, r: Recording) -> float:
        total = 0
        for name, track in r.inputs.items():
            fan = self.ops_model.input_fanout.get(name)
            if fan is None:
                continue
            for sp in track.spikes[1:]:
                if sp is not None:
                    total += int(sp[1] @ fan[sp[0]])
        return float(total)


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
