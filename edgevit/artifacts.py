"""Atomic publishing of a run: everything is written into a staging folder beside the
destination, fsynced, the manifest written last, then renamed into place. A run killed
at any moment leaves either nothing at the destination or a complete, verifiable folder.

A run killed with SIGKILL cannot remove its staging folder, so every staging folder has a
lock file beside it (``.staging-*.lock``) that its run holds with ``fcntl.flock`` for its
whole life; the kernel drops the lock when the process dies, however it dies. The next
run into the same parent removes the folders whose lock nobody holds, and never touches
one whose run is alive (its lock cannot be taken)."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"
LOCK_SUFFIX = ".lock"
OLD_SUFFIX = ".old"  # the destination being replaced under --force, until it is deleted


class Staging:
    def __init__(self, destination: Path, force: bool = False):
        self.destination = Path(destination)
        self.force = force
        if self.destination.exists() and not force:
            raise EdgevitError(f"--out {self.destination}: already exists", "choose another --out or pass --force to replace it")
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.destination.parent)
        self.path = self.destination.parent / f"{STAGING_PREFIX}{self.destination.name}-{uuid.uuid4().hex[:8]}"
        self._lock = _hold_lock(_lock_file(self.path))  # before the folder exists: no folder is ever unowned
        self.path.mkdir()

    def publish(self, manifest_extra: dict[str, Any], destination: Path | None = None) -> Path:
        destination = Path(destination or self.destination)
        write_manifest(self.path, manifest_extra)
        _fsync_tree(self.path)
        old = None
        if destination.exists():
            if not self.force:
                raise EdgevitError(f"{destination}: already exists", "pass --force to replace it")
            old = self.path.with_name(self.path.name + OLD_SUFFIX)  # same lock: removed if this run dies now
            os.replace(destination, old)
        os.replace(self.path, destination)
        _fsync_dir(destination.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._release()
        return destination

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            _lock_file(self.path).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None


def _lock_file(staging: Path) -> Path:
    return staging.with_name(staging.name + LOCK_SUFFIX)


def _hold_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh uuid name: nobody else holds it
    return fd


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in ``parent`` whose run is dead (its lock is free), with
    their lock files; a live run's folder is left alone. Returns what was removed."""
    removed = []
    for lock in sorted(Path(parent).glob(f"{STAGING_PREFIX}*{LOCK_SUFFIX}")):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, a symlink, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: that run is alive
            os.close(fd)
            continue
        try:
            stem = lock.with_name(lock.name[:-len(LOCK_SUFFIX)])
            for folder in (stem, stem.with_name(stem.name + OLD_SUFFIX)):
                if folder.exists() and not folder.is_symlink():
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return removed


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
