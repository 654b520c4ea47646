"""Exit thresholds: the cheapest cascade that keeps top-1 within ``max_accuracy_drop``.

Measured on held-out images: per exit a confidence score (max softmax, or minus the
softmax entropy) and whether its top-1 is right, the final classifier's too, and each
exit's cumulative FLOPs. A sample leaves at the first exit whose score reaches that exit's
threshold. Search: greedy descent over per-exit thresholds (each step lowers the one
threshold that saves most cost per point of accuracy lost, while the drop stays within
budget), compared with the single shared threshold the LGViT paper uses; the cheaper wins.

The budget holds for the drop plus ``margin_se`` paired standard errors of it. The search
measures the thresholds it picks on the same images it picks them on, so with no reserve
it favours thresholds the sample happens to flatter: on vit_tiny_c10 with 2000 calibration
images (unseen test images) a 0.5 pt budget lost 0.87 pt on average on the other 8000
test images (4 random splits, worst 0.99); with one standard error in reserve 0.19 pt
(worst 0.44), within budget at 0.25, 0.5 and 1 pt (one-off, 2026-12-02).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevit.evaluation import paired_change_se

LEVELS = 100  # candidate thresholds per exit: quantiles of its held-out scores


def confidence_scores(logits: np.ndarray, rule: str) -> np.ndarray:
    """Higher = more confident, for either rule (entropy is negated)."""
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    if rule == "confidence":
        return p.max(-1)
    return (p * np.log(np.clip(p, 1e-12, None))).sum(-1)  # = -entropy


def to_rule_units(score_threshold: float, rule: str) -> float | None:
    """Confidence: exit if max softmax >= t. Entropy: exit if entropy <= t. None = never."""
    if not np.isfinite(score_threshold):
        return None
    return float(score_threshold) if rule == "confidence" else float(-score_threshold)


@dataclass
class CascadeOutcome:
    accuracy: float
    expected_cost: float
    exit_rates: list[float]  # per exit, then the final classifier
    drop_se: float = 0.0  # paired standard error of (accuracy - the final classifier's)

    def accuracy_bound(self, margin_se: float) -> float:
        """The accuracy the budget is checked on: ``margin_se`` standard errors below it."""
        return self.accuracy - margin_se * self.drop_se

    @classmethod
    def simulate(cls, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, thresholds: np.ndarray) -> "CascadeOutcome":
        """scores [E, N]; correct [E+1, N] (last row: final classifier); costs [E+1]."""
        leaves = np.vstack([scores >= thresholds[:, None], np.ones((1, scores.shape[1]), bool)])
        first = leaves.argmax(0)
        n = scores.shape[1]
        rates = np.bincount(first, minlength=len(costs)) / n
        chosen = correct[first, np.arange(n)]
        return cls(float(chosen.mean()), float(costs[first].mean()), rates.tolist(), paired_change_se(chosen, correct[-1]))


def calibrate(scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, max_drop: float,
              margin_se: float = 0.0) -> dict:
    """Thresholds (score space) meeting the accuracy budget (drop + ``margin_se`` standard
    errors <= ``max_drop``) at the lowest expected cost."""
    full_accuracy = float(correct[-1].mean())
    floor = full_accuracy - max_drop
    grids = [np.unique(np.quantile(s, np.linspace(0, 1, LEVELS))) for s in scores]
    greedy = _greedy(scores, correct, costs, grids, floor, margin_se)
    shared = _shared(scores, correct, costs, floor, margin_se)
    best, search = (greedy, "per-exit greedy") if greedy[1].expected_cost <= shared[1].expected_cost else (shared, "shared threshold")
    thresholds, outcome = best
    return {"thresholds": thresholds, "outcome": outcome, "search": search, "full_accuracy": full_accuracy,
            "margin_se": margin_se, "alternatives": {"per-exit greedy": greedy[1].expected_cost, "shared threshold": shared[1].expected_cost}}


def _greedy(scores, correct, costs, grids, floor, margin_se) -> tuple[np.ndarray, CascadeOutcome]:
    index = [len(g) for g in grids]  # len(g) = +inf: nobody exits there yet

    def thresholds_for(idx) -> np.ndarray:
        return np.array([g[i] if i < len(g) else np.inf for g, i in zip(grids, idx)])

    current = CascadeOutcome.simulate(scores, correct, costs, thresholds_for(index))
    while True:
        best = None
        for e in range(len(grids)):
            if index[e] == 0:
                continue
            trial = index.copy()
            trial[e] -= 1
            outcome = CascadeOutcome.simulate(scores, correct, costs, thresholds_for(trial))
            saved = current.expected_cost - outcome.expected_cost
            if outcome.accuracy_bound(margin_se) < floor - 1e-12 or saved < 0:
                continue
            lost = max(current.accuracy_bound(margin_se) - outcome.accuracy_bound(margin_se), 0.0)
            value = saved / (lost + 1e-9)
            if best is None or value > best[0]:
                best = (value, trial, outcome)
        if best is None:
            return thresholds_for(index), current
        _, index, current = best


def _shared(scores, correct, costs, floor, margin_se) -> tuple[np.ndarray, CascadeOutcome]:
    candidates = np.unique(np.quantile(scores, np.linspace(0, 1, 4 * LEVELS)))
    best_t = np.full(len(scores), np.inf)
    best = CascadeOutcome.simulate(scores, correct, costs, best_t)
    for t in candidates:
        thresholds = np.full(len(scores), t)
        outcome = CascadeOutcome.simulate(scores, correct, costs, thresholds)
        if outcome.accuracy_bound(margin_se) >= floor - 1e-12 and outcome.expected_cost < best.expected_cost:
            best_t, best = thresholds, outcome
    return best_t, best


def cumulative_costs(stage_cost: np.ndarray, head_cost: np.ndarray, keep: list[int]) -> np.ndarray:
    """Cost of leaving at each kept exit, then of the final classifier, when only ``keep``
    (sorted exit indices) are deployed. ``stage_cost`` [E+1]: the blocks between exits
    (a dropped exit's blocks merge into the next stage, so block costs simply add up);
    ``head_cost`` [E]: each head, paid by every sample that reaches it."""
    ends = [*keep, len(head_cost)]
    out, spent, start = [], 0.0, 0
    for e in ends:
        spent += float(stage_cost[start:e + 1].sum())
        start = e + 1
        if e < len(head_cost):
            spent += float(head_cost[e])
        out.append(spent)
    return np.array(out, dtype=np.float64)


def select_exits(scores: np.ndarray, correct: np.ndarray, stage_cost: np.ndarray, head_cost: np.ndarray,
                 max_drop: float, margin_se: float = 0.0) -> dict:
    """Exits that pay: start from all of them, calibrated on cost (expected cost = mean over
    samples of the stages and heads they run = sum over exits of P(reach k) x (stage k +
    head k)); drop the exit whose removal (thresholds re-calibrated without it) lowers the
    expected cost most, and repeat until no removal lowers it. No exits at all is a
    candidate: the plain network, at the cost of its blocks."""
    n_exits = len(head_cost)
    full_cost = float(stage_cost.sum())
    full_accuracy = float(correct[-1].mean())

    def evaluate(keep: list[int]) -> dict:
        if not keep:
            outcome = CascadeOutcome(full_accuracy, full_cost, [1.0])
            return {"keep": keep, "thresholds": np.zeros(0), "outcome": outcome, "search": "no exits",
                    "full_accuracy": full_accuracy, "margin_se": margin_se}
        result = calibrate(scores[keep], correct[[*keep, n_exits]], cumulative_costs(stage_cost, head_cost, keep), max_drop,
                           margin_se)
        return {"keep": keep, **result}

    current = evaluate(list(range(n_exits)))
    steps = [{"exits": list(current["keep"]), "expected_cost": current["outcome"].expected_cost}]
    while current["keep"]:
        trials = [evaluate([e for e in current["keep"] if e != r]) for r in current["keep"]]
        best = min(trials, key=lambda t: t["outcome"].expected_cost)
        if best["outcome"].expected_cost >= current["outcome"].expected_cost - 1e-12:
            break
        current = best
        steps.append({"exits": list(current["keep"]), "expected_cost": current["outcome"].expected_cost})
    return {**current, "full_cost": full_cost, "removal_steps": steps}
