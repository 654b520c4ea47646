"""timm building blocks that several families share, and their surgery.

Fused-qkv attention (timm ``Attention``, ``RelPosAttention``, Swin v1 ``WindowAttention``)
keeps q, k and v of every head as rows of one Linear laid out (3, heads, head_dim) and the
heads as column groups of ``proj``; timm ``Mlp`` keeps a hidden channel as an fc1 row and
an fc2 column. Surgery keeps the module classes timm built (timm's own forward keeps
running); only tensor shapes and the head-count attributes change. Each attention class
has one entry in ``_HEAD_SURGERY`` slicing what its heads own beyond qkv/proj.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from edgevit.adapters.base import HeadLayout
from edgevit.errors import ModelError
from edgevit.surgery import head_rows, slice_linear, slice_param


def fused_head_layout(attn: nn.Module) -> HeadLayout:
    heads = int(attn.num_heads)
    table = getattr(attn, "relative_position_bias_table", None)  # Swin v1: one column per head
    return HeadLayout(attn.qkv, attn.proj, heads, attn.qkv.out_features // (3 * heads),
                      table.shape[0] if table is not None else 0)


def _prune_fused(attn: nn.Module, keep: list[int]) -> list[int]:
    """qkv rows and proj columns of the kept heads; returns the kept attention-width columns."""
    layout = fused_head_layout(attn)
    attn.qkv = slice_linear(attn.qkv, out_idx=head_rows(keep, layout.head_dim, 3, layout.num_heads))
    cols = head_rows(keep, layout.head_dim, 1, layout.num_heads)
    attn.proj = slice_linear(attn.proj, in_idx=cols)
    return cols


def sliced_layer_norm(norm: nn.LayerNorm, idx: Sequence[int]) -> nn.LayerNorm:
    """A LayerNorm over the kept channels ``idx`` of ``norm``'s width."""
    new = nn.LayerNorm(len(idx), eps=norm.eps, elementwise_affine=norm.elementwise_affine)
    if norm.elementwise_affine:
        new.weight, new.bias = slice_param(norm.weight, idx, 0), slice_param(norm.bias, idx, 0)
    return new


def _vit_attention(attn: nn.Module, keep: list[int]) -> None:
    cols = _prune_fused(attn, keep)
    if getattr(attn, "gate", None) is not None:
        attn.gate = slice_linear(attn.gate, out_idx=cols)
    if isinstance(attn.norm, nn.LayerNorm):  # scale_norm over the attention width
        attn.norm = sliced_layer_norm(attn.norm, cols)
    attn.num_heads, attn.attn_dim = len(keep), len(keep) * attn.head_dim


def _window_attention(attn: nn.Module, keep: list[int]) -> None:
    _prune_fused(attn, keep)
    # the head's own slice of the relative-position-bias table goes with it
    attn.relative_position_bias_table = slice_param(attn.relative_position_bias_table, keep, 1)
    attn.num_heads = len(keep)


# Swin v2's WindowAttention, RelPosAttention and EvaAttention reshape their output to the
# input width (attn_dim == dim is baked into timm's forward), so their heads cannot be
# removed without rewriting that forward: they are absent here and prune keeps their heads.
_HEAD_SURGERY: dict[str, Callable[[nn.Module, list[int]], None]] = {
    "timm.layers.attention:Attention": _vit_attention,
    "timm.models.swin_transformer:WindowAttention": _window_attention,
}


def _surgery(attn: nn.Module) -> Callable[[nn.Module, list[int]], None] | None:
    cls = type(attn)
    return _HEAD_SURGERY.get(f"{cls.__module__}:{cls.__qualname__}")


def can_prune_heads(attn: nn.Module) -> bool:
    return _surgery(attn) is not None


def prune_heads(attn: nn.Module, keep: Sequence[int]) -> None:
    keep = sorted(int(k) for k in keep)
    if not keep:
        raise ValueError("a block must keep at least one head")
    surgery = _surgery(attn)
    if surgery is None:
        raise ModelError(f"prune: {type(attn).__name__} heads cannot be removed (no 'head_surgery' for this attention)",
                         "prune with modules: [mlp], or use a ViT/DeiT or Swin v1 model")
    surgery(attn, keep)


def is_timm_mlp(mlp: nn.Module) -> bool:
    from timm.layers import Mlp

    return type(mlp) is Mlp


def prune_mlp(mlp: nn.Module, keep: Sequence[int]) -> None:
    """timm Mlp (fc1 -> act -> [norm] -> fc2): keep hidden channels ``keep``."""
    if not is_timm_mlp(mlp):
        raise ModelError(f"prune: {type(mlp).__name__} has no 'mlp_surgery' (timm Mlp, fc1 -> act -> fc2, only)",
                         "prune with modules: [attention]")
    keep = sorted(int(k) for k in keep)
    if not keep:
        raise ValueError("an MLP must keep at least one hidden channel")
    mlp.fc1 = slice_linear(mlp.fc1, out_idx=keep)
    if isinstance(mlp.norm, nn.LayerNorm):
        mlp.norm = sliced_layer_norm(mlp.norm, keep)
    mlp.fc2 = slice_linear(mlp.fc2, in_idx=keep)
