"""Atomic publishing of a run: everything is written into a staging folder beside the
destination, fsynced, the manifest written last, then renamed into place. A run killed
at any moment leaves either nothing at the destination or a complete, verifiable folder."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError

MANIFEST = "manifest.json"


class Staging:
    def __init__(self, destination: Path, force: bool = False):
        self.destination = Path(destination)
        self.force = force
        if self.destination.exists() and not force:
            raise EdgevitError(f"--out {self.destination}: already exists", "choose another --out or pass --force to replace it")
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.destination.parent / f".staging-{self.destination.name}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def publish(self, manifest_extra: dict[str, Any], destination: Path | None = None) -> Path:
        destination = Path(destination or self.destination)
        write_manifest(self.path, manifest_extra)
        _fsync_tree(self.path)
        old = None
        if destination.exists():
            if not self.force:
                raise EdgevitError(f"{destination}: already exists", "pass --force to replace it")
            old = destination.parent / f".old-{destination.name}-{uuid.uuid4().hex[:8]}"
            os.replace(destination, old)
        os.replace(self.path, destination)
        _fsync_dir(destination.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return destination

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path, extra: dict[str, Any]) -> dict[str, Any]:
    files = [
        {"path": p.relative_to(root).as_posix(), "sha256": sha256_file(p), "size_bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]
    manifest = {**extra, "files": files}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / MANIFEST)
    return manifest


def verify_manifest(root: Path) -> list[str]:
    """Problems found when re-hashing a published run (empty list = intact)."""
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    problems = []
    for entry in manifest["files"]:
        path = Path(root) / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs")
    return problems


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync_dir(d)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
