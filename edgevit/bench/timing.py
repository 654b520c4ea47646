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
from typing import Any

import numpy as np


@dataclass
class Samples:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def session_call(session: Any, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    """One inference of a device-runner session as a timed callable. The session first
    fixes its input shapes to these feeds where its runtime specializes on them (OpenVINO),
    as the runner does before it times and as benchmark_app -shape does."""
    session.prepare(feeds)
    return lambda: session.run(feeds)


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


def summary(values: list[float], per_round: int | None = None) -> dict[str, Any]:
    """Percentiles of the samples; with ``per_round`` (samples of one variant are taken
    ``per_round`` at a time by ``interleaved``) also min/median/max of the round medians,
    the rerun variance."""
    a = np.asarray(values)
    out: dict[str, Any] = {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
                           "n": int(a.size)}
    if per_round:
        rounds = [float(np.median(a[i:i + per_round])) for i in range(0, a.size, per_round)]
        out["round_medians"] = {"min": min(rounds), "median": float(np.median(rounds)), "max": max(rounds)}
    return out


def load_average() -> float:
    return os.getloadavg()[0]
