"""Patching timm ViT blocks so tokens can be reduced between attention and MLP: the ViT
adapter's token hook (``VitAdapter.patch_token_block``); passes reach it only through the
adapter, which declares the ``token_hook`` capability.

The patched block keeps timm's own sub-modules (norm1, attn.qkv, ls1, drop_path1, mlp,
...) and only re-wires them: attention is computed once (fused kernel), the class-token
attention EViT needs comes from q_cls.K^T alone, and ToMe's key metric and proportional
attention (log token size added to the logits) ride along. The patch swaps the module's
class (state-dict keys and weights are untouched) and is undone by ``unpatch``. Tests
compare against the unpatched model on several architectures so this wiring cannot drift
from timm's Block silently.

Token sizes travel between patched blocks as a (tokens, sizes) tuple — explicit data
flow, no shared mutable state, so export with a dynamic batch works.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import ModelError
from edgevit.passes.token_kernels import bipartite_matching, evit_reorganize, merge_tokens


@dataclass
class Reduction:
    """What one block does to its tokens after attention."""

    kind: str  # "none" | "evit" | "tome"
    prefix: int  # class / distillation / register tokens, never reduced
    keep: int = 0  # evit: patch tokens kept
    fuse: bool = True  # evit: fuse the dropped tokens into one
    r: int = 0  # tome: tokens merged away
    proportional: bool = False  # tome: size-weighted attention from the first merge on
    takes_state: bool = False  # input is (x, size) from a previous patched block
    returns_state: bool = False  # output is (x, size) for the next patched block
    form: str = "scatter"  # tome merge export form


def _attend(attn: nn.Module, x: torch.Tensor, size: torch.Tensor | None, want_cls: bool):
    """timm Attention's computation with optional proportional attention; also returns the
    class-token attention (mean over heads) and ToMe's key metric (mean over heads)."""
    b, n, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = None if size is None else size.log().transpose(1, 2).unsqueeze(1)  # [B, 1, 1, N]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    cls_attn = None
    if want_cls:  # only the class token's row: [B, H, 1, N] instead of materialising [B, H, N, N]
        logits = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        cls_attn = logits.softmax(-1).mean(1)[:, 0]
    out = attn.norm(out.transpose(1, 2).reshape(b, n, attn.attn_dim))
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out)), cls_attn, k.mean(1)


def _reducing_forward(self, x, attn_mask=None, is_causal=False):
    red: Reduction = self.edgevit_reduction
    if attn_mask is not None or is_causal:
        raise RuntimeError("token-reduced blocks do not take attention masks")
    size = None
    if red.takes_state:
        x, size = x
    attn_out, cls_attn, metric = _attend(self.attn, self.norm1(x), size if red.proportional else None, red.kind == "evit")
    x = x + self.drop_path1(self.ls1(attn_out))
    p = red.prefix
    if red.kind == "evit" and red.keep < x.shape[1] - p:
        x = evit_reorganize(x, cls_attn[:, p:], p, red.keep, red.fuse)
    elif red.kind == "tome" and red.r > 0:
        patches = x[:, p:]
        if size is None:
            size = torch.ones_like(x[..., :1])
        unmerged, merged, partner = bipartite_matching(metric[:, p:], red.r)
        patches, patch_size = merge_tokens(patches, size[:, p:], unmerged, merged, partner, red.form)
        x = torch.cat([x[:, :p], patches], dim=1)
        size = torch.cat([size[:, :p], patch_size], dim=1)
    x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
    return (x, size) if red.returns_state else x


_PATCHED: dict[type, type] = {}


def patch_block(block: nn.Module, reduction: Reduction) -> None:
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    if type(block) is not Block or type(block.attn) is not Attention:
        raise ModelError(f"{type(block).__name__}: token reduction supports timm's standard ViT Block with Attention",
                         "use a ViT/DeiT/DeiT-III model (parallel or res-post blocks are not supported)")
    cls = _PATCHED.setdefault(Block, type("TokenReducingBlock", (Block,), {"forward": _reducing_forward}))
    block.__class__ = cls
    block.edgevit_reduction = reduction


def unpatch(model: nn.Module) -> nn.Module:
    from edgevit.adapters.base import undo_class_swaps

    return undo_class_swaps(model, "edgevit_reduction")
