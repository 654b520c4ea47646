"""timm Eva (EVA-02, ``eva02_*``, and the other Eva-class ViTs): pre-norm blocks with rotary
position embedding, attention with fused qkv (+ q/v bias, applied with F.linear) or
separate q/k/v projections, and Mlp / SwiGLU / GluMlp MLPs.

Declared: RepQ pairs and per-block Linear layers (weight-level prune). Refused by name:
head surgery (timm's forward reshapes the attention output to the input width), MLP
channel surgery on SwiGLU, token hooks (rope is laid out over the full grid) and exits
(each block takes the rope tensor as an argument, which stages would have to carry).
"""
from __future__ import annotations

from torch import nn

from edgevit.adapters import layers
from edgevit.adapters.base import BLOCK_LINEARS, MLP_SURGERY, REPQ_PAIRS, BlockRef, register_adapter
from edgevit.adapters.vit import PlainBlocksAdapter


def _attention_inputs(attn: nn.Module) -> list[nn.Linear]:
    """The Linear layers reading the attention's input (norm1's output)."""
    projections = [attn.qkv] if attn.qkv is not None else [attn.q_proj, attn.k_proj, attn.v_proj]
    return projections + ([attn.gate] if attn.gate is not None else [])


def _mlp_inputs(mlp: nn.Module) -> list[nn.Linear]:
    """The Linear layers reading the MLP's input (norm2's output)."""
    return [mlp.fc1_g, mlp.fc1_x] if hasattr(mlp, "fc1_g") else [mlp.fc1]


@register_adapter("timm.models.eva:Eva")
class EvaAdapter(PlainBlocksAdapter):
    family = "eva"

    def __init__(self, model):
        super().__init__(model)
        caps = {BLOCK_LINEARS, REPQ_PAIRS}
        if all(layers.is_timm_mlp(b.mlp) for b in model.blocks):
            caps.add(MLP_SURGERY)
        self.capabilities = frozenset(caps)

    def can_prune_heads(self, ref: BlockRef) -> bool:
        return False

    def mlp_hidden(self, ref: BlockRef) -> int:
        return int(ref.mlp.fc2.in_features)

    def attention_linears(self, ref: BlockRef) -> list[nn.Linear]:
        return [*_attention_inputs(ref.attention), ref.attention.proj]

    def mlp_linears(self, ref: BlockRef) -> list[nn.Linear]:
        return [*_mlp_inputs(ref.mlp), ref.mlp.fc2]

    def repq_pairs(self) -> list[tuple[str, nn.LayerNorm, tuple[nn.Linear, ...]]]:
        pairs = []
        for ref in self.blocks():
            b = ref.module
            for norm, linears, label in ((b.norm1, _attention_inputs(b.attn), "norm1->attn"),
                                         (b.norm2, _mlp_inputs(b.mlp), "norm2->mlp")):
                if isinstance(norm, nn.LayerNorm) and norm.elementwise_affine:
                    pairs.append((f"{ref.name}.{label}", norm, tuple(linears)))
        return pairs
