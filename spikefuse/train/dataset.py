"""Training pairs from MCAP recordings, built from the event streams the core sees.

Batches are read through :func:`spikefuse.recording.offline.core_batches` (the core's
application order and times, heartbeat resyncs included). Every input's value is what its
change-events integrate to, ``sum(counts) / scale`` per channel: for a DVS camera the log
intensity change since the first frame, for a gyro or encoders the reconstructed reading.
A sample is taken after every batch (the engine settles after every push), with the
target held from the latest MotorCommand on the target topic at or before that time;
samples before the first command are dropped.

Memory: an input's values are stored once per batch of that input (``rows``), and each
sample points at the row that holds at its time (``index``), so a camera frame is not
copied into every gyro sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikefuse.errors import ConfigError, ProtocolError
from spikefuse.protocol import MotorCommand, decode
from spikefuse.recording.mcapio import open_log
from spikefuse.recording.offline import core_batches


@dataclass
class InputTrack:
    """One input: ``rows[r]`` is its value after its r-th batch (row 0: before any, all 0);
    ``index[i]`` the row at sample i; ``spikes[i]`` the (channels, |counts|) pushed at
    sample i (the input spikes the engine counts), None when sample i is another input's."""

    scale: float
    rows: np.ndarray
    index: np.ndarray
    spikes: list[tuple[np.ndarray, np.ndarray] | None]

    def at(self, samples: np.ndarray) -> np.ndarray:
        return self.rows[self.index[samples]]


@dataclass
class Recording:
    path: Path
    t_ns: np.ndarray  # (N,) sample times
    inputs: dict[str, InputTrack]
    target: np.ndarray  # (N, n_out)
    # every push of the recording (input, t_ns, channels, counts) and, per sample, the push
    # it is taken after (pushes of inputs the network does not read make no sample)
    pushes: list[tuple[str, int, np.ndarray, np.ndarray]]
    sample_push: np.ndarray
    scales: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.t_ns.size)

    @property
    def duration_s(self) -> float:
        return float(self.t_ns[-1] - self.t_ns[0]) * 1e-9 if self.n > 1 else 0.0


def _motor_track(log, topic: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    times, values = [], []
    for m in log.select([topic]):
        if m.topic != topic:
            continue
        try:
            msg = decode(m.payload)
        except ProtocolError:
            continue
        if isinstance(msg, MotorCommand):
            times.append(msg.t_ns)
            values.append(np.asarray(msg.values, np.float64))
    if not times:
        found = sorted({m.topic for m in log.select(["motor/"])})
        raise ConfigError(
            f"no MotorCommand on '{topic}' in {log.path} (motor topics there: {found})", where
        )
    order = np.argsort(np.asarray(times), kind="stable")
    return np.asarray(times, np.int64)[order], np.stack(values)[order]


def load_recording(
    path: str | Path,
    sizes: dict[str, int],
    target_topic: str,
    where: str = "target.topic",
    sampled: set[str] | None = None,
) -> Recording:
    """Samples of ``path`` for the inputs ``sizes`` (name -> channels); other inputs are
    ignored. Only pushes of ``sampled`` inputs (default: all) make samples and tracks; the
    others are kept as pushes (an engine replays them) with their scale. Raises
    :class:`ConfigError` naming the problem (missing stream, bad channel, no target)."""
    log = open_log(path)
    cmd_t, cmd_v = _motor_track(log, target_topic, where)
    sampled = set(sizes) if sampled is None else set(sampled)
    totals = {name: np.zeros(n, np.int64) for name, n in sizes.items()}  # counts so far
    rows: dict[str, list[np.ndarray]] = {name: [np.zeros(n)] for name, n in sizes.items()}
    scales: dict[str, float] = {}
    t_list, pushes, which, sample_push = [], [], [], []
    drops: dict[str, int] = {}
    applied = core_batches(log, sizes, drops)
    if drops.get("bad_channel"):
        raise ConfigError(
            f"{path}: {drops['bad_channel']} events have channels beyond what the config "
            f"gives their input ({', '.join(f'{k}: {v}' for k, v in sizes.items())} channels)",
            "inputs",
        )
    for t_ns, batch in applied:
        name = batch.input
        if scales.setdefault(name, batch.scale) != batch.scale:
            raise ConfigError(
                f"{path}: input '{name}' changes scale ({scales[name]} -> {batch.scale})",
                f"inputs.{name}",
            )
        pushes.append((name, t_ns, batch.channels, batch.counts))
        if name not in sampled:
            continue
        np.add.at(totals[name], batch.channels, batch.counts.astype(np.int64))
        rows[name].append(totals[name] / batch.scale)  # the engine's sent / k
        t_list.append(t_ns)
        which.append(name)
        sample_push.append(len(pushes) - 1)
    missing = sorted(set(sizes) - set(scales))
    if missing:
        raise ConfigError(f"{path}: no events for inputs {missing}", "inputs")
    t = np.asarray(t_list, np.int64)
    k_cmd = np.searchsorted(cmd_t, t, side="right") - 1
    keep = k_cmd >= 0
    first = int(np.argmax(keep)) if keep.any() else t.size
    tracks = _tracks(sampled, scales, rows, which, pushes, sample_push, first)
    sp = np.asarray(sample_push, np.int64)[first:]
    return Recording(Path(path), t[first:], tracks, cmd_v[k_cmd[first:]], pushes, sp, scales)


def _tracks(sampled, scales, rows, which, pushes, sample_push, first) -> dict[str, InputTrack]:
    tracks = {}
    for name in sorted(sampled):
        is_me = np.array([w == name for w in which], bool)
        index = np.cumsum(is_me)  # row after this input's batches so far
        spikes = [
            (np.asarray(pushes[j][2], np.int64), np.abs(np.asarray(pushes[j][3], np.int64)))
            if m
            else None
            for j, m in zip(sample_push, is_me, strict=True)
        ]
        tracks[name] = InputTrack(scales[name], np.stack(rows[name]), index[first:], spikes[first:])
    return tracks


@dataclass
class Split:
    train: list[Recording]
    validation: list[Recording]


__all__ = ["InputTrack", "Recording", "Split", "load_recording"]
