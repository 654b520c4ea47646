"""The shipped data (recipes/, exporters/, calibration/, runtimes/) is in the wheel, once."""
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_carries_shipped_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("edgevit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for kind in ("recipes", "exporters", "calibration", "runtimes"):
        shipped = sorted(p.relative_to(REPO).as_posix() for p in (REPO / kind).iterdir() if p.is_file())
        assert shipped, kind
        for rel in shipped:
            assert names.count(f"edgevit/_data/{rel}") == 1, rel
    assert "edgevit/cli.py" in names
