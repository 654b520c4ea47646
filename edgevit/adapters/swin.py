"""timm SwinTransformer (v1) and SwinTransformerV2: blocks live in ``layers[s].blocks`` on a
[B, H, W, C] grid that halves at each patch merging; no prefix tokens."""
from __future__ import annotations

import torch
from torch import nn

from edgevit.adapters.base import (BLOCK_LINEARS, EXIT_TOKENS, GRID_TOKEN_HOOK, HEAD_SURGERY, MLP_SURGERY, REPQ_PAIRS, STAGES, BlockRef,
                                   register_adapter)
from edgevit.adapters.vit import PlainBlocksAdapter
from edgevit.errors import ModelError


@register_adapter("timm.models.swin_transformer:SwinTransformer")
class SwinAdapter(PlainBlocksAdapter):
    """Swin v1: fused-qkv WindowAttention with a relative-position-bias table per head.
    No token hook between attention and MLP (shifted windows need the full token grid), but
    a grid token hook: the MLP runs on the whole [B, H*W, C] grid, so it can merge ->
    compute -> unmerge and hand the full grid back."""

    family = "swin"
    capabilities = frozenset({HEAD_SURGERY, MLP_SURGERY, BLOCK_LINEARS, STAGES, EXIT_TOKENS, REPQ_PAIRS, GRID_TOKEN_HOOK})

    def blocks(self) -> list[BlockRef]:
        refs = []
        for s, layer in enumerate(self.model.layers):
            h, w = self.token_grid(s)
            for i, block in enumerate(layer.blocks):
                wh, ww = block.attn.window_size  # v1 and v2 both keep (Wh, Ww) on the attention module
                refs.append(BlockRef(f"layers.{s}.blocks.{i}", block, s, h * w, int(wh) * int(ww)))
        return refs

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    def token_grid(self, stage: int = 0) -> tuple[int, int]:
        h, w = self.model.patch_embed.grid_size
        for layer in self.model.layers[: stage + 1]:
            if not isinstance(layer.downsample, nn.Identity):
                h, w = h // 2, w // 2
        return int(h), int(w)

    def stem(self, x: torch.Tensor):
        return self.model.patch_embed(x)

    def run_block(self, index: int, x):
        stage, within = self._locate(index)
        layer = self.model.layers[stage]
        if within == 0:
            x = layer.downsample(x)
        return layer.blocks[within](x)

    def tokens(self, x) -> torch.Tensor:
        return x.flatten(1, 2)  # [B, H, W, C] -> [B, HW, C]

    def patch_grid_mlp(self, ref: BlockRef, merge) -> None:
        # v1 and v2 blocks both call self.mlp on x.reshape(B, -1, C) of their [B, H, W, C]
        # input (v1 after norm2, v2 before it): the stage's grid in row-major order
        from edgevit.passes.swin_merge import install_grid_merge

        h, w = self.token_grid(ref.stage)
        if (merge.h, merge.w) != (h, w):
            raise ModelError(f"swin_merge: {ref.name} has a {h}x{w} token grid, the record says {merge.h}x{merge.w}",
                             "rebuild with the input size the model was compressed at")
        install_grid_merge(ref.mlp, merge)

    def _locate(self, index: int) -> tuple[int, int]:
        for stage, layer in enumerate(self.model.layers):
            if index < len(layer.blocks):
                return stage, index
            index -= len(layer.blocks)
        raise IndexError("block index out of range")


@register_adapter("timm.models.swin_transformer_v2:SwinTransformerV2")
class SwinV2Adapter(SwinAdapter):
    """Swin v2: its WindowAttention reshapes to the input width inside timm's forward, so
    heads stay (MLP channels are pruned); qkv runs as F.linear with a q/v bias and the
    position-bias MLP (cpb_mlp) on constants, which the quantize plan learns by probing."""

    family = "swin"  # one family name in records and reports, as before v2 had its own adapter
    capabilities = frozenset({MLP_SURGERY, BLOCK_LINEARS, STAGES, EXIT_TOKENS, REPQ_PAIRS, GRID_TOKEN_HOOK})
