"""Physically smaller modules: slice Linear layers and per-head parameters.

Everything here keeps the module classes timm built (timm's own forward keeps running);
only tensor shapes and the head-count attributes change. Each attention class has one
entry in _head_surgery() slicing its per-head tensors, so a new family is one more entry.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from edgevit.errors import ModelError


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


def _slice_param(param: nn.Parameter, idx: Sequence[int], dim: int) -> nn.Parameter:
    return nn.Parameter(param.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long)).clone(),
                        requires_grad=param.requires_grad)


def head_rows(keep_heads: Sequence[int], head_dim: int, groups: int = 1, total_heads: int | None = None) -> list[int]:
    """Row indices of kept heads in a projection laid out as (groups, heads, head_dim)."""
    total = total_heads if total_heads is not None else max(keep_heads) + 1
    return [g * total * head_dim + h * head_dim + d for g in range(groups) for h in keep_heads for d in range(head_dim)]


def _head_dim(attn: nn.Module) -> int:
    return attn.qkv.out_features // (3 * attn.num_heads)


def _prune_vit_attention(attn: nn.Module, keep: list[int]) -> None:
    hd, total = _head_dim(attn), attn.num_heads
    attn.qkv = slice_linear(attn.qkv, out_idx=head_rows(keep, hd, 3, total))
    cols = head_rows(keep, hd, 1, total)
    attn.proj = slice_linear(attn.proj, in_idx=cols)
    if getattr(attn, "gate", None) is not None:
        attn.gate = slice_linear(attn.gate, out_idx=cols)
    if isinstance(attn.norm, nn.LayerNorm):  # scale_norm over the attention width
        norm = nn.LayerNorm(len(cols), eps=attn.norm.eps, elementwise_affine=attn.norm.elementwise_affine)
        if attn.norm.elementwise_affine:
            norm.weight, norm.bias = _slice_param(attn.norm.weight, cols, 0), _slice_param(attn.norm.bias, cols, 0)
        attn.norm = norm
    attn.num_heads, attn.attn_dim = len(keep), len(keep) * hd


def _prune_swin_attention(attn: nn.Module, keep: list[int]) -> None:
    hd, total = _head_dim(attn), attn.num_heads
    attn.qkv = slice_linear(attn.qkv, out_idx=head_rows(keep, hd, 3, total))
    attn.proj = slice_linear(attn.proj, in_idx=head_rows(keep, hd, 1, total))
    # the head's own slice of the relative-position-bias table goes with it
    attn.relative_position_bias_table = _slice_param(attn.relative_position_bias_table, keep, 1)
    attn.num_heads = len(keep)


def _head_surgery() -> dict[type, Callable[[nn.Module, list[int]], None]]:
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    # Swin v2's WindowAttention reshapes its output to the input width (attn_dim == dim is
    # baked into timm's forward), so its heads cannot be removed without rewriting that
    # forward; v2 gets MLP-channel pruning only.
    return {Attention: _prune_vit_attention, WindowAttention: _prune_swin_attention}


def can_prune_heads(attn: nn.Module) -> bool:
    return type(attn) in _head_surgery()


def prune_heads(attn: nn.Module, keep: Sequence[int]) -> None:
    keep = sorted(int(k) for k in keep)
    if not keep:
        raise ValueError("a block must keep at least one head")
    surgery = _head_surgery().get(type(attn))
    if surgery is None:
        raise ModelError(f"{type(attn).__name__}: head pruning is not supported for this attention module",
                         "supported: timm Attention (ViT/DeiT) and Swin v1 WindowAttention")
    surgery(attn, keep)


def prune_mlp(mlp: nn.Module, keep: Sequence[int]) -> None:
    from timm.layers import Mlp

    if type(mlp) is not Mlp:
        raise ModelError(f"{type(mlp).__name__}: MLP channel pruning supports timm Mlp (fc1 -> act -> fc2) only")
    keep = sorted(int(k) for k in keep)
    if not keep:
        raise ValueError("an MLP must keep at least one hidden channel")
    mlp.fc1 = slice_linear(mlp.fc1, out_idx=keep)
    if isinstance(mlp.norm, nn.LayerNorm):
        norm = nn.LayerNorm(len(keep), eps=mlp.norm.eps)
        norm.weight, norm.bias = _slice_param(mlp.norm.weight, keep, 0), _slice_param(mlp.norm.bias, keep, 0)
        mlp.norm = norm
    mlp.fc2 = slice_linear(mlp.fc2, in_idx=keep)
