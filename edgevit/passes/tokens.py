"""`kind: evit` and `kind: tome` — token reduction for plain ViT/DeiT, with static shapes.

For a given input size and config the token count of every block is fixed, so the pass
records it and the exported graph has no data-dependent shapes.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar

from torch import nn

from edgevit.adapters import TOKEN_HOOK, ModelAdapter, adapter_for
from edgevit.errors import EdgevitError, ModelError
from edgevit.flops import count_flops
from edgevit.passes.base import PassContext, PassRecord, register_pass
from edgevit.passes.token_patch import Reduction, unpatch
from edgevit.passes.specs.tokens import EvitConfig, TomeConfig  # noqa: F401  (the declarations; re-exported)
from edgevit.training import finetune_if_asked

EVIT_DEFAULT_DEPTH, EVIT_DEFAULT_LOCATIONS = 12, (4, 7, 10)  # 1-based, as in the EViT paper for DeiT-12


def _vit(model: nn.Module, kind: str) -> ModelAdapter:
    adapter = adapter_for(model)
    adapter.require(TOKEN_HOOK, kind)
    return adapter


def evit_locations(depth: int, locations: list[int] | None) -> list[int]:
    if locations is None:
        locations = sorted({max(1, round(l * depth / EVIT_DEFAULT_DEPTH)) for l in EVIT_DEFAULT_LOCATIONS})
    bad = [l for l in locations if not 1 <= l <= depth]
    if bad:
        raise EdgevitError(f"evit: locations {bad} outside 1..{depth}", f"this model has {depth} blocks")
    return sorted(set(locations))


def tome_blocks(depth: int, blocks: list[int] | str | None) -> list[int] | None:
    """1-based merging blocks; "evit" = EViT's locations (4, 7, 10 of 12) scaled to the
    depth: a few large merges cost less glue at batch 1 than a small one in every block."""
    if blocks == "evit":
        return evit_locations(depth, None)
    bad = [b for b in blocks or [] if b > depth]
    if bad:
        raise EdgevitError(f"tome: blocks {bad} outside 1..{depth}", f"this model has {depth} blocks")
    return blocks


def tome_schedule(depth: int, cfg: TomeConfig, r: Any) -> list[int]:
    blocks = tome_blocks(depth, cfg.blocks)
    if isinstance(r, int):
        per = [r] * depth
    elif isinstance(r, list) and blocks is not None and len(r) == len(blocks):
        # one r per merging block, in the order the blocks are listed
        by_block = dict(zip(blocks, r))
        return [by_block.get(i + 1, 0) for i in range(depth)]
    elif isinstance(r, list):
        if len(r) != depth:
            raise EdgevitError(f"tome: r has {len(r)} entries for {depth} blocks",
                               "give one r per block, or one per entry of `blocks:` when it is set")
        per = list(r)
    else:
        per = [round(r.r * (1 - r.inflection + 2 * r.inflection * i / max(1, depth - 1))) for i in range(depth)]
    if blocks is not None:
        per = [v if i + 1 in blocks else 0 for i, v in enumerate(per)]
    return per


def _tokens_after_tome(n_patches: int, schedule: list[int]) -> tuple[list[int], list[int]]:
    """Clamp each r so at least one token is left in set B; returns (r used, patches after)."""
    used, after = [], []
    for r in schedule:
        r = max(0, min(r, n_patches // 2, n_patches - 1))
        n_patches -= r
        used.append(r)
        after.append(n_patches)
    return used, after


class _TokenPass:
    requires: ClassVar[frozenset[str]] = frozenset()

    def apply(self, model: nn.Module, cfg, ctx: PassContext) -> tuple[nn.Module, PassRecord]:
        adapter = _vit(model, self.kind)
        flops_before = count_flops(model, ctx.input_size)
        structure = self._patch(model, adapter, cfg, ctx)
        flops_after = count_flops(model, ctx.input_size)
        training, why_not = finetune_if_asked(model, cfg.finetune, ctx)
        notes = [why_not] if why_not else []
        metrics = {"flops_before": flops_before, "flops_after": flops_after, "flops_reduction": 1 - flops_after / flops_before,
                   "tokens_per_block": structure["tokens_per_block"]}
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(mode="json"), structure=structure, metrics=metrics,
                                 training=training, notes=notes)

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        self._install(model, _vit(model, self.kind), record.structure)
        return model

    @staticmethod
    def _install(model: nn.Module, adapter: ModelAdapter, structure: dict[str, Any]) -> None:
        blocks = adapter.blocks()
        for spec in structure["blocks"]:
            adapter.patch_token_block(blocks[spec["index"]], Reduction(**spec["reduction"]))


@register_pass
class EvitPass(_TokenPass):
    kind = "evit"
    config_type = EvitConfig

    def _patch(self, model, adapter: ModelAdapter, cfg: EvitConfig, ctx: PassContext) -> dict[str, Any]:
        if not getattr(model, "cls_token", None) is not None:
            raise ModelError("evit needs a class token (its attention ranks the patches)", "use tome for models without one")
        blocks, prefix = adapter.blocks(), adapter.num_prefix_tokens
        n = blocks[0].tokens - prefix
        specs, tokens = [], []
        for i, _ in enumerate(blocks):
            if i + 1 in evit_locations(len(blocks), cfg.locations):
                keep = max(1, math.ceil(cfg.keep_rate * n))
                red = Reduction("evit", prefix, keep=keep, fuse=cfg.fuse)
                specs.append({"index": i, "reduction": vars(red)})
                n = keep + (1 if cfg.fuse and keep < n else 0)
            tokens.append(prefix + n)
        structure = {"blocks": specs, "tokens_per_block": tokens}
        self._install(model, adapter, structure)
        return structure


@register_pass
class TomePass(_TokenPass):
    kind = "tome"
    config_type = TomeConfig

    @staticmethod
    @contextlib.contextmanager
    def export_form(model: nn.Module, form: str) -> Iterator[None]:
        """Merge as ``form`` (scatter / onehot) while one exporter traces, then restore."""
        reductions = [m.edgevit_reduction for m in model.modules() if getattr(m, "edgevit_reduction", None) is not None]
        before = [red.form for red in reductions]
        for red in reductions:
            red.form = form
        try:
            yield
        finally:
            for red, old in zip(reductions, before):
                red.form = old

    def _patch(self, model, adapter: ModelAdapter, cfg: TomeConfig, ctx: PassContext) -> dict[str, Any]:
        r = cfg.r if cfg.r is not None else self._r_for_flops(model, adapter, cfg, ctx)
        structure = self._structure(adapter, cfg, r)
        self._install(model, adapter, structure)
        return structure

    @staticmethod
    def _structure(adapter: ModelAdapter, cfg: TomeConfig, r: Any) -> dict[str, Any]:
        blocks, prefix = adapter.blocks(), adapter.num_prefix_tokens
        used, after = _tokens_after_tome(blocks[0].tokens - prefix, tome_schedule(len(blocks), cfg, r))
        first = next((i for i, v in enumerate(used) if v > 0), len(blocks))
        specs = []
        for i in range(first, len(blocks)):
            red = Reduction("tome", prefix, r=used[i], proportional=cfg.proportional_attention and i > first,
                            takes_state=i > first, returns_state=i < len(blocks) - 1)
            specs.append({"index": i, "reduction": vars(red)})
        return {"blocks": specs, "tokens_per_block": [prefix + a for a in after], "r_per_block": used}

    def _r_for_flops(self, model, adapter: ModelAdapter, cfg: TomeConfig, ctx: PassContext) -> int:
        """Smallest constant r whose counted FLOPs reduction reaches the target (binary
        search; FLOPs only grow back as r shrinks)."""
        base = count_flops(model, ctx.input_size)

        def reduction(r: int) -> float:
            self._install(model, adapter, self._structure(adapter, cfg, r))
            try:
                return 1 - count_flops(model, ctx.input_size) / base
            finally:
                unpatch(model)

        lo, hi = 0, (adapter.blocks()[0].tokens - adapter.num_prefix_tokens) // 2
        if reduction(hi) < cfg.flops_reduction:
            raise EdgevitError(f"tome: no r reaches {cfg.flops_reduction:.0%} fewer FLOPs (at most {reduction(hi):.0%})",
                               "lower flops_reduction")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if reduction(mid) < cfg.flops_reduction else (lo, mid)
        return hi
