"""Files named by a bundle.json, resolved inside the bundle's folder.

A bundle may come from someone else (copied off a device, downloaded): its names must not
reach a file outside its folder, or `edgevit embed` would embed a host file into firmware
and `edgevit profile --target` would push one to a device. Every host-side reader of a
bundle-named file goes through ``bundle_file``. (runtimes/runner.py has its own copy of
the same check: it runs on the device and cannot import edgevit.)
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from edgevit.errors import EdgevitError

BUNDLE_JSON = "bundle.json"
MAX_BUNDLE_JSON_BYTES = 16 << 20  # label names and shapes: kilobytes, never megabytes
REEXPORT = "a bundle names only plain files inside its own folder; re-export the artifact with edgevit"


class BundleError(EdgevitError):
    """A bundle.json that is unreadable or names a file it may not."""


def bundle_file(folder: Path, name: object, field: str) -> Path:
    """``folder/name`` if ``name`` is a relative path without ``..`` that stays inside
    ``folder`` after resolving symlinks and is a regular file; else a BundleError naming
    ``field`` (e.g. ``files[1]``)."""
    where = f"{Path(folder) / BUNDLE_JSON}: {field}"
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise BundleError(f"{where}: {name!r} is not a file name", REEXPORT)
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise BundleError(f"{where}: {name!r} points outside the bundle folder", REEXPORT)
    if name.endswith(".py"):  # the device runner loads session_*.py beside it as code
        raise BundleError(f"{where}: {name!r}: a bundle holds model files, never Python code", REEXPORT)
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise BundleError(f"{where}: {name!r} is a symlink to {path}, outside the bundle folder", REEXPORT)
    if not path.is_file():
        raise BundleError(f"{where}: {name!r} is missing or not a plain file", REEXPORT)
    return Path(folder) / name


def read_bundle_json(folder: Path) -> dict[str, Any]:
    """bundle.json of ``folder`` as a dict, or a BundleError (never a JSON traceback)."""
    path = Path(folder) / BUNDLE_JSON
    if not path.is_file():
        raise BundleError(f"{folder}: no {BUNDLE_JSON} here", "give an artifact bundle folder from `edgevit compress`")
    if path.stat().st_size > MAX_BUNDLE_JSON_BYTES:
        raise BundleError(f"{path}: larger than {MAX_BUNDLE_JSON_BYTES} bytes", REEXPORT)
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})", REEXPORT) from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__}", REEXPORT)
    return data


def listed_files(folder: Path) -> list[Path]:
    """The files a bundle lists in ``files``, each checked by ``bundle_file``."""
    names = read_bundle_json(folder).get("files")
    if not isinstance(names, list) or not names:
        raise BundleError(f"{Path(folder) / BUNDLE_JSON}: files: expected a non-empty list of file names", REEXPORT)
    return [bundle_file(folder, name, f"files[{i}]") for i, name in enumerate(names)]


def model_file(folder: Path) -> Path:
    """The bundle's ``model_file``, checked by ``bundle_file``."""
    return bundle_file(folder, read_bundle_json(folder).get("model_file"), "model_file")
