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
