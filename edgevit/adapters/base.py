"""The adapter contract and its registry: timm model class -> adapter, capabilities as data.

An adapter is the only code that knows a timm family's module layout. It declares what it
can do as a set of capability names; a pass asks for the capabilities it needs (its spec's
``adapter_needs``) and ``check_passes_supported`` refuses, right after the model loads, a
pass the family cannot take, naming the pass, the capability and the fix. Adapters are
registered by timm class and the most specific class in the model's MRO wins, so a
subclass family (DeiT distilled, a relative-position ViT) gets its own adapter only when
it needs one.
"""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from edgevit.errors import ModelError

# Capability names and what each means (the text goes into refusals).
HEAD_SURGERY = "head_surgery"  # per-head qkv/proj tensors: scored and removed by prune
MLP_SURGERY = "mlp_surgery"  # per-channel fc1/fc2 tensors: scored and removed by prune
BLOCK_LINEARS = "block_linears"  # each block's attention and MLP Linear layers (weight-level prune)
TOKEN_HOOK = "token_hook"  # a hook between attention and MLP where tokens can be reduced (evit, tome)
GRID_TOKEN_HOOK = "grid_token_hook"  # each block's MLP runs on the full row-major token grid (swin_merge)
STAGES = "stages"  # the forward as stem -> blocks -> head steps (cascade stages)
EXIT_TOKENS = "exit_tokens"  # the tokens after any block, with their prefix and grid (exit heads)
REPQ_PAIRS = "repq_pairs"  # norm -> Linear pairs whose channel ranges RepQ can even out

CAPABILITIES: dict[str, str] = {
    HEAD_SURGERY: "per-head attention surgery",
    MLP_SURGERY: "MLP channel surgery",
    BLOCK_LINEARS: "per-block attention/MLP Linear layers",
    TOKEN_HOOK: "an attention->MLP token hook",
    GRID_TOKEN_HOOK: "an MLP hook on the token grid",
    STAGES: "stem/block/head steps",
    EXIT_TOKENS: "per-block token access for exit heads",
    REPQ_PAIRS: "norm->Linear pairs",
}
# the fix a refusal suggests, per missing capability
FIXES = {
    HEAD_SURGERY: "prune with modules: [mlp] or structure: unstructured, or use a ViT/DeiT or Swin v1 model",
    MLP_SURGERY: "prune with structure: unstructured (weight-level), or use a family whose MLP is timm Mlp",
    BLOCK_LINEARS: "drop the prune pass; quantize, export and profiling need no family knowledge",
    TOKEN_HOOK: "token reduction runs on plain ViT/DeiT blocks (timm VisionTransformer); use prune or quantize on this model",
    GRID_TOKEN_HOOK: "swin_merge runs on Swin v1 / v2 (timm SwinTransformer, SwinTransformerV2); use tome on ViT/DeiT",
    STAGES: "exits run on ViT/DeiT, Swin and vit_relpos models; drop the exits pass for this one",
    EXIT_TOKENS: "exits run on ViT/DeiT, Swin and vit_relpos models; drop the exits pass for this one",
}


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


@dataclass(frozen=True)
class HeadLayout:
    """What prune needs to score and cost one block's heads: the fused qkv rows of each head
    ((q, k, v) x heads x head_dim) and its proj columns, plus parameters a head owns beyond
    those (a relative-position-bias column)."""

    qkv: nn.Linear
    proj: nn.Linear
    num_heads: int
    head_dim: int
    extra_params_per_head: int = 0


