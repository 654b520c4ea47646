"""Importance scores for pruning: DIMAP (data-independent, module-aware) and the naive
L1 baseline. Pure tensor functions; the pass decides what to remove."""
from __future__ import annotations

import torch


def dimap_importance(weight: torch.Tensor) -> torch.Tensor:
    """Per weight of one layer: w_j^2 / sum_{i<=j} w_i^2 over |w| sorted descending.

    The share of the layer's surviving squared norm that w_j would hold if it were the
    smallest weight kept. The largest weight of every layer scores 1, so scores compare
    across layers of different scale (the "module-aware" ranking of the paper)."""
    sq = weight.detach().double().flatten() ** 2
    order = torch.argsort(sq, descending=True)
    ranked = sq[order]
    cumulative = torch.cumsum(ranked, 0).clamp_min(torch.finfo(torch.float64).tiny)
    scores = torch.empty_like(sq)
    scores[order] = ranked / cumulative
    return scores.view_as(weight)


def head_groups(num_heads: int, head_dim: int, groups: int) -> list[torch.Tensor]:
    """Row indices of each head in a (groups, heads, head_dim) projection."""
    total = num_heads * head_dim
    return [torch.tensor([g * total + h * head_dim + d for g in range(groups) for d in range(head_dim)])
            for h in range(num_heads)]


def structure_dimap(energy: torch.Tensor) -> torch.Tensor:
    """DIMAP's formula at the granularity of structures: with e the squared norm of each
    head (or channel) in its layer, sorted descending, imp_j = e_j / sum_{i<=j} e_i.
    The strongest structure of every layer scores 1; the others score the share of the
    layer's surviving energy they would hold if removed next."""
    order = torch.argsort(energy, descending=True)
    ranked = energy[order]
    scores = torch.empty_like(energy)
    scores[order] = ranked / torch.cumsum(ranked, 0).clamp_min(torch.finfo(energy.dtype).tiny)
    return scores


def head_scores(qkv: torch.Tensor, proj: torch.Tensor, num_heads: int, method: str) -> torch.Tensor:
    """One score per head from its qkv rows and proj columns."""
    qkv, proj = qkv.detach().double(), proj.detach().double()
    head_dim = qkv.shape[0] // (3 * num_heads)
    rows, cols = head_groups(num_heads, head_dim, 3), head_groups(num_heads, head_dim, 1)
    if method == "dimap":
        # QKV-M and PRJ-M each contribute the head's share of their layer's energy
        qkv_e, proj_e = (qkv ** 2).sum(), (proj ** 2).sum()
        energy = torch.stack([(qkv[r] ** 2).sum() / qkv_e + (proj[:, c] ** 2).sum() / proj_e for r, c in zip(rows, cols)])
        return structure_dimap(energy)
    return torch.stack([torch.cat([qkv[r].abs().flatten(), proj[:, c].abs().flatten()]).mean() for r, c in zip(rows, cols)])


def channel_scores(fc1: torch.Tensor, fc2: torch.Tensor, method: str) -> torch.Tensor:
    """One score per MLP hidden channel from its fc1 row and fc2 column."""
    fc1, fc2 = fc1.detach().double(), fc2.detach().double()
    if method == "dimap":
        energy = (fc1 ** 2).sum(1) / (fc1 ** 2).sum() + (fc2 ** 2).sum(0) / (fc2 ** 2).sum()
        return structure_dimap(energy)
    return torch.cat([fc1.abs(), fc2.abs().t()], 1).mean(1)
