"""`kind: prune` — DIMAP scores made structural: whole heads and MLP channels removed.

The paper (DIMAP) scores single weights; zeros buy no speed in any runtime here. This
pass aggregates the per-weight scores over attention heads (qkv rows + proj columns +
the head's relative-position-bias column on Swin) and MLP hidden channels (fc1 rows +
fc2 columns), ranks them inside their module, and rebuilds smaller nn.Linear layers, so
the exported graph really shrinks. Patch embedding, patch merging and norms are never
touched. ``structure: unstructured`` and ``2:4`` keep the paper's weight-level method
(zeros folded into the weights) and are reported as giving no speed-up here.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from edgevit.adapters import BlockRef, adapter_for
from edgevit.errors import EdgevitError
from edgevit.flops import count_flops, count_params
from edgevit.passes.base import PassConfig, PassContext, PassRecord, register_pass
from edgevit.passes.pruning_scores import channel_scores, dimap_importance, head_scores
from edgevit.surgery import can_prune_heads, prune_heads, prune_mlp
from edgevit.training import FinetuneConfig, finetune_if_asked

Module = Literal["attention", "mlp"]


class PruneConfig(PassConfig):
    kind: Literal["prune"] = "prune"
    method: Literal["dimap", "l1"] = Field("dimap", description="dimap: DIMAP scores per structure; l1: naive L1 norm, one global ranking")
    allocation: Literal["cost_aware", "per_module"] = Field(
        "cost_aware", description="dimap only. cost_aware: rank by score per removed FLOP (or param) across modules; "
        "per_module: remove the same fraction of every module, each ranked on its own")
    structure: Literal["heads_channels", "unstructured", "2:4"] = "heads_channels"
    flops_reduction: float | None = Field(None, gt=0, lt=0.95, description="fraction of the model's FLOPs to remove")
    param_reduction: float | None = Field(None, gt=0, lt=0.95, description="fraction of the model's parameters to remove")
    per_module: dict[Module, float] | None = Field(None, description="fraction of each module's prunable FLOPs/params to remove")
    modules: list[Module] = Field(default_factory=lambda: ["attention", "mlp"])
    min_heads: int = Field(1, ge=1, description="heads every block keeps")
    min_mlp_ratio: float = Field(0.05, gt=0, le=1, description="share of MLP channels every block keeps")
    channel_multiple: int = Field(16, ge=1, description="kept MLP channels rounded to a multiple (int4 blocks, SIMD widths)")
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "PruneConfig":
        given = [t for t in (self.flops_reduction, self.param_reduction, self.per_module) if t is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of flops_reduction, param_reduction, per_module")
        if self.per_module and self.method == "l1":
            raise ValueError("per_module targets need method: dimap (l1 ranks globally)")
        if self.structure != "heads_channels" and self.flops_reduction is not None:
            raise ValueError("unstructured/2:4 pruning removes no FLOPs at runtime; use param_reduction")
        return self


@dataclass
class Unit:
    """One removable structure: a head or an MLP hidden channel of one block."""

    module: str
    block: int
    index: int
    score: float
    flops: int
    params: int


def _units(blocks: list[BlockRef], cfg: PruneConfig) -> list[Unit]:
    units: list[Unit] = []
    for b, ref in enumerate(blocks):
        attn, mlp = ref.attention, ref.mlp
        dim = attn.qkv.in_features
        if "attention" in cfg.modules and can_prune_heads(attn):
            hd = attn.qkv.out_features // (3 * attn.num_heads)
            # MACs of one head: qkv rows + proj columns on every token, q.k^T and attn.v over its span
            macs = ref.tokens * 4 * hd * dim + 2 * ref.tokens * ref.attention_span * hd
            table = getattr(attn, "relative_position_bias_table", None)
            params = 4 * hd * dim + (3 * hd if attn.qkv.bias is not None else 0) + (table.shape[0] if table is not None else 0)
            scores = head_scores(attn.qkv.weight, attn.proj.weight, attn.num_heads, cfg.method)
            units += [Unit("attention", b, h, float(s), 2 * macs, params) for h, s in enumerate(scores)]
        if "mlp" in cfg.modules:
            macs = ref.tokens * 2 * dim
            scores = channel_scores(mlp.fc1.weight, mlp.fc2.weight, cfg.method)
            units += [Unit("mlp", b, c, float(s), 2 * macs, 2 * dim + 1) for c, s in enumerate(scores)]
    return units


def _select(units: list[Unit], blocks: list[BlockRef], cost: str, budgets: dict[str, float], cfg: PruneConfig) -> set[tuple[str, int, int]]:
    """Lowest-scoring units first, within each budget key ('attention', 'mlp' or 'all'),
    never taking a block below min_heads / min_mlp_ratio."""
    floor = {("attention", b): cfg.min_heads for b in range(len(blocks))}
    floor |= {("mlp", b): max(1, math.ceil(cfg.min_mlp_ratio * r.mlp.fc1.out_features)) for b, r in enumerate(blocks)}
    left = {("attention", b): r.attention.num_heads for b, r in enumerate(blocks)}
    left |= {("mlp", b): r.mlp.fc1.out_features for b, r in enumerate(blocks)}
    removed: set[tuple[str, int, int]] = set()
    spent = dict.fromkeys(budgets, 0.0)
    for u in sorted(units, key=lambda u: (u.score, u.module, u.block, u.index)):
        key = u.module if u.module in budgets else "all"
        if key not in budgets or spent[key] >= budgets[key] or left[(u.module, u.block)] <= floor[(u.module, u.block)]:
            continue
        c = getattr(u, cost)
        if spent[key] + c / 2 > budgets[key]:  # would overshoot more than it helps: look for a smaller unit
            continue
        removed.add((u.module, u.block, u.index))
        left[(u.module, u.block)] -= 1
        spent[key] += c
    return removed


def _plan(units: list[Unit], blocks: list[BlockRef], cfg: PruneConfig, total: dict[str, int]) -> tuple[set, dict]:
    cost = "params" if cfg.param_reduction is not None else "flops"
    module_total = {m: sum(getattr(u, cost) for u in units if u.module == m) for m in cfg.modules}
    if cfg.per_module is not None:
        fractions = {m: cfg.per_module.get(m, 0.0) for m in cfg.modules}
        return _select(units, blocks, cost, {m: f * module_total[m] for m, f in fractions.items()}, cfg), {"module_fractions": fractions}
    target = (cfg.flops_reduction or cfg.param_reduction) * total[cost]
    cost_of = {(u.module, u.block, u.index): getattr(u, cost) for u in units}
    reachable = sum(cost_of[k] for k in _select(units, blocks, cost, dict.fromkeys(cfg.modules, math.inf), cfg))
    if reachable < target:
        raise EdgevitError(f"prune: cannot remove {target / total[cost]:.0%} of {cost} "
                           f"(at most {reachable / total[cost]:.0%} with modules={cfg.modules}, min_heads, min_mlp_ratio)",
                           "lower the target or allow more modules")
    if cfg.method == "l1":  # the naive baseline: one global ranking over heads and channels
        return _select(units, blocks, cost, {"all": target}, cfg), {"allocation": "global", "budget": target}
    if cfg.allocation == "cost_aware":
        # DIMAP scores are normalised per layer, so they compare across modules; dividing by
        # what removing the unit saves puts a head (many FLOPs) and a channel (few) on one scale.
        ranked = [Unit(u.module, u.block, u.index, u.score / getattr(u, cost), u.flops, u.params) for u in units]
        return _select(ranked, blocks, cost, {"all": target}, cfg), {"allocation": "cost_aware", "budget": target}

    def removed_cost(p: float) -> tuple[set, float]:
        chosen = _select(units, blocks, cost, {m: p * module_total[m] for m in cfg.modules}, cfg)
        return chosen, sum(cost_of[k] for k in chosen)

    best = removed_cost(1.0)[0]
    lo, hi = 0.0, 1.0
    for _ in range(30):  # one fraction p per module (the paper's one threshold per module)
        mid = (lo + hi) / 2
        chosen, got = removed_cost(mid)
        if got >= target:
            hi, best = mid, chosen
        else:
            lo = mid
    return best, {"allocation": "per_module", "module_fraction": hi}


@register_pass
class PrunePass:
    kind = "prune"
    config_type = PruneConfig
    requires: ClassVar[frozenset[str]] = frozenset()

    def apply(self, model: nn.Module, cfg: PruneConfig, ctx: PassContext) -> tuple[nn.Module, PassRecord]:
        adapter = adapter_for(model)
        flops_before, params_before = count_flops(model, ctx.input_size), count_params(model)
        if cfg.structure == "heads_channels":
            structure, metrics = self._structural(model, adapter, cfg, {"flops": flops_before, "params": params_before})
            after_step = None
        else:
            masks, metrics = self._weight_level(adapter, cfg)
            structure = {}

            def after_step() -> None:  # keep pruned weights at zero while fine-tuning
                with torch.no_grad():
                    for linear, mask in masks:
                        linear.weight.mul_(mask)

        notes = []
        if "attention" in cfg.modules and not all(can_prune_heads(b.attention) for b in adapter.blocks()):
            notes.append("heads of this attention type cannot be removed (e.g. Swin v2): MLP channels only")
        training, why_not = finetune_if_asked(model, cfg.finetune, ctx, after_step)
        notes += [why_not] if why_not else []
        flops_after, params_after = count_flops(model, ctx.input_size), count_params(model)
        metrics |= {
            "method": cfg.method, "structure": cfg.structure,
            "flops_before": flops_before, "flops_after": flops_after, "flops_reduction": 1 - flops_after / flops_before,
            "params_before": params_before, "params_after": params_after, "param_reduction": 1 - params_after / params_before,
        }
        if cfg.structure == "unstructured":
            notes.append("unstructured sparsity: smaller when compressed, no runtime here runs it faster")
        elif cfg.structure == "2:4":
            notes.append("2:4 sparsity pays off only with TensorRT sparse kernels (Ampere+); dense elsewhere")
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(mode="json"), structure=structure,
                                 metrics=metrics, training=training, notes=notes)

    def _structural(self, model, adapter, cfg: PruneConfig, total: dict[str, int]):
        blocks = adapter.blocks()
        units = _units(blocks, cfg)
        removed, solve = _plan(units, blocks, cfg, total)
        units_by_key = {(u.module, u.block, u.index): u for u in units}
        per_block = []
        for b, ref in enumerate(blocks):
            heads, hidden = ref.attention.num_heads, ref.mlp.fc1.out_features
            keep_h = [h for h in range(heads) if ("attention", b, h) not in removed]
            keep_c = _round_channels(ref, b, hidden, removed, units_by_key, cfg.channel_multiple)
            if len(keep_h) < heads:
                prune_heads(ref.attention, keep_h)
            if len(keep_c) < hidden:
                prune_mlp(ref.mlp, keep_c)
            per_block.append({"name": ref.name, "heads": len(keep_h), "heads_before": heads,
                              "mlp_hidden": len(keep_c), "mlp_hidden_before": hidden})
        structure = {"family": adapter.family, "blocks": [{k: p[k] for k in ("name", "heads", "mlp_hidden")} for p in per_block]}
        return structure, {"per_block": per_block, "solver": solve}

    def _weight_level(self, adapter, cfg: PruneConfig):
        """The paper's unstructured DIMAP (module-wise thresholds) or 2:4 groups."""
        modules: dict[str, list[nn.Linear]] = {"qkv": [], "proj": [], "mlp": []}
        for ref in adapter.blocks():
            if "attention" in cfg.modules:
                modules["qkv"].append(ref.attention.qkv)
                modules["proj"].append(ref.attention.proj)
            if "mlp" in cfg.modules:
                modules["mlp"] += [ref.mlp.fc1, ref.mlp.fc2]
        sparsity = cfg.param_reduction if cfg.param_reduction is not None else None
        masks = []
        for name, linears in modules.items():
            scores = [dimap_importance(l.weight) if cfg.method == "dimap" else l.weight.detach().abs().double() for l in linears]
            frac = sparsity if sparsity is not None else (cfg.per_module or {}).get("mlp" if name == "mlp" else "attention", 0.0)
            if cfg.structure == "2:4":
                layer_masks = [_two_four(s) for s in scores]
            else:
                flat = torch.cat([s.flatten() for s in scores])
                k = int(frac * flat.numel())
                threshold = flat.kthvalue(k).values if k > 0 else -math.inf
                layer_masks = [(s > threshold).to(torch.float32) for s in scores]
            for linear, mask in zip(linears, layer_masks):
                with torch.no_grad():
                    linear.weight.mul_(mask)
                masks.append((linear, mask))
        total = sum(m.numel() for _, m in masks)
        zeros = sum(int((m == 0).sum()) for _, m in masks)
        dense = b"".join(l.weight.detach().numpy().tobytes() for l, _ in masks)
        return masks, {"pruned_weights": zeros, "prunable_weights": total, "sparsity": zeros / total,
                       "prunable_bytes": len(dense), "prunable_bytes_zlib": len(zlib.compress(dense, 6))}

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        blocks = record.structure.get("blocks")
        if not blocks:  # weight-level pruning keeps every shape
            return model
        refs = {ref.name: ref for ref in adapter_for(model).blocks()}
        for spec in blocks:
            ref = refs[spec["name"]]
            if spec["heads"] < ref.attention.num_heads:
                prune_heads(ref.attention, range(spec["heads"]))
            if spec["mlp_hidden"] < ref.mlp.fc1.out_features:
                prune_mlp(ref.mlp, range(spec["mlp_hidden"]))
        return model


