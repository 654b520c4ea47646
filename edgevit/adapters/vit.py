"""timm VisionTransformer and its subclasses (DeiT, DeiT-III with LayerScale, distilled,
register-token and gap-pooled variants): pre-norm Blocks of fused-qkv Attention + Mlp."""
from __future__ import annotations

import torch
from torch import nn

from edgevit.adapters import layers
from edgevit.adapters.base import (BLOCK_LINEARS, EXIT_TOKENS, HEAD_SURGERY, MLP_SURGERY, REPQ_PAIRS, STAGES, TOKEN_HOOK,
                                   BlockRef, HeadLayout, ModelAdapter, register_adapter)


class PlainBlocksAdapter(ModelAdapter):
    """Families whose blocks are ``norm1 -> attn (qkv, proj) -> norm2 -> mlp (fc1, fc2)``
    over one token sequence ``model.blocks`` with ``model.num_prefix_tokens`` in front."""

    def blocks(self) -> list[BlockRef]:
        h, w = self.token_grid()
        n = h * w + self.num_prefix_tokens
        return [BlockRef(f"blocks.{i}", b, 0, n, n) for i, b in enumerate(self.model.blocks)]

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    def token_grid(self, stage: int = 0) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)  # type: ignore[return-value]

    def can_prune_heads(self, ref: BlockRef) -> bool:
        return layers.can_prune_heads(ref.attention)

    def head_layout(self, ref: BlockRef) -> HeadLayout:
        return layers.fused_head_layout(ref.attention)

    def prune_heads(self, ref: BlockRef, keep: list[int]) -> None:
        layers.prune_heads(ref.attention, keep)

    def mlp_weights(self, ref: BlockRef) -> tuple[torch.Tensor, torch.Tensor]:
        return ref.mlp.fc1.weight, ref.mlp.fc2.weight

    def prune_mlp(self, ref: BlockRef, keep: list[int]) -> None:
        layers.prune_mlp(ref.mlp, keep)

    def attention_linears(self, ref: BlockRef) -> list[nn.Linear]:
        return [ref.attention.qkv, ref.attention.proj]

    def mlp_linears(self, ref: BlockRef) -> list[nn.Linear]:
        return [ref.mlp.fc1, ref.mlp.fc2]

    def repq_pairs(self) -> list[tuple[str, nn.LayerNorm, tuple[nn.Linear, ...]]]:
        pairs = []
        for ref in self.blocks():
            b = ref.module
            for norm, linear, label in ((b.norm1, b.attn.qkv, "norm1->attn.qkv"), (b.norm2, b.mlp.fc1, "norm2->mlp.fc1")):
                if isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and isinstance(linear, nn.Linear):
                    pairs.append((f"{ref.name}.{label}", norm, (linear,)))
        return pairs


@register_adapter("timm.models.vision_transformer:VisionTransformer")
class VitAdapter(PlainBlocksAdapter):
    family = "vit"
    capabilities = frozenset({HEAD_SURGERY, MLP_SURGERY, BLOCK_LINEARS, TOKEN_HOOK, STAGES, EXIT_TOKENS, REPQ_PAIRS})

    def patch_token_block(self, ref: BlockRef, reduction) -> None:
        from edgevit.passes.token_patch import patch_block  # the hook: a re-wired timm Block forward

        patch_block(ref.module, reduction)

    def stem(self, x: torch.Tensor):
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def run_block(self, index: int, x):
        return self.model.blocks[index](x)
