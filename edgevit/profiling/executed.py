"""Which precision an artifact really ran in: the device runner reads it back and names it
itself (runtimes/runner.py ``executed_precision``: "unknown" for a runtime it cannot read,
never a guess); the host only takes the runner's word."""
from __future__ import annotations

from typing import Any


def executed_precision(executed: dict[str, Any] | None) -> str:
    return str((executed or {}).get("precision") or "unknown")
