"""timm VisionTransformerRelPos (``vit_relpos_*``, ``vit_srelpos_*``): ViT blocks whose
fused-qkv attention adds a relative-position bias, per block (a table or an MLP on
constant coordinates) or shared by all blocks (``shared_rel_pos``, which each block takes
as an argument)."""
from __future__ import annotations

import torch

from edgevit.adapters.base import BLOCK_LINEARS, EXIT_TOKENS, MLP_SURGERY, REPQ_PAIRS, STAGES, BlockRef, register_adapter
from edgevit.adapters.vit import PlainBlocksAdapter


@register_adapter("timm.models.vision_transformer_relpos:VisionTransformerRelPos")
class RelPosVitAdapter(PlainBlocksAdapter):
    """Heads stay: timm's RelPosAttention reshapes its output to the input width, so prune
    removes MLP channels only. No token hook: the bias is sized to the full token grid."""

    family = "vit_relpos"
    capabilities = frozenset({MLP_SURGERY, BLOCK_LINEARS, STAGES, EXIT_TOKENS, REPQ_PAIRS})

    def can_prune_heads(self, ref: BlockRef) -> bool:
        return False

    def stem(self, x: torch.Tensor):
        m = self.model
        x = m.patch_embed(x)
        if m.cls_token is not None:
            x = torch.cat((m.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x

    def run_block(self, index: int, x):
        shared = self.model.shared_rel_pos  # constant for the model's input size: recomputed per block, folded at export
        return self.model.blocks[index](x, shared_rel_pos=shared.get_bias() if shared is not None else None)
