"""The README's description of the main job agrees with ``launch/demo.yaml``."""

from __future__ import annotations

import re
from pathlib import Path

from spikefuse.launch import load_launch

REPO = Path(__file__).resolve().parents[1]


def test_readme_imu_groups_match_the_demo_launch() -> None:
    text = " ".join((REPO / "README.md").read_text().split())
    said = re.search(r"`launch/demo\.yaml` starts synthetic multi-rate IMU \(([^)]*)\)", text)
    assert said, "README no longer describes the demo's IMU"
    imu = next(p for p in load_launch(REPO / "launch" / "demo.yaml").processes if p.name == "imu")
    sets = dict(s.split("=", 1) for s in imu.set)
    for group in ("gyro", "accel", "mag"):
        enabled = sets.get(f"groups.{group}.enabled", "true") != "false"
        rate = re.search(rf"\b{group} (\d+) (k?)Hz", said.group(1))
        if not enabled:
            assert rate is None and f"{group}" in said.group(1) and "off" in said.group(1), said
            continue
        hz = float(sets[f"groups.{group}.rate_hz"])
        assert rate and float(rate.group(1)) * (1000 if rate.group(2) else 1) == hz, (group, said)
