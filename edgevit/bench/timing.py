"""Side-by-side timing on a shared, noisy machine.

Variants are interleaved in rounds (A B C, B C A, ...) so a burst of load hits all of
them alike. Two figures per variant: wall-clock percentiles at N threads, and process
CPU time per inference at 1 thread, which other processes' load barely moves.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Samples:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 3,
                cpu_time: bool = False) -> dict[str, Samples]:
    """Run every fn ``rounds * per_round`` times, interleaved; rotate the order each round."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    samples = {n: Samples() for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn, s = fns[name], samples[name]
            for _ in range(per_round):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                t1, c1 = time.perf_counter(), time.process_time()
                s.wall_ms.append((t1 - t0) * 1e3)
                if cpu_time:
                    s.cpu_ms.append((c1 - c0) * 1e3)
    return samples


def summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()), "n": int(a.size)}


def load_average() -> float:
    return os.getloadavg()[0]
