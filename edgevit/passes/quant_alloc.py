"""Per-layer precision allocation under a bit budget.

Each governed Linear layer l has a relevance score s_l (LRP) and, for each candidate
precision p, a measured relative weight-quantization error e_l(p) (the kernel's own
scheme: int8 per output channel, int4 symmetric blocks along the input). The allocation
minimises sum_l s_l * e_l(p_l) subject to sum_l n_l * bits(p_l) <= budget: a multiple-choice
knapsack, solved greedily over each layer's convex hull of (bits, cost) upgrades in order of
cost saved per bit. The greedy result is compared with the LP relaxation (the same
order, the last upgrade taken fractionally), which bounds the optimum from below: the
difference is the stated optimality gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NOMINAL_BITS = {"int2": 2, "int3": 3, "int4": 4, "int6": 6, "int8": 8, "fp16": 16, "fp32": 32}
# Precisions no runtime here executes as integer kernels: their layers are fake-quantized in
# PyTorch (weights rounded to the grid, run by fp32 kernels) and reported as simulated.
SIMULATED = frozenset({"int2", "int3", "int6"})


MIN_INT4_BLOCK = 16  # MatMulNBits and OpenVINO's blocked int4 need power-of-two blocks >= 16


def int4_block(in_features: int, preferred: int) -> int | None:
    """Largest power-of-two block <= preferred dividing the input width; None if none >= 16
    does (the layer then cannot run int4 in the runtimes' blocked kernels)."""
    block = preferred
    while block >= MIN_INT4_BLOCK:
        if in_features % block == 0:
            return block
        block //= 2
    return None


def fake_quantize(weight: torch.Tensor, precision: str) -> torch.Tensor:
    """Weights rounded to a symmetric per-output-channel grid of ``precision`` (simulation)."""
    qmax = 2 ** (NOMINAL_BITS[precision] - 1) - 1
    scale = weight.detach().abs().amax(1, keepdim=True).clamp_min(1e-12) / qmax
    return (weight.detach() / scale).round().clamp(-qmax - 1, qmax) * scale


def quant_error(weight: torch.Tensor, precision: str, block: int) -> float:
    """||W - Q(W)||^2 / ||W||^2 for the precision's symmetric scheme."""
    w = weight.detach().double()
    if precision in ("fp32", "fp16"):
        return 0.0 if precision == "fp32" else float(((w - w.half().double()) ** 2).sum() / (w ** 2).sum())
    if precision != "int4":  # per output channel, symmetric
        qmax = 2 ** (NOMINAL_BITS[precision] - 1) - 1
        scale = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / qmax
        q = (w / scale).round().clamp(-qmax - 1, qmax) * scale
    else:
        out, k = w.shape
        blocks = w.reshape(out, k // block, block)
        scale = blocks.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 7
        q = ((blocks / scale).round().clamp(-8, 7) * scale).reshape(out, k)
    return float(((w - q) ** 2).sum() / (w ** 2).sum().clamp_min(1e-30))


@dataclass
class Layer:
    name: str
    numel: int
    score: float
    errors: dict[str, float]  # precision -> relative error, for the precisions this layer can take


def _hull(layer: Layer, candidates: list[str]) -> list[tuple[str, float, float]]:
    """Upgrade steps (to precision, bits added per weight, weighted cost saved) on the lower
    convex hull of (bits, cost), cheapest precision first."""
    points = sorted((NOMINAL_BITS[p], layer.score * layer.errors[p], p) for p in candidates if p in layer.errors)
    hull = [points[0]]
    for pt in points[1:]:
        if pt[1] >= hull[-1][1]:
            continue  # more bits, no less error: never worth it
        while len(hull) >= 2:
            (b0, c0, _), (b1, c1, _) = hull[-2], hull[-1]
            if (c0 - c1) / (b1 - b0) <= (hull[-1][1] - pt[1]) / (pt[0] - b1):
                hull.pop()
            else:
                break
        hull.append(pt)
    return [(hull[i][2], hull[i][0] - hull[i - 1][0], hull[i - 1][1] - hull[i][1]) for i in range(1, len(hull))], hull[0]


def allocate(layers: list[Layer], candidates: list[str], budget_bits: float) -> dict:
    """Greedy multiple-choice knapsack; ``budget_bits`` is the total over all layers."""
    start = {}
    steps = []
    for layer in layers:
        ups, (bits, cost, precision) = _hull(layer, candidates)
        start[layer.name] = (precision, bits, cost)
        for order, (to, dbits, dcost) in enumerate(ups):
            steps.append((dcost / (dbits * layer.numel), order, layer, to, dbits * layer.numel, dcost))
    chosen = {name: p for name, (p, _, _) in start.items()}
    used = sum(start[l.name][1] * l.numel for l in layers)
    if used > budget_bits:
        raise ValueError(f"budget {budget_bits / sum(l.numel for l in layers):.2f} bits/weight is below the cheapest "
                         f"candidate ({min(NOMINAL_BITS[c] for c in candidates)} bits)")
    cost = sum(c for _, _, c in start.values())
    lp_cost = cost
    level = {l.name: 0 for l in layers}
    fractional_done = False
    for _, order, layer, to, dbits, dcost in sorted(steps, key=lambda s: (-s[0], s[1], s[2].name)):
        if level[layer.name] != order:
            continue  # a layer's upgrades go in hull order
        if used + dbits <= budget_bits:
            used += dbits
            cost -= dcost
            lp_cost -= dcost
            chosen[layer.name] = to
            level[layer.name] += 1
        elif not fractional_done:
            lp_cost -= dcost * (budget_bits - used) / dbits
            fractional_done = True
    total = sum(l.numel for l in layers)
    return {
        "precision": chosen,
        "avg_bits": used / total,
        "objective": cost,
        "lp_lower_bound": lp_cost,
        "optimality_gap": cost - lp_cost,
        "relative_gap": (cost - lp_cost) / cost if cost > 0 else 0.0,
    }
