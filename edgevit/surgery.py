"""Physically smaller modules: pure tensor slicing of Linear layers and parameters.

Which rows and columns belong to a head or a channel is the adapters' knowledge
(``edgevit.adapters.layers``); ``prune_heads`` / ``prune_mlp`` are re-exported from there
for callers that hold a module rather than an adapter.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def slice_linear(linear: nn.Linear, out_idx: Sequence[int] | None = None, in_idx: Sequence[int] | None = None) -> nn.Linear:
    """A new Linear keeping the given output rows and input columns (None = all)."""
    weight = linear.weight.detach()
    if out_idx is not None:
        weight = weight[torch.as_tensor(out_idx, dtype=torch.long)]
    if in_idx is not None:
        weight = weight[:, torch.as_tensor(in_idx, dtype=torch.long)]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias[torch.as_tensor(out_idx, dtype=torch.long)] if out_idx is not None else bias)
    return new.to(linear.weight.dtype)


def slice_param(param: nn.Parameter, idx: Sequence[int], dim: int) -> nn.Parameter:
    return nn.Parameter(param.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long)).clone(),
                        requires_grad=param.requires_grad)


def head_rows(keep_heads: Sequence[int], head_dim: int, groups: int = 1, total_heads: int | None = None) -> list[int]:
    """Row indices of kept heads in a projection laid out as (groups, heads, head_dim)."""
    total = total_heads if total_heads is not None else max(keep_heads) + 1
    return [g * total * head_dim + h * head_dim + d for g in range(groups) for h in keep_heads for d in range(head_dim)]


def __getattr__(name: str):
    if name in ("prune_heads", "prune_mlp", "can_prune_heads"):
        from edgevit.adapters import layers

        return getattr(layers, name)
    raise AttributeError(name)