def _round_channels(ref: BlockRef, b: int, hidden: int, removed: set, units: dict, multiple: int) -> list[int]:
    """Kept MLP channels, their count rounded to the nearest multiple (never to zero): the
    best-scoring removed channels come back, or the worst kept ones go."""
    keep = [c for c in range(hidden) if ("mlp", b, c) not in removed]
    if multiple <= 1 or len(keep) == hidden or hidden % multiple:
        return keep
    target = max(multiple, int(round(len(keep) / multiple)) * multiple)
    score = lambda c: units[("mlp", b, c)].score if ("mlp", b, c) in units else float("inf")
    if target > len(keep):
        back = sorted((c for c in range(hidden) if ("mlp", b, c) in removed), key=score, reverse=True)
        keep += back[: target - len(keep)]
    else:
        keep = sorted(keep, key=score, reverse=True)[:target]
    return sorted(keep)


def _two_four(scores: torch.Tensor) -> torch.Tensor:
    """Keep the 2 best of every 4 consecutive input weights of each row (NVIDIA 2:4)."""
    rows, cols = scores.shape
    if cols % 4:
        raise EdgevitError(f"2:4 sparsity needs input widths divisible by 4 (got {cols})")
    groups = scores.reshape(rows, cols // 4, 4)
    top = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.float32).scatter_(-1, top, 1.0)
    return mask.reshape(rows, cols)
