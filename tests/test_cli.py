"""The command line as a user meets it."""

from __future__ import annotations


def test_cli_names_the_extra_when_an_optional_package_is_missing(tmp_path):
    """A command that needs an optional package says which extra installs it (no traceback)."""
    import subprocess
    import sys

    # a sitecustomize that hides rosbags, as on a machine with only `pip install .`
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'rosbags':\n"
        "            raise ModuleNotFoundError(\"No module named 'rosbags'\", name='rosbags')\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    from tests.conftest import REPO, SHARED_DATA

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikefuse",
            "import",
            str(SHARED_DATA / "husky" / "test1.bag"),
            "-o",
            str(tmp_path / "o.mcap"),
            "--map",
            str(REPO / "configs" / "import" / "husky_ros1.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 1, r.stderr
    assert "pip install 'spikefuse[logs]'" in r.stderr and "Traceback" not in r.stderr


def test_plot_of_an_imu_table_draws_the_attitude_report(tmp_path):
    import subprocess
    import sys

    from tests.conftest import SHARED_DATA

    out = tmp_path / "att.png"
    log = SHARED_DATA / "broad" / "broad_02_undisturbed_slow_rotation.csv.gz"
    r = subprocess.run(
        [sys.executable, "-m", "spikefuse", "plot", str(log), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000
    r = subprocess.run(
        [sys.executable, "-m", "spikefuse", "plot", str(log), "-o", str(tmp_path / "a.svg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "must end in .png or .html" in r.stderr
