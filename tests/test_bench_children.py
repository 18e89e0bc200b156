"""Benchmark children (``python -m spikefuse...``) import the package the parent runs, not
a ``spikefuse`` folder in the caller's working directory: after a non-editable
``pip install .`` run from the repository root, that folder is the uncompiled source tree.
The trap here is such a folder whose import fails loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spikefuse.benchmarks import bench_latency, bench_replay


@pytest.fixture
def in_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    trap = tmp_path / "checkout"
    (trap / "spikefuse").mkdir(parents=True)
    (trap / "spikefuse" / "__init__.py").write_text(
        'raise SystemExit("a child imported spikefuse from its working directory")\n'
    )
    monkeypatch.chdir(trap)
    run = tmp_path / "run"
    run.mkdir()
    return run


def test_latency_children_run_the_parents_package(in_a_checkout: Path) -> None:
    lat_us, cpu_us = bench_latency.measure_floor(in_a_checkout, 0.5)
    assert len(lat_us) > 5 and cpu_us > 0


def test_replay_recorder_child_runs_the_parents_package(in_a_checkout: Path) -> None:
    batches = bench_replay.make_batches(50, 16)
    rate, lost, bytes_per_event, n_events = bench_replay._record(batches, in_a_checkout, 1.0, "t")
    assert lost == 0 and n_events == 50 * 16 and rate > 0


def test_bus_children_run_the_parents_package(in_a_checkout: Path) -> None:
    from spikefuse.benchmarks import bench_bus

    ours, raw, _ = bench_bus._latency(in_a_checkout, 20, 8)
    assert len(ours) == 20 and len(raw) == 20


def test_sdk_chain_runs_a_real_driver_core_and_actuator(in_a_checkout: Path) -> None:
    lat_us = bench_latency.measure_sdk(in_a_checkout, 1.0)
    # a 1 kHz gyro whose every sample changes: hundreds of commands with new causes
    assert len(lat_us) > 200 and np.all(lat_us > 0)
    assert "imu" in (in_a_checkout / "sdk-imu.log").read_text()


def test_zenoh_chain_relays_every_message(in_a_checkout: Path) -> None:
    assert bench_latency.zenoh_available(), "eclipse-zenoh is in the [test] extra"
    lat_us, first_us = bench_latency.measure_zenoh_both(in_a_checkout, 0.5)
    assert len(lat_us) > 300 and np.all(lat_us > 0)
    # the same messages, stamped before the receiver's decode: never later than after it
    assert len(first_us) == len(lat_us) and np.all(first_us > 0) and np.all(first_us <= lat_us)
