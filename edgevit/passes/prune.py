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
from typing import ClassVar

import torch
from torch import nn

from edgevit.adapters import BlockRef, ModelAdapter, adapter_for, check_passes_supported
from edgevit.errors import EdgevitError
from edgevit.flops import count_flops, count_params
from edgevit.passes.base import PassContext, PassRecord, register_pass
from edgevit.passes.pruning_scores import channel_scores, dimap_importance, head_scores
from edgevit.passes.specs.prune import PruneConfig  # noqa: F401  (the declaration; re-exported)
from edgevit.training import finetune_if_asked


@dataclass
class Unit:
    """One removable structure: a head or an MLP hidden channel of one block."""

    module: str
    block: int
    index: int
    score: float
    flops: int
    params: int


def _units(adapter: ModelAdapter, blocks: list[BlockRef], cfg: PruneConfig) -> list[Unit]:
    units: list[Unit] = []
    can_mlp = adapter.has("mlp_surgery")
    for b, ref in enumerate(blocks):
        if "attention" in cfg.modules and adapter.can_prune_heads(ref):
            head = adapter.head_layout(ref)
            hd, dim = head.head_dim, head.qkv.in_features
            # MACs of one head: qkv rows + proj columns on every token, q.k^T and attn.v over its span
            macs = ref.tokens * 4 * hd * dim + 2 * ref.tokens * ref.attention_span * hd
            params = 4 * hd * dim + (3 * hd if head.qkv.bias is not None else 0) + head.extra_params_per_head
            scores = head_scores(head.qkv.weight, head.proj.weight, head.num_heads, cfg.method)
            units += [Unit("attention", b, h, float(s), 2 * macs, params) for h, s in enumerate(scores)]
        if "mlp" in cfg.modules and can_mlp:
            fc1, fc2 = adapter.mlp_weights(ref)
            dim = fc1.shape[1]
            macs = ref.tokens * 2 * dim
            scores = channel_scores(fc1, fc2, cfg.method)
            units += [Unit("mlp", b, c, float(s), 2 * macs, 2 * dim + 1) for c, s in enumerate(scores)]
    return units


def _widths(adapter: ModelAdapter, blocks: list[BlockRef]) -> dict[tuple[str, int], int]:
    """Heads and MLP hidden channels of every block, keyed like the units."""
    widths = {("attention", b): adapter.heads(r) for b, r in enumerate(blocks)}
    return widths | {("mlp", b): adapter.mlp_hidden(r) for b, r in enumerate(blocks)}


def _select(units: list[Unit], widths: dict[tuple[str, int], int], cost: str, budgets: dict[str, float], cfg: PruneConfig) -> set[tuple[str, int, int]]:
    """Lowest-scoring units first, within each budget key ('attention', 'mlp' or 'all'),
    never taking a block below min_heads / min_mlp_ratio."""
    floor = {k: cfg.min_heads if k[0] == "attention" else max(1, math.ceil(cfg.min_mlp_ratio * w)) for k, w in widths.items()}
    left = dict(widths)
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


