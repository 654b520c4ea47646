"""Which exits pay on the target: candidate cascades rebuilt and timed where they will run.

The exits pass chooses exits in PyTorch, from torch's costs of each stage and head. A
runtime adds costs of its own: in OpenVINO every If of the one-graph cascade is a graph
boundary that costs ~0.2 ms per image whether anybody leaves there or not, so an exit that
pays in ONNX Runtime can cost about what it saves in OpenVINO. (Why, in part: the CPU
plugin does not fuse ops into Snippets kernels inside If bodies, snippets_mark_skipped.cpp.
vit_tiny_c10, 1 thread, path through the else branch: 4.36 ms as one graph, 4.00 ms as the
same two halves compiled as two models and chained, 3.69 ms without exits; on swin_tiny_c10
the two forms cost the same. A chained form of merged stages would win on the ViT: not
built.) So, per exported bundle: the cascade with all its exits, then with each one left
out (its stage runs straight on, no head, no If), thresholds re-calibrated for each candidate on the held-out images, each
candidate timed by the device runner interleaved with the network without exits; an exit
stays only if the cascade with it is measurably faster (``KEEP_MARGIN``). Greedy: remove
the exit whose removal is fastest, repeat while that does not lose speed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgevit import progress
from edgevit.exporters.cascade_graphs import set_cascade_thresholds
from edgevit.passes.exit_calibration import calibrate, confidence_scores, to_rule_units

# an exit stays only if the cascade with it is at least this much faster than without it:
# the interleaved CPU-time ratio of one gate run moves by about 1 % between repeats here,
# and at equal speed the cascade with fewer graph boundaries is the simpler one to ship
KEEP_MARGIN = 1.01


def select_exits_on_target(bundle_dir: Path, write_graph: Callable[[Sequence[int] | None], list[str]],
                           time_cascade: Callable[[], dict[str, Any]], exit_logits: list[np.ndarray],
                           final_logits: np.ndarray, labels: np.ndarray, rule: str, max_drop_points: float,
                           cumulative_costs_of: Callable[[list[int]], np.ndarray]) -> dict[str, Any]:
    """Leaves ``bundle_dir`` with the chosen exits (graph rewritten, thresholds in
    bundle.json, null where an exit is left out) and returns what was tried.

    ``exit_logits``/``final_logits``: the bundle's exits and final classifier on the held-out
    images (as the runtime computes them where quantized); ``time_cascade()``: the device
    runner's measurement of the bundle as it is now (cascade vs the network without exits,
    interleaved; ``speedup_mean``); ``cumulative_costs_of(exits)``: estimated cost of
    leaving at each of those exits and of the final classifier, used only to rank
    thresholds while calibrating (the choice between candidates is measured)."""
    n_exits = len(exit_logits)
    scores = np.stack([confidence_scores(z, rule) for z in exit_logits])
    correct = np.stack([z.argmax(-1) == labels for z in [*exit_logits, final_logits]])
    tried: list[dict[str, Any]] = []

    def candidate(exits: list[int]) -> dict[str, Any]:
        result = calibrate(scores[exits], correct[[*exits, n_exits]], cumulative_costs_of(exits), max_drop_points / 100.0)
        thresholds: list[float | None] = [None] * n_exits
        for e, t in zip(exits, result["thresholds"]):
            thresholds[e] = to_rule_units(t, rule)
        _set_exits(bundle_dir, write_graph, exits, thresholds)
        progress.step(f"timing {bundle_dir.name} with exits {[e + 1 for e in exits]} of {n_exits} on the target")
        measured = time_cascade()
        entry = {"exits": exits, "thresholds": thresholds, "speedup_mean": measured["speedup_mean"],
                 "holdout_top1": result["outcome"].accuracy, "holdout_top1_full": result["full_accuracy"],
                 "holdout_exit_rates": result["outcome"].exit_rates, "measured": measured}
        tried.append(entry)
        return entry

    current = candidate(list(range(n_exits)))
    while len(current["exits"]) > 1:
        trials = [candidate([e for e in current["exits"] if e != r]) for r in current["exits"]]
        best = max(trials, key=lambda t: t["speedup_mean"])
        if current["speedup_mean"] >= best["speedup_mean"] * KEEP_MARGIN:
            break
        current = best
    if tried[-1] is not current:  # the bundle holds the last candidate timed: put the chosen one back
        _set_exits(bundle_dir, write_graph, current["exits"], current["thresholds"])
    return {"chosen": current, "tried": tried, "keep_margin": KEEP_MARGIN,
            "how": "greedy removal: each candidate's thresholds calibrated on the held-out images, its one-graph cascade "
                   "rebuilt and timed by the device runner interleaved with the network without exits; an exit stays "
                   f"only if the cascade with it is >= {KEEP_MARGIN:.2f}x as fast as without it"}


def _set_exits(bundle_dir: Path, write_graph, exits: list[int], thresholds: list[float | None]) -> None:
    """The bundle's graph with only ``exits`` and bundle.json's thresholds to match (the
    stage sessions, which batches run, never leave at a threshold of null either)."""
    write_graph(exits)
    set_cascade_thresholds(bundle_dir, thresholds, graph_exits=exits)
