"""Model-family adapters: the one place that knows timm's module layout.

Passes ask an adapter for blocks, attention and MLP modules, prefix tokens and the token
grid; they never reach into timm classes themselves, so a new family is one new adapter.
Module swaps go through ``swap_module`` so they can be undone (tests compare a patched
model against the unpatched one).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from edgevit.errors import ModelError


@dataclass(frozen=True)
class BlockRef:
    """One transformer block, addressed by its qualified module name."""

    name: str
    module: nn.Module
    stage: int  # 0 for plain ViTs; the Swin stage otherwise
    tokens: int  # tokens the block sees at the model's input size (for FLOPs per head/channel)
    attention_span: int  # keys each query attends to: all tokens (ViT) or the window area (Swin)

    @property
    def attention(self) -> nn.Module:
        return self.module.attn

    @property
    def mlp(self) -> nn.Module:
        return self.module.mlp


class ModelAdapter:
    family: str = ""

    def __init__(self, model: nn.Module):
        self.model = model

    @staticmethod
    def matches(model: nn.Module) -> bool:
        raise NotImplementedError

    def blocks(self) -> list[BlockRef]:
        raise NotImplementedError

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    def token_grid(self, stage: int = 0) -> tuple[int, int]:
        raise NotImplementedError

    # The forward pass as steps, so a model can be cut between blocks (early-exit stages):
    # stem(x) -> run_block(0) ... run_block(n-1) -> finish. Tests check the steps compose
    # to model(x), so this cannot drift from timm's forward silently.
    def stem(self, x: torch.Tensor):
        raise NotImplementedError

    def run_block(self, index: int, x):
        raise NotImplementedError

    def finish(self, x) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x))

    def tokens(self, x) -> torch.Tensor:
        """[B, N, C] tokens of a block's output (token-reduced blocks pass (tokens, sizes))."""
        return x[0] if isinstance(x, tuple) else x

    def summary(self) -> dict:
        blocks = self.blocks()
        heads = [b.attention.num_heads for b in blocks]
        return {
            "family": self.family,
            "blocks": len(blocks),
            "stages": 1 + max(b.stage for b in blocks),
            "heads_per_block": heads,
            "mlp_hidden_per_block": [b.mlp.fc1.out_features for b in blocks],
            "num_prefix_tokens": self.num_prefix_tokens,
            "token_grid": list(self.token_grid(0)),
        }


class VitAdapter(ModelAdapter):
    """timm VisionTransformer and its subclasses (DeiT, DeiT-III with LayerScale, registers)."""

    family = "vit"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def blocks(self) -> list[BlockRef]:
        h, w = self.token_grid()
        n = h * w + self.num_prefix_tokens
        return [BlockRef(f"blocks.{i}", b, 0, n, n) for i, b in enumerate(self.model.blocks)]

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    def token_grid(self, stage: int = 0) -> tuple[int, int]:
        return tuple(self.model.patch_embed.grid_size)  # type: ignore[return-value]

    def stem(self, x: torch.Tensor):
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def run_block(self, index: int, x):
        return self.model.blocks[index](x)


class SwinAdapter(ModelAdapter):
    """timm SwinTransformer (v1) and SwinTransformerV2: blocks live in layers[s].blocks."""

    family = "swin"

    @staticmethod
    def matches(model: nn.Module) -> bool:
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.swin_transformer_v2 import SwinTransformerV2

        return isinstance(model, (SwinTransformer, SwinTransformerV2))

    def blocks(self) -> list[BlockRef]:
        refs = []
        for s, layer in enumerate(self.model.layers):
            h, w = self.token_grid(s)
            for i, block in enumerate(layer.blocks):
                wh, ww = block.attn.window_size  # v1 and v2 both keep (Wh, Ww) on the attention module
                refs.append(BlockRef(f"layers.{s}.blocks.{i}", block, s, h * w, int(wh) * int(ww)))
        return refs

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

    def _locate(self, index: int) -> tuple[int, int]:
        for stage, layer in enumerate(self.model.layers):
            if index < len(layer.blocks):
                return stage, index
            index -= len(layer.blocks)
        raise IndexError("block index out of range")


ADAPTERS: tuple[type[ModelAdapter], ...] = (VitAdapter, SwinAdapter)


def adapter_for(model: nn.Module) -> ModelAdapter:
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter(model)
    raise ModelError(
        f"{type(model).__name__}: no edgevit adapter for this model family",
        f"supported: {', '.join(a.family for a in ADAPTERS)} (timm ViT/DeiT and Swin v1/v2)",
    )


@contextlib.contextmanager
def swap_module(root: nn.Module, name: str, replacement: nn.Module) -> Iterator[nn.Module]:
    """Replace the submodule ``name`` for the duration of the block, then restore it."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    original = getattr(parent, child)
    setattr(parent, child, replacement)
    try:
        yield original
    finally:
        setattr(parent, child, original)
