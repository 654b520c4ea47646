"""The --budget grammar and what "meets the budget" means.

    --budget latency_ms=12.5          p50 latency on the target, in ms
    --budget size_mb=5                artifact size (all its files), in MB (1e6 bytes)
    --budget latency_ms=0.5x          relative: half the fp32 model's, measured on the same target
    --budget latency_ms=20,size_mb=8  both

A trial meets the budget when every limit holds and its top-1 on the validation split is
at most --max-drop points below the fp32 model's on the same images.

A relative latency limit is judged by the ratio the trial's own run measured side by side:
its artifact timed interleaved with the fp32 export on the target (compress's baseline,
the ratio of their p50s), ``latency_ms_vs_fp32`` in the record. The study's fp32 p50, measured once
at its start, moves with the machine's load (Swin-T 224 on this 2-core machine: 103.9 and
93.2 ms in two studies of one bench run), and a limit drawn from it moved with it. Records
without the ratio (no baseline timing) fall back to their p50 against that limit.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from edgevit.errors import EdgevitError

# metric -> (what it is, unit): the objectives tune minimises besides accuracy
METRICS = {"latency_ms": ("p50 latency on the target", "ms"), "size_mb": ("artifact size", "MB")}
FIX = "write METRIC=VALUE[,METRIC=VALUE] with METRIC one of latency_ms, size_mb and VALUE a positive number " \
      "or a multiple of the fp32 model's (e.g. latency_ms=20, size_mb=5, latency_ms=0.5x)"
_TERM = re.compile(r"^\s*([a-z_]+)\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(x?)\s*$")


@dataclass(frozen=True)
class Limit:
    metric: str
    value: float
    relative: bool  # value times the fp32 baseline's metric

    def resolve(self, baseline: dict[str, float]) -> float:
        return self.value * baseline[self.metric] if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}{'x' if self.relative else ''}"


@dataclass(frozen=True)
class Budget:
    limits: tuple[Limit, ...]

    @property
    def metrics(self) -> list[str]:
        return [limit.metric for limit in self.limits]

    def resolve(self, baseline: dict[str, float]) -> dict[str, float]:
        """Absolute limits (relative ones against the measured fp32 baseline)."""
        return {limit.metric: limit.resolve(baseline) for limit in self.limits}

    @property
    def ratios(self) -> dict[str, float]:
        """The relative limits as ratios to the fp32 model (metric -> e.g. 0.5)."""
        return {limit.metric: limit.value for limit in self.limits if limit.relative}

    def __str__(self) -> str:
        return ",".join(str(limit) for limit in self.limits)


def parse_budget(text: str) -> Budget:
    limits: list[Limit] = []
    for term in (text or "").split(","):
        m = _TERM.match(term)
        if not m:
            raise EdgevitError(f"--budget {text!r}: cannot read {term.strip()!r}", FIX)
        metric, value, relative = m.group(1), float(m.group(2)), bool(m.group(3))
        if metric not in METRICS:
            raise EdgevitError(f"--budget {text!r}: unknown metric '{metric}'", FIX)
        if not (math.isfinite(value) and value > 0):
            raise EdgevitError(f"--budget {text!r}: {metric} must be positive", FIX)
        if metric in (limit.metric for limit in limits):
            raise EdgevitError(f"--budget {text!r}: {metric} given twice", FIX)
        limits.append(Limit(metric, value, relative))
    return Budget(tuple(limits))


def drop_points(top1: float, baseline_top1: float) -> float:
    """Top-1 points lost against the fp32 model on the same images. Rounded to 1e-9 points
    (top-1 on N images moves in steps of 100/N points): in floating point 0.844 - 0.834 is
    1.0000000000000009 points, which judged a drop of exactly --max-drop as too much."""
    return round((baseline_top1 - top1) * 100, 9)


def constraints(record: dict[str, Any], limits: dict[str, float], baseline_top1: float, max_drop: float,
                ratios: dict[str, float] | None = None) -> list[float]:
    """Optuna's convention: each value <= 0 when satisfied (relative excess for the limits,
    points beyond --max-drop for accuracy), so the sampler learns where the feasible region is.
    ``ratios``: the relative limits (``Budget.ratios``), judged by the record's side-by-side
    ratio to fp32 where it has one (``METRIC_vs_fp32``)."""
    out = [drop_points(record["top1"], baseline_top1) - max_drop]
    for m, lim in limits.items():
        side_by_side = record.get(f"{m}_vs_fp32") if ratios and m in ratios else None
        out.append(side_by_side / ratios[m] - 1 if side_by_side is not None else record[m] / lim - 1)
    return out


def meets(record: dict[str, Any], limits: dict[str, float], baseline_top1: float, max_drop: float,
          ratios: dict[str, float] | None = None) -> bool:
    return all(c <= 0 for c in constraints(record, limits, baseline_top1, max_drop, ratios))
