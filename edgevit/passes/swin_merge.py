"""`kind: swin_merge` — training-free token merging for Swin v1 / v2, with static shapes.

Each chosen block runs its MLP (two thirds of a Swin block's FLOPs) merge -> compute ->
unmerge on its stage's token grid (``grid_merge_kernels``); attention, the window
partition, the shift and patch merging see the full grid, untouched. For a given input
size and config the number of tokens each MLP sees is fixed, so the record holds it and
the exported graph has no data-dependent shapes.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from edgevit.adapters import GRID_TOKEN_HOOK, BlockRef, ModelAdapter, adapter_for
from edgevit.errors import EdgevitError
from edgevit.flops import count_flops
from edgevit.passes.base import PassContext, PassRecord, register_pass
from edgevit.passes.grid_merge_kernels import max_merge, merge_compute_unmerge
from edgevit.passes.specs.swin_merge import SwinMergeConfig
from edgevit.training import finetune_if_asked


@dataclass
class GridMerge:
    """What one block's MLP does: merge r of the h x w grid's tokens in stride x stride cells."""

    h: int
    w: int
    stride: int
    r: int
    match: str = "cell"


_PATCHED: dict[type, type] = {}


def _merging_class(cls: type) -> type:
    def forward(self, x):
        m: GridMerge = self.edgevit_grid_merge
        # the unpatched class's forward on fewer tokens: whatever that module is (timm Mlp,
        # GluMlp, a pruned one), it is what runs
        return merge_compute_unmerge(x, functools.partial(cls.forward, self), m.h, m.w, m.stride, m.r, m.match)

    return type(f"GridMerging{cls.__name__}", (cls,), {"forward": forward})


def install_grid_merge(module: nn.Module, merge: GridMerge) -> None:
    """Swap ``module``'s class for a subclass whose forward merges around the original one
    (state-dict keys and weights untouched; ``uninstall_grid_merge`` undoes it)."""
    cls = type(module).__mro__[1] if hasattr(module, "edgevit_grid_merge") else type(module)
    if cls not in _PATCHED:
        _PATCHED[cls] = _merging_class(cls)
    module.__class__ = _PATCHED[cls]
    module.edgevit_grid_merge = merge


def uninstall_grid_merge(model: nn.Module) -> nn.Module:
    from edgevit.adapters.base import undo_class_swaps

    return undo_class_swaps(model, "edgevit_grid_merge")


def merge_plan(adapter: ModelAdapter, cfg: SwinMergeConfig) -> list[tuple[BlockRef, GridMerge | None]]:
    """Per block: its merge (None where it does not merge), from the config and the grid."""
    blocks = adapter.blocks()
    n_stages = 1 + max(b.stage for b in blocks)
    bad = [s for s in cfg.stages or [] if s > n_stages] + [b for b in cfg.blocks or [] if b > len(blocks)]
    if bad:
        raise EdgevitError(f"swin_merge: stages/blocks {bad} out of range", f"this model has {n_stages} stages, {len(blocks)} blocks")
    plan = []
    for i, ref in enumerate(blocks):
        h, w = adapter.token_grid(ref.stage)
        fits = h % cfg.stride == 0 and w % cfg.stride == 0
        chosen = (cfg.stages is None and fits) or (cfg.stages is not None and ref.stage + 1 in cfg.stages)
        chosen = chosen and (cfg.blocks is None or i + 1 in cfg.blocks)
        if chosen and not fits:
            raise EdgevitError(f"swin_merge: stage {ref.stage + 1}'s {h}x{w} grid is not divisible by stride {cfg.stride}",
                               "leave that stage out of `stages`, or change stride")
        r = min(math.floor(cfg.ratio * h * w), max_merge(h, w, cfg.stride)) if chosen else 0
        plan.append((ref, GridMerge(h, w, cfg.stride, r, cfg.match) if r > 0 else None))
    return plan


@register_pass
class SwinMergePass:
    kind = "swin_merge"
    config_type = SwinMergeConfig
    requires: ClassVar[frozenset[str]] = frozenset()

    def apply(self, model: nn.Module, cfg: SwinMergeConfig, ctx: PassContext) -> tuple[nn.Module, PassRecord]:
        adapter = adapter_for(model)
        adapter.require(GRID_TOKEN_HOOK, self.kind)
        flops_before = count_flops(model, ctx.input_size)
        plan = merge_plan(adapter, cfg)
        structure = {"blocks": [{"index": i, "merge": vars(m)} for i, (_, m) in enumerate(plan) if m is not None]}
        self._install(adapter, structure)
        flops_after = count_flops(model, ctx.input_size)
        training, why_not = finetune_if_asked(model, cfg.finetune, ctx)
        metrics = {"flops_before": flops_before, "flops_after": flops_after, "flops_reduction": 1 - flops_after / flops_before,
                   "mlp_tokens_per_block": [ref.tokens - (m.r if m else 0) for ref, m in plan],
                   "tokens_per_block": [ref.tokens for ref, _ in plan]}  # the grid every block hands on is whole
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(mode="json"), structure=structure, metrics=metrics,
                                 training=training, notes=[why_not] if why_not else [])

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        adapter = adapter_for(model)
        adapter.require(GRID_TOKEN_HOOK, self.kind)
        self._install(adapter, record.structure)
        return model

    @staticmethod
    def _install(adapter: ModelAdapter, structure: dict[str, Any]) -> None:
        blocks = adapter.blocks()
        for spec in structure["blocks"]:
            adapter.patch_grid_mlp(blocks[spec["index"]], GridMerge(**spec["merge"]))