def _plan(units: list[Unit], widths: dict[tuple[str, int], int], cfg: PruneConfig, total: dict[str, int]) -> tuple[set, dict]:
    cost = "params" if cfg.param_reduction is not None else "flops"
    module_total = {m: sum(getattr(u, cost) for u in units if u.module == m) for m in cfg.modules}
    if cfg.per_module is not None:
        fractions = {m: cfg.per_module.get(m, 0.0) for m in cfg.modules}
        return _select(units, widths, cost, {m: f * module_total[m] for m, f in fractions.items()}, cfg), {"module_fractions": fractions}
    target = (cfg.flops_reduction or cfg.param_reduction) * total[cost]
    cost_of = {(u.module, u.block, u.index): getattr(u, cost) for u in units}
    reachable = sum(cost_of[k] for k in _select(units, widths, cost, dict.fromkeys(cfg.modules, math.inf), cfg))
    if reachable < target:
        raise EdgevitError(f"prune: cannot remove {target / total[cost]:.0%} of {cost} "
                           f"(at most {reachable / total[cost]:.0%} with modules={cfg.modules}, min_heads, min_mlp_ratio)",
                           "lower the target or allow more modules")
    if cfg.method == "l1":  # the naive baseline: one global ranking over heads and channels
        return _select(units, widths, cost, {"all": target}, cfg), {"allocation": "global", "budget": target}
    if cfg.allocation == "cost_aware":
        # DIMAP scores are normalised per layer, so they compare across modules; dividing by
        # what removing the unit saves puts a head (many FLOPs) and a channel (few) on one scale.
        ranked = [Unit(u.module, u.block, u.index, u.score / getattr(u, cost), u.flops, u.params) for u in units]
        return _select(ranked, widths, cost, {"all": target}, cfg), {"allocation": "cost_aware", "budget": target}

    def removed_cost(p: float) -> tuple[set, float]:
        chosen = _select(units, widths, cost, {m: p * module_total[m] for m in cfg.modules}, cfg)
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
        check_passes_supported(adapter, [cfg])  # also done by the pipeline right after loading
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
        if "attention" in cfg.modules and not all(adapter.can_prune_heads(b) for b in adapter.blocks()):
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
        units = _units(adapter, blocks, cfg)
        removed, solve = _plan(units, _widths(adapter, blocks), cfg, total)
        units_by_key = {(u.module, u.block, u.index): u for u in units}
        per_block = []
        for b, ref in enumerate(blocks):
            heads, hidden = adapter.heads(ref), adapter.mlp_hidden(ref)
            keep_h = [h for h in range(heads) if ("attention", b, h) not in removed]
            keep_c = _round_channels(b, hidden, removed, units_by_key, cfg.channel_multiple)
            if len(keep_h) < heads:
                adapter.prune_heads(ref, keep_h)
            if len(keep_c) < hidden:
                adapter.prune_mlp(ref, keep_c)
            per_block.append({"name": ref.name, "heads": len(keep_h), "heads_before": heads,
                              "mlp_hidden": len(keep_c), "mlp_hidden_before": hidden})
        structure = {"family": adapter.family, "blocks": [{k: p[k] for k in ("name", "heads", "mlp_hidden")} for p in per_block]}
        return structure, {"per_block": per_block, "solver": solve}

    def _weight_level(self, adapter, cfg: PruneConfig):
        """The paper's unstructured DIMAP (module-wise thresholds) or 2:4 groups."""
        modules: dict[str, list[nn.Linear]] = {"qkv": [], "proj": [], "mlp": []}
        for ref in adapter.blocks():
            if "attention" in cfg.modules:
                # the layers reading the block input (qkv, or q/k/v) score together; proj on its own
                *inputs, proj = adapter.attention_linears(ref)
                modules["qkv"] += inputs
                modules["proj"].append(proj)
            if "mlp" in cfg.modules:
                modules["mlp"] += adapter.mlp_linears(ref)
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
        adapter = adapter_for(model)
        refs = {ref.name: ref for ref in adapter.blocks()}
        for spec in blocks:
            ref = refs[spec["name"]]
            if spec["heads"] < adapter.heads(ref):
                adapter.prune_heads(ref, list(range(spec["heads"])))
            if spec["mlp_hidden"] < adapter.mlp_hidden(ref):
                adapter.prune_mlp(ref, list(range(spec["mlp_hidden"])))
        return model


def _round_channels(b: int, hidden: int, removed: set, units: dict, multiple: int) -> list[int]:
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
        raise EdgevitError(f"2:4 sparsity needs input widths divisible by 4 (got {cols})",
                            "use structure: unstructured for this model, or exclude the layer")
    groups = scores.reshape(rows, cols // 4, 4)
    top = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.float32).scatter_(-1, top, 1.0)
    return mask.reshape(rows, cols)
