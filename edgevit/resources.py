"""Where the shipped data lives: recipes/, exporters/, calibration/ and runtimes/.

They sit at the top of the repository (one copy each). A wheel carries them under
``edgevit/_data/`` (see pyproject's force-include); a checkout or editable install reads
them beside the package.
"""
from __future__ import annotations

import os
from pathlib import Path

SHIPPED_KINDS = ("recipes", "exporters", "calibration", "runtimes")


def shipped(kind: str) -> Path:
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"unknown shipped data kind {kind!r}")
    package = Path(__file__).resolve().parent
    for candidate in (package / "_data" / kind, package.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edgevit installation is missing its {kind}/ folder (reinstall edgevit)")


def names(kind: str) -> list[str]:
    """Stems of the shipped YAML files of one kind, sorted."""
    return sorted(p.stem for p in shipped(kind).glob("*.yaml"))


def runner_script() -> Path:
    return shipped("runtimes") / "runner.py"


# Folders (os.pathsep-separated) with runtime declarations (<name>.yaml) and their runner
# session modules (session_<name>.py) that edgevit does not ship: a runtime added without
# touching edgevit. The device runner reads the same variable.
RUNTIME_PATH_ENV = "EDGEVIT_RUNTIME_PATH"


def runtime_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(RUNTIME_PATH_ENV, "").split(os.pathsep) if p]
    return [shipped("runtimes"), *extra]


def runner_files() -> list[Path]:
    """What a device needs to run artifacts: the runner and the session modules of runtimes
    that are not built into it (``session_<runtime>.py``)."""
    return [runner_script(), *(p for d in runtime_dirs() for p in sorted(d.glob("session_*.py")))]
