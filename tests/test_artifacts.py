import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgevit.artifacts import MANIFEST, Staging, verify_manifest
from edgevit.errors import EdgevitError


def _fill(staging: Staging, text: str = "hello") -> None:
    (staging.path / "sub").mkdir()
    (staging.path / "sub" / "a.txt").write_text(text)


def test_publish_is_complete_and_verifiable(tmp_path):
    staging = Staging(tmp_path / "run")
    _fill(staging)
    assert not (tmp_path / "run").exists()  # nothing visible before publish
    out = staging.publish({"seed": 1})
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seed"] == 1 and [f["path"] for f in manifest["files"]] == ["sub/a.txt"]
    assert verify_manifest(out) == []
    (out / "sub" / "a.txt").write_text("tampered")
    assert verify_manifest(out) == ["sub/a.txt: sha256 differs"]
    assert not list(tmp_path.glob(".staging-*"))


def test_existing_destination_needs_force(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(EdgevitError, match="already exists.*--force"):
        Staging(tmp_path / "run")
    staging = Staging(tmp_path / "run", force=True)
    _fill(staging, "new")
    staging.publish({})
    assert (tmp_path / "run" / "sub" / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_discard_leaves_nothing(tmp_path):
    staging = Staging(tmp_path / "run")
    _fill(staging)
    staging.discard()
    assert list(tmp_path.iterdir()) == []


# A run that creates its staging folder, says where, then waits to be killed.
_RUN = """
import sys, time
from edgevit.artifacts import Staging
staging = Staging(sys.argv[1])
(staging.path / "partial.bin").write_bytes(b"x" * 1000)
print(staging.path, flush=True)
time.sleep(600)
"""


def _start_run(destination):
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(destination)], stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_next_run_removes_staging_of_a_killed_run_but_not_of_a_live_one(tmp_path):
    """Regression: a SIGKILLed run left its .staging-* folder forever."""
    killed, killed_path = _start_run(tmp_path / "a")
    live, live_path = _start_run(tmp_path / "b")
    try:
        killed.kill()  # SIGKILL: no cleanup code of its own runs
        killed.wait(timeout=30)
        assert killed_path.is_dir()
        staging = Staging(tmp_path / "c")  # the next run into the same parent
        assert not killed_path.exists() and not killed_path.with_name(killed_path.name + ".lock").exists()
        assert (live_path / "partial.bin").is_file()  # the live run's folder is untouched
        staging.publish({})
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".staging-b-")) == ["c"]
    finally:
        live.kill()
        live.wait(timeout=30)
    Staging(tmp_path / "d").discard()  # once that run is dead too, its folder goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