class ModelAdapter:
    """Base adapter: a family fills in the methods of the capabilities it declares; asking
    for an undeclared one raises a ModelError naming it."""

    family: str = ""
    capabilities: frozenset[str] = frozenset()

    def __init__(self, model: nn.Module):
        self.model = model

    def has(self, capability: str) -> bool:
        return capability in self.capabilities

    def require(self, capability: str, pass_kind: str, fix: str | None = None) -> None:
        if capability not in self.capabilities:
            raise refusal(self, pass_kind, capability, fix)

    # -- structure ----------------------------------------------------------------------
    def blocks(self) -> list[BlockRef]:
        raise refusal(self, "this pass", BLOCK_LINEARS)

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    def token_grid(self, stage: int = 0) -> tuple[int, int]:
        raise refusal(self, "this pass", EXIT_TOKENS)

    def heads(self, ref: BlockRef) -> int:
        return int(ref.attention.num_heads)

    def mlp_hidden(self, ref: BlockRef) -> int:
        return int(ref.mlp.fc1.out_features)

    def summary(self) -> dict:
        blocks = self.blocks()
        return {
            "family": self.family,
            "blocks": len(blocks),
            "stages": 1 + max(b.stage for b in blocks),
            "heads_per_block": [self.heads(b) for b in blocks],
            "mlp_hidden_per_block": [self.mlp_hidden(b) for b in blocks],
            "num_prefix_tokens": self.num_prefix_tokens,
            "token_grid": list(self.token_grid(0)),
        }

    # -- prune --------------------------------------------------------------------------
    def can_prune_heads(self, ref: BlockRef) -> bool:
        """Per block: a family may mix blocks whose heads can and cannot be removed."""
        return HEAD_SURGERY in self.capabilities

    def head_layout(self, ref: BlockRef) -> HeadLayout:
        raise refusal(self, "prune", HEAD_SURGERY)

    def prune_heads(self, ref: BlockRef, keep: list[int]) -> None:
        raise refusal(self, "prune", HEAD_SURGERY)

    def mlp_weights(self, ref: BlockRef) -> tuple[torch.Tensor, torch.Tensor]:
        """(fc1 weight [hidden, dim], fc2 weight [dim, hidden]): one row/column per channel."""
        raise refusal(self, "prune", MLP_SURGERY)

    def prune_mlp(self, ref: BlockRef, keep: list[int]) -> None:
        raise refusal(self, "prune", MLP_SURGERY)

    def attention_linears(self, ref: BlockRef) -> list[nn.Linear]:
        raise refusal(self, "prune", BLOCK_LINEARS)

    def mlp_linears(self, ref: BlockRef) -> list[nn.Linear]:
        raise refusal(self, "prune", BLOCK_LINEARS)

    # -- quantize -----------------------------------------------------------------------
    def repq_pairs(self) -> list[tuple[str, nn.LayerNorm, tuple[nn.Linear, ...]]]:
        """(label, norm, the Linear layers reading that norm's output)."""
        raise refusal(self, "quantize", REPQ_PAIRS)

    # -- tokens -------------------------------------------------------------------------
    def patch_token_block(self, ref: BlockRef, reduction) -> None:
        """Install token reduction at the block's attention->MLP point."""
        raise refusal(self, "evit/tome", TOKEN_HOOK)

    def patch_grid_mlp(self, ref: BlockRef, merge) -> None:
        """Run the block's MLP merge -> compute -> unmerge on its token grid."""
        raise refusal(self, "swin_merge", GRID_TOKEN_HOOK)

    # -- stages and exits ---------------------------------------------------------------
    # stem(x) -> run_block(0) ... run_block(n-1) -> finish; tests check the steps compose
    # to model(x), so this cannot drift from timm's forward silently.
    def stem(self, x: torch.Tensor):
        raise refusal(self, "exits", STAGES)

    def run_block(self, index: int, x):
        raise refusal(self, "exits", STAGES)

    def finish(self, x) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x))

    def pre_logits(self, x) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x), pre_logits=True)

    def tokens(self, x) -> torch.Tensor:
        """[B, N, C] tokens of a block's output (token-reduced blocks pass (tokens, sizes))."""
        return x[0] if isinstance(x, tuple) else x

    @property
    def exit_prefix(self) -> int:
        """Tokens in front of the patch grid in ``tokens(x)``."""
        return self.num_prefix_tokens


def refusal(adapter: ModelAdapter, pass_kind: str, capability: str, fix: str | None = None) -> ModelError:
    what = CAPABILITIES.get(capability, capability)
    family = adapter.family or type(adapter).__name__
    have = ", ".join(sorted(adapter.capabilities)) or "none"
    return ModelError(
        f"{pass_kind}: {type(adapter.model).__name__} ({family} adapter) lacks capability '{capability}' ({what})",
        fix or FIXES.get(capability) or f"this family has: {have}; drop the pass or use a family that has '{capability}'")


# -- registry ---------------------------------------------------------------------------
# timm class, given as "module:Class" so registering imports nothing until a model is matched
_REGISTRY: dict[str, type[ModelAdapter]] = {}


def register_adapter(*timm_classes: str) -> Callable[[type[ModelAdapter]], type[ModelAdapter]]:
    """Class decorator: ``@register_adapter("timm.models.eva:Eva")``."""

    def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        for path in timm_classes:
            if path in _REGISTRY:
                raise ValueError(f"adapter for {path} registered twice ({_REGISTRY[path].__name__}, {cls.__name__})")
            _REGISTRY[path] = cls
        return cls

    return register


def registered_adapters() -> dict[str, type[ModelAdapter]]:
    return dict(_REGISTRY)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _fallback(model: nn.Module) -> type[ModelAdapter] | None:
    from edgevit.adapters.generic import GenericTimmAdapter

    return GenericTimmAdapter if type(model).__module__.startswith("timm.") else None


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter of the most specific registered class in the model's MRO; any other timm
    model gets the generic adapter (no capabilities: quantize, export and profiling only)."""
    for cls in type(model).__mro__:
        adapter = _REGISTRY.get(_class_path(cls))
        if adapter is not None:
            return adapter(model)
    fallback = _fallback(model)
    if fallback is None:
        families = sorted({a.family for a in _REGISTRY.values()})
        raise ModelError(f"{type(model).__name__}: no edgevit adapter for this model family (not a timm model)",
                         f"supported: {', '.join(families)} and, for quantize/export only, any timm model")
    return fallback(model)


def resolve_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


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


def undo_class_swaps(model: nn.Module, marker: str) -> nn.Module:
    """Undo the patches that swapped a module's class for a subclass and tagged it with the
    attribute ``marker`` (token hooks): the original class and no tag again."""
    for module in model.modules():
        if hasattr(module, marker):
            module.__class__ = module.__class__.__mro__[1]
            delattr(module, marker)
    return model
