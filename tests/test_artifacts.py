import json

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
