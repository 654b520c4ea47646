"""`kind: exits` — LGViT early-exit heads on a frozen backbone, calibrated as a cascade.

1. Heads are attached after the chosen blocks (local-perception heads for shallow exits,
   global-aggregation heads for deep ones, or linear heads).
2. The frozen backbone runs once over a seeded subset of --train-data; the tokens at every
   exit, the final logits and pre-logits are cached (fp16, capped by ``cache_gb``), so the
   heads train in minutes: self-distillation (KL to the final classifier, optional feature
   loss; or ``loss: ce``, cross-entropy on the labels) through the shared training loop.
3. Images held out from that subset (never --data, which measures the result) calibrate
   the exit rule per exit: the cheapest cascade whose top-1, less ``calibration_margin``
   paired standard errors of its drop, stays within ``max_accuracy_drop`` points of the
   full model on those images. On --val-data images (``confirmation: auto``) the search
   and every choice (rule, exits, form on the target) use one half, and the other half
   confirms the thresholds of the cascade chosen (``exit_calibration``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgevit import progress
from edgevit.adapters import adapter_for, check_passes_supported
from edgevit.cascade import attach_exits, block_features, cascade_stages, exit_specs, keep_exits, stage_example_inputs
from edgevit.data import image_batches, label_map, load_images, require_same_classes, scan_image_folder
from edgevit.errors import EdgevitError
from edgevit.flops import count_call_flops, count_flops
from edgevit.passes.base import ExportedArtifact, PassContext, PassRecord, register_pass
from edgevit.report import speedup_text
from edgevit.artifacts import sha256_file
from edgevit.exporters.base import Bundle
from edgevit.exporters.cascade_forms import FORMS
from edgevit.exporters.cascade_graphs import publish_reference, set_cascade_thresholds
from edgevit.evaluation import check_outputs
from edgevit.passes.exit_calibration import (AccuracyBudget, calibrate, confidence_scores, confirm_exits, cumulative_costs, select_exits,
                                             to_rule_units)
from edgevit.passes.specs.exits import MARGIN_CONFIRMING, MARGIN_HELD_OUT_TRAIN, ExitsConfig, ExitTrainConfig  # noqa: F401  (the declaration; re-exported)
from edgevit.exit_heads import HeadSpec
from edgevit.training import train_loop

VAL_SOURCE = "--val-data"  # the held-out record's "source" when the thresholds were calibrated on the user's val images


def exit_blocks(depth: int, cfg: ExitsConfig) -> list[int]:
    """0-based blocks followed by an exit."""
    if cfg.after_blocks is not None:
        bad = [b for b in cfg.after_blocks if not 1 <= b < depth]
        if bad:
            raise EdgevitError(f"exits: after_blocks {bad} outside 1..{depth - 1}",
                               f"this model has {depth} blocks; the last one already ends in the classifier")
        return sorted({b - 1 for b in cfg.after_blocks})
    if depth < 2:
        raise EdgevitError(f"exits: this model has {depth} block(s); an exit needs a block after it", "use a deeper model")
    count = cfg.count or min(4, depth - 1)
    if count > depth - 1:
        raise EdgevitError(f"exits: count {count} > {depth - 1} possible exits", f"this model has {depth} blocks")
    return sorted({min(depth - 2, max(0, round(depth * (k + 1) / (count + 1)) - 1)) for k in range(count)})


def head_specs(model: nn.Module, blocks: list[int], cfg: ExitsConfig, input_size) -> list[HeadSpec]:
    adapter = adapter_for(model)
    refs = adapter.blocks()
    prefix = adapter.exit_prefix  # tokens in front of the patch grid (none on Swin's flattened grid)
    with torch.no_grad():
        tokens, _, pre_logits = block_features(model, torch.zeros(1, *input_size), blocks)
    specs = []
    for b, t in zip(blocks, tokens):
        h, w = adapter.token_grid(refs[b].stage)
        grid = (h, w) if t.shape[1] - prefix == h * w else None  # None: tokens were reduced before this exit
        kind = cfg.head
        if kind == "auto":
            kind = "local" if grid is not None and b < len(refs) / 2 else "global"
        if kind == "local" and grid is None:
            raise EdgevitError(f"exits: block {b + 1} follows token reduction, so there is no token grid for a local head",
                               "use head: global or linear (or auto)")
        specs.append(HeadSpec(kind, b, int(t.shape[-1]), grid, prefix,
                              int(pre_logits.shape[-1]), int(model.num_classes), tokens=int(t.shape[1])))
    return specs


def split_train_data(ctx: PassContext, cfg: ExitsConfig, per_image_bytes: int):
    """(head-training samples, calibration samples, notes, training folder): the calibration
    images are ``holdout_images`` held out of --train-data, or drawn from --val-data when
    given. Why --val-data: on images the backbone was trained on, its final prediction is
    almost always right, so every exit error counts as a loss and the thresholds come out
    stricter than the images the model will see need (vit_tiny_c10: -0.50 pt on held-out
    training images was -0.06 pt on the test set)."""
    folder = scan_image_folder(ctx.train_data, "--train-data")
    val = scan_image_folder(ctx.val_data, "--val-data") if ctx.val_data is not None else None
    if val is not None:
        require_same_classes(val, folder)
    n_hold = min(cfg.holdout_images, len(val.samples)) if val is not None else cfg.holdout_images
    held_from_train = 0 if val is not None else n_hold
    budget = int(cfg.cache_gb * 1e9 // per_image_bytes) - n_hold  # the held-out cache counts too
    wanted = cfg.train.max_images or len(folder.samples)
    n_train = min(wanted, budget, len(folder.samples) - held_from_train)
    if n_train < cfg.train.batch_size:
        raise EdgevitError(f"--train-data {folder.root}: {len(folder.samples)} images leave {n_train} for head training "
                           f"after {held_from_train} held out", "give more images or lower holdout_images")
    picked = _draw(folder, n_train + held_from_train, ctx.seed, ctx.label_names)
    capped = budget < min(wanted, len(folder.samples) - held_from_train)
    notes = [f"training subset capped at {n_train} images by cache_gb={cfg.cache_gb}"] if capped else []
    if val is None:
        return picked[n_hold:], picked[:n_hold], notes, str(folder.root)
    return picked, _draw(val, n_hold, ctx.seed, ctx.label_names), notes, str(folder.root)


def _draw(folder, n: int, seed: int, label_names) -> list[tuple[Any, int]]:
    """Seeded draw of training images, shuffled: the first ``holdout_images`` are held out."""
    picked = list(folder.subset(n, seed))
    random.Random(seed).shuffle(picked)
    mapping, _ = label_map(folder.classes, label_names)
    return [(p, mapping[y]) for p, y in picked]


def holdout_samples(record: dict[str, Any], train_data, label_names, val_data=None) -> list[tuple[Any, int]]:
    """The images an exits record was calibrated on, drawn again (same seed and counts) from
    --train-data, or from --val-data where the record says so, so thresholds can be
    re-calibrated on quantized stages and the cascade timed against its reference."""
    h = record["structure"]["holdout"]
    if h.get("source") == VAL_SOURCE:
        if val_data is None:
            raise EdgevitError("exits: the thresholds were calibrated on --val-data images", "pass the same --val-data DIR")
        return _draw(scan_image_folder(val_data, "--val-data"), h["n_holdout"], h["seed"], label_names)
    folder = scan_image_folder(train_data, "--train-data")
    return _draw(folder, h["n_train"] + h["n_holdout"], h["seed"], label_names)[:h["n_holdout"]]


def cache_features(model: nn.Module, samples, blocks: list[int], ctx: PassContext, label: str) -> dict[str, Any]:
    """Frozen-backbone features of ``samples``: tokens per exit (fp16) and the blocks they
    come from, final logits and pre-logits, labels."""
    parts: dict[str, list] = {"tokens": [[] for _ in blocks], "logits": [], "pre_logits": [], "labels": []}
    with progress.progress(label, len(samples)) as advance, torch.no_grad():
        for x, y in image_batches(samples, ctx.data_config, 64):
            tokens, logits, pre = block_features(model, x, blocks)
            for store, t in zip(parts["tokens"], tokens):
                store.append(t.half())
            parts["logits"].append(logits)
            parts["pre_logits"].append(pre.half())
            parts["labels"].append(y)
            advance(len(y))
    return {"tokens": [torch.cat(t) for t in parts["tokens"]], "blocks": list(blocks),
            **{k: torch.cat(parts[k]) for k in ("logits", "pre_logits", "labels")}}


def _train_heads(heads: nn.ModuleList, cache: dict[str, Any], cfg: ExitTrainConfig, seed: int) -> dict[str, Any]:
    n, t = len(cache["labels"]), cfg.temperature
    gen = torch.Generator().manual_seed(seed)

    def epoch_batches():
        order = torch.randperm(n, generator=gen)
        return [order[i:i + cfg.batch_size] for i in range(0, n - cfg.batch_size + 1, cfg.batch_size)]

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        target = F.log_softmax(cache["logits"][index] / t, -1)
        labels = cache["labels"][index]
        loss = torch.zeros(())
        for head, tokens in zip(heads, cache["tokens"]):
            logits, embedding = head(tokens[index].float())
            if cfg.loss == "ce":  # the labels, not the model: an exit then learns what the final classifier gets wrong too
                loss = loss + F.cross_entropy(logits, labels)
            else:
                loss = loss + F.kl_div(F.log_softmax(logits / t, -1), target, log_target=True, reduction="batchmean") * t * t
            if cfg.feature_weight and embedding is not None:
                loss = loss + cfg.feature_weight * F.mse_loss(embedding, cache["pre_logits"][index].float())
        return loss

    heads.train()
    record = train_loop(list(heads.parameters()), epoch_batches, batch_loss, cfg, "training exit heads (self-distillation)")
    heads.eval()
    return record


def head_loss(cfg: ExitTrainConfig) -> str:
    """What the heads were trained on, in words (the record and the report)."""
    loss = "cross-entropy on the labels" if cfg.loss == "ce" else f"self-distillation KL (T={cfg.temperature})"
    return loss + (f" + {cfg.feature_weight} x feature MSE" if cfg.feature_weight else "")


def holdout_exit_logits(model: nn.Module, holdout: dict[str, Any]) -> list[np.ndarray]:
    """Every attached head's logits on the cached held-out tokens of its block (the heads
    attached may be a subset of those cached: ``keep_exits``)."""
    tokens = [holdout["tokens"][holdout["blocks"].index(spec.block)] for spec in exit_specs(model)]
    with torch.no_grad():  # in chunks: a shallow head on a large grid (Swin at 224) would need GBs at once
        return [torch.cat([head(c.float())[0] for c in t.split(256)]).numpy()
                for head, t in zip(model.edgevit_exits, tokens)]


# rules ``auto`` chooses between, in order of preference on a tie. Neither wins everywhere:
# in the bench (2026-12-01) confidence (top softmax probability) was cheaper on swin_tiny_c10
# at every budget and on vit_tiny_c10 at 0.5 pt, entropy on vit_tiny_c10 at 0.25 and 1 pt,
# so the choice is made per model and budget on the held-out images.
EXIT_RULES = ("confidence", "entropy")


def accuracy_budget(cfg: ExitsConfig, source: str) -> AccuracyBudget:
    """The budget the thresholds are calibrated to, from the pass config (or its record) and
    where the calibration images come from: ``confirmation: auto`` confirms on a held-out
    half only on --val-data images (on training images the drop is already pessimistic:
    the backbone fits them, so a confirming half would only cost speed), and
    ``calibration_margin: auto`` keeps the larger reserve where a half confirms."""
    confirm = cfg.confirmation == "half" or (cfg.confirmation == "auto" and source == VAL_SOURCE)
    margin = cfg.calibration_margin
    if margin == "auto":
        margin = MARGIN_CONFIRMING if confirm else MARGIN_HELD_OUT_TRAIN
    return AccuracyBudget(cfg.max_accuracy_drop / 100.0, margin, confirm)


def calibrate_exits(model: nn.Module, holdout: dict[str, Any], rule: str, budget: AccuracyBudget,
                    input_size, costs: dict[str, list[float]]) -> tuple[list[int], list[float | None], dict[str, Any]]:
    """Which of the attached exits pay, and their thresholds (rule units), from the cached
    held-out features and the measured cost of each stage and head (``exit_costs``): the
    exits kept (indices into the attached heads), thresholds and what they give there
    (``metrics["rule"]``: the rule the thresholds are in; ``auto`` picks it here)."""
    exit_logits = holdout_exit_logits(model, holdout)
    labels = holdout["labels"].numpy()
    correct = np.stack([z.argmax(-1) == labels for z in [*exit_logits, holdout["logits"].numpy()]])
    stage_ms, head_ms = np.array(costs["stage_ms"]), np.array(costs["head_ms"])
    scores = {r: np.stack([confidence_scores(z, r) for z in exit_logits]) for r in (EXIT_RULES if rule == "auto" else (rule,))}
    by_rule = {r: select_exits(s, correct, stage_ms, head_ms, budget) for r, s in scores.items()}
    rule = min(by_rule, key=lambda r: by_rule[r]["outcome"].expected_cost)  # ties: the first of EXIT_RULES
    # the rule and the exits are chosen on the searching half alone; only then confirmed
    chosen = confirm_exits(scores[rule], correct, stage_ms, head_ms, by_rule[rule], budget)
    keep = chosen["keep"]
    outcome = chosen["outcome"]
    flops = _stage_flops(model, input_size, keep)
    thresholds = [to_rule_units(t, rule) for t in chosen["thresholds"]]
    return keep, thresholds, {
        "rule": rule, "expected_latency_ms_by_rule": {r: round(c["outcome"].expected_cost, 4) for r, c in by_rule.items()},
        **_outcome_metrics(chosen, len(labels), budget, flops, count_flops(model, input_size)),
        "holdout_top1_per_exit": correct[:-1].mean(1).tolist(),
        "exit_selection": {
            "kept": keep, "dropped": [e for e in range(len(head_ms)) if e not in keep],
            "removal_steps": [{"exits": s["exits"], "expected_ms": round(s["expected_cost"], 4)} for s in chosen["removal_steps"]],
            "min_saving": chosen["min_saving"],
            "how": "greedy removal on expected latency (torch CPU, 1 thread) at the exit rates calibrated on the held-out "
                   "images; an exit stays only if it saves at least min_saving (a share) of the full network's "
                   "latency; the exported cascade is measured on the target after export"},
        "cost_ms": costs, "expected_latency_ms": outcome.expected_cost, "full_latency_ms": chosen["full_cost"],
        "expected_speedup_estimate": chosen["full_cost"] / outcome.expected_cost,
    }


def _outcome_metrics(result: dict[str, Any], n: int, budget: AccuracyBudget, stage_flops: list[int],
                     full_flops: int) -> dict[str, Any]:
    """``result``: ``calibrate``'s; with a confirming half its top-1 figures are that half's."""
    outcome = result["outcome"]
    expected_flops = float(np.dot(outcome.exit_rates, np.cumsum(stage_flops)))
    return {"holdout_images": n, "holdout_top1_full": result["full_accuracy"], "holdout_top1_cascade": outcome.accuracy,
            "holdout_drop_se": outcome.drop_se, "calibration_margin_se": budget.margin_se,
            "threshold_confirmation": result.get("confirmation"),
            "exit_rates": outcome.exit_rates, "threshold_search": result["search"],
            "flops_per_stage": list(stage_flops), "flops_full_model": full_flops, "expected_flops": expected_flops,
            "expected_flops_reduction": 1 - expected_flops / full_flops}


def thresholds_for(exit_logits: list[np.ndarray], final_logits: np.ndarray, labels: np.ndarray, rule: str,
                   budget: AccuracyBudget, stage_ms: list[float], stage_flops: list[int],
                   full_flops: int) -> tuple[list[float | None], dict[str, Any]]:
    """Thresholds (rule units) for the deployed exits from their logits on held-out images,
    at the lowest expected latency (``stage_ms``: each stage with its head); used on a
    runtime's outputs after quantization."""
    scores = np.stack([confidence_scores(z, rule) for z in exit_logits])
    correct = np.stack([z.argmax(-1) == labels for z in [*exit_logits, final_logits]])
    result = calibrate(scores, correct, np.cumsum(stage_ms), budget)
    return [to_rule_units(t, rule) for t in result["thresholds"]], {
        **_outcome_metrics(result, len(labels), budget, stage_flops, full_flops),
        "holdout_top1_per_exit": correct[:-1].mean(1).tolist(), "expected_latency_ms": result["outcome"].expected_cost}


def _stage_flops(model: nn.Module, input_size, keep: list[int] | None = None) -> list[int]:
    """FLOPs of each stage (with its head) of the cascade made of the exits ``keep`` (all: None)."""
    specs = exit_specs(model)
    heads = list(model.edgevit_exits)
    try:
        if keep is not None:
            keep_exits(model, keep)
        stages = cascade_stages(model)
        inputs = stage_example_inputs(stages, torch.zeros(1, *input_size))
        return [count_call_flops(stage, *x) for stage, x in zip(stages, inputs)]
    finally:
        model.edgevit_exits, model.edgevit_exit_specs = nn.ModuleList(heads), specs


COST_BATCH = 16  # images per timed call: see exit_costs


def exit_costs(model: nn.Module, input_size, rounds: int = 5, calls: int = 2) -> dict[str, list[float]]:
    """Measured ms per image of each stage's blocks (between exits) and of each exit head,
    torch on this CPU, one thread, median over ``rounds`` interleaved rounds (load on a
    shared machine falls on all alike). Timed on batches of COST_BATCH: at batch 1 eager
    PyTorch pays a per-operator dispatch cost that compiled runtimes do not, which made
    the many small operators of a head look half as costly as a whole stage of blocks.
    An in-pass estimate; the exported cascade is measured on the target after export."""
    adapter = adapter_for(model)
    stages = cascade_stages(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            inputs = stage_example_inputs(stages, torch.randn(COST_BATCH, *input_size, generator=torch.Generator().manual_seed(0)))
            calls_of = [functools.partial(stage, *x) for stage, x in zip(stages, inputs)]
            for k, stage in enumerate(stages[:-1]):  # each head on the tokens its stage produced
                tokens = adapter.tokens(inputs[k + 1][0] if len(inputs[k + 1]) == 1 else tuple(inputs[k + 1]))
                calls_of.append(functools.partial(model.edgevit_exits[k], tokens))
            samples = [[] for _ in calls_of]
            for f in calls_of:  # warm-up
                f()
            for _ in range(rounds):
                for i, f in enumerate(calls_of):
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        f()
                    samples[i].append((time.perf_counter() - t0) * 1000.0 / (calls * COST_BATCH))
    finally:
        torch.set_num_threads(threads)
    ms = [float(np.median(s)) for s in samples]
    n = len(stages)
    heads = ms[n:]
    # a stage call runs its blocks then its head: the blocks cost what is left
    blocks = [max(ms[k] - (heads[k] if k < len(heads) else 0.0), 0.0) for k in range(n)]
    return {"stage_ms": [round(v, 4) for v in blocks], "head_ms": [round(v, 4) for v in heads],
            "measured": f"torch CPU, ms per image at batch {COST_BATCH}, 1 thread, median of interleaved rounds"}


@register_pass
class ExitsPass:
    kind = "exits"
    config_type = ExitsConfig
    requires: ClassVar[frozenset[str]] = frozenset({"train_data"})

    def apply(self, model: nn.Module, cfg: ExitsConfig, ctx: PassContext) -> tuple[nn.Module, PassRecord]:
        if ctx.train_data is None:
            raise EdgevitError("exits: the heads are trained on images", "pass --train-data DIR (class/xxx.jpg)")
        for p in model.parameters():
            p.requires_grad_(False)  # frozen backbone: only the heads learn
        adapter = adapter_for(model)
        check_passes_supported(adapter, [cfg])  # also done by the pipeline right after loading
        depth = len(adapter.blocks())
        blocks = exit_blocks(depth, cfg)
        specs = head_specs(model, blocks, cfg, ctx.input_size)
        torch.manual_seed(ctx.seed)
        attach_exits(model, specs)
        per_image = 2 * sum(s.tokens * s.dim for s in specs) + 2 * specs[0].embed_dim + 8 * model.num_classes  # fp16 cache
        train_samples, holdout_samples, notes, root = split_train_data(ctx, cfg, per_image)

        started = time.monotonic()
        train_cache = cache_features(model, train_samples, blocks, ctx, f"caching frozen features of {len(train_samples)} training images")
        hold_cache = cache_features(model, holdout_samples, blocks, ctx, f"caching features of {len(holdout_samples)} held-out images")
        cache_s = time.monotonic() - started
        cache_mb = sum(t.numel() * t.element_size() for t in [*train_cache["tokens"], train_cache["pre_logits"]]) / 1e6
        training = _train_heads(model.edgevit_exits, train_cache, cfg.train, ctx.seed)
        training.update({"what": "exit heads only (backbone frozen)", "loss": head_loss(cfg.train),
                         "images_per_epoch": len(train_samples), "train_data": root, "seed": ctx.seed,
                         "feature_cache_mb": round(cache_mb, 1), "feature_cache_s": round(cache_s, 1),
                         "batch_size": cfg.train.batch_size, "lr": cfg.train.lr})

        progress.step(f"timing the {len(specs) + 1} stages and {len(specs)} exit heads (torch CPU, 1 thread)")
        costs = exit_costs(model, ctx.input_size)
        # kept so a caller (the bench) can re-select and re-calibrate at other budgets without re-training
        self.holdout, self.costs, self.trained = hold_cache, costs, (list(model.edgevit_exits), list(specs))
        image_source = "--train-data" if ctx.val_data is None else VAL_SOURCE
        keep, thresholds, metrics = calibrate_exits(model, hold_cache, cfg.rule, accuracy_budget(cfg, image_source), ctx.input_size,
                                                    costs)
        keep_exits(model, keep)
        kept = [specs[k] for k in keep]
        dropped = [blocks[k] + 1 for k in range(len(specs)) if k not in keep]
        if dropped:
            notes.append(f"exits after blocks {dropped} dropped: at their calibrated exit rates none saved "
                         f"{metrics['exit_selection']['min_saving']:.0%} of the full network's latency "
                         f"(expected {metrics['expected_latency_ms']:.3f} ms vs {metrics['full_latency_ms']:.3f} ms without exits)")
        if not keep:
            progress.warn("exits: no exit pays for itself on this model at this budget; the model is exported without exits")
        structure = {"heads": [_spec_dict(s) for s in kept], "rule": metrics["rule"], "thresholds": thresholds,
                     "holdout": {"seed": ctx.seed, "n_train": len(train_samples), "n_holdout": len(holdout_samples),
                                 "source": image_source}}
        metrics = {"exit_blocks_1based": [s.block + 1 for s in kept], "head_kinds": [s.kind for s in kept],
                   "trained_exit_blocks_1based": [b + 1 for b in blocks], **metrics,  # holdout_top1_per_exit: every trained exit
                   "head_params": sum(p.numel() for p in model.edgevit_exits.parameters())}
        source = "held out from --train-data" if ctx.val_data is None else "drawn from --val-data"
        notes += [f"thresholds calibrated on {len(holdout_samples)} images {source}; "
                  "expected FLOPs are an estimate from those images, latency is measured by the runner",
                  "heads are trained and calibrated on fp16-cached tokens and run on fp32 features when deployed"]
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(mode="json"), structure=structure, metrics=metrics,
                                 training=training, notes=notes)

    @staticmethod
    @contextlib.contextmanager
    def export_form(model: nn.Module, form: str) -> Iterator[None]:
        """The form changes how the bundle is assembled (``cascade_graphs``), not how a stage traces."""
        yield

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        specs = [HeadSpec(**{**h, "grid": tuple(h["grid"]) if h["grid"] else None}) for h in record.structure["heads"]]
        return attach_exits(model, specs)

    def after_export(self, record: dict[str, Any], artifact: ExportedArtifact) -> dict[str, Any] | None:
        """On the exported cascade, as the runtime runs it, with the held-out images (drawn
        again from --train-data, read once per run): a quantized cascade's thresholds are
        re-calibrated on its stages first (bundle.json rewritten); then the cascade is run
        interleaved with the bundled reference (the same network without exits) and, if it
        is slower, the run says so and (``if_slower: fallback``) publishes the reference."""
        if not record["structure"]["heads"]:
            return None
        if "exits_holdout" not in artifact.run_cache:
            samples = holdout_samples(record, artifact.train_data, artifact.label_names, artifact.val_data)
            artifact.run_cache["exits_holdout"] = (load_images(samples, artifact.data_config).numpy(),
                                                   np.array([y for _, y in samples]))
        images, labels = artifact.run_cache["exits_holdout"]
        if artifact.cascade_forms is not None and artifact.batch == 1:
            return _choose_exits_on_target(record, artifact, images, labels)
        added = _recalibrate_on_runtime(record, artifact, images, labels) if artifact.quantized else {}
        return {**added, **_speed_gate(record, artifact, images, labels)}


GATE_IMAGES = 500  # held-out images the exported cascade is timed on against its reference
# the cascade ships only when its measured speed-up is above 1.0x by this many standard
# errors of the measurement (the runner's ``speedup_se``: the clock's noise and which of the
# gate's images happen to leave early). At 1.0 + 0 s.e. a cascade read as 1.02x on 500
# images shipped and ran 0.96x on 8000 test images (bench exits, swin_tiny_c10, OpenVINO).
GATE_MARGIN_SE = 2.0


def gate_passes(measured: dict[str, Any]) -> bool:
    """Whether a cascade measured against its reference is faster by more than the noise."""
    return measured["speedup_mean"] - GATE_MARGIN_SE * (measured.get("speedup_se") or 0.0) >= 1.0


def _runtime_logits(artifact: ExportedArtifact, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    return runtime_stage_logits(artifact.transport, artifact.bundle_dir, artifact.threads, artifact.batch, images)


def runtime_stage_logits(transport: Any, bundle_dir: Path, threads: int, batch: int,
                         images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Every exit's and the final classifier's logits on ``images``, as the runtime computes
    them through the bundle's stages as they are now (on the target)."""
    outputs = transport.run(bundle_dir, runs=0, warmup=0, threads=threads, batch=batch, inputs=images).outputs
    stages = json.loads((bundle_dir / "bundle.json").read_text())["cascade"]["stages"]
    return [outputs[s["name"]] for s in stages[:-1]], outputs[stages[-1]["name"]]


def _choose_exits_on_target(record: dict[str, Any], artifact: ExportedArtifact, images: np.ndarray,
                            labels: np.ndarray) -> dict[str, Any]:
    """The exits that pay in this runtime and the single-image form that runs them fastest
    (``exits_on_target``), thresholds calibrated on the runtime's own outputs, then the
    speed gate on the chosen cascade's measurement."""
    from edgevit.passes.exits_on_target import select_exits_on_target

    progress.step(f"choosing the exits of {artifact.bundle_dir.name} on the target ({len(labels)} held-out images)")
    exit_logits, final_logits = _runtime_logits(artifact, images)
    n = min(len(labels), GATE_IMAGES)
    metrics = record["metrics"]
    check = chain_check(lambda x: _runtime_logits(artifact, x), images, exit_logits, final_logits)
    selection = select_exits_on_target(
        artifact.bundle_dir, artifact.cascade_forms, lambda: _time_cascade(artifact, images[:n], labels[:n]), check,
        exit_logits, final_logits, labels, record["structure"]["rule"], _record_budget(record),
        deployed_cumulative_costs(metrics))
    chosen = selection["chosen"]
    blocks = metrics["exit_blocks_1based"]
    summary = {**{k: v for k, v in selection.items() if k not in ("chosen", "tried")},
               "kept_blocks_1based": [blocks[e] for e in chosen["exits"]],
               "dropped_blocks_1based": [b for e, b in enumerate(blocks) if e not in chosen["exits"]],
               "timed_on": f"{n} images {_held_out_from(record)}",
               "form": chosen["form"], "form_meaning": FORMS[chosen["form"]], "thresholds": chosen["thresholds"],
               "form_when_chosen": chosen["form_when_chosen"], "speedup_when_chosen": chosen["speedup_when_chosen"],
               "speedup_afresh": chosen["speedup_mean"],
               "chain_check": chosen["chain_check"],
               "tried": [{"blocks_1based": [blocks[e] for e in t["exits"]], "speedup_mean": t["speedup_mean"],
                          "form": t["form"], "speedup_by_form": t["speedup_by_form"],
                          "holdout_drop_points": round((t["holdout_top1"] - t["holdout_top1_full"]) * 100, 3),
                          "holdout_drop_on": "the searching half" if chosen["confirmation"] else "the held-out images",
                          "holdout_exit_rates": t["holdout_exit_rates"]} for t in selection["tried"]],
               "calibrated_on": "the runtime's outputs of the bundle's stages" if artifact.quantized else
                                "the runtime's outputs of the bundle's stages (fp32: as PyTorch's within the check)"}
    if summary["dropped_blocks_1based"]:
        progress.step(f"{artifact.bundle_dir.name}: exits after blocks {summary['dropped_blocks_1based']} left out of the "
                      "cascade: they did not pay in this runtime")
    progress.step(f"{artifact.bundle_dir.name}: single images run as {FORMS[chosen['form']]}")
    calibration = {"on": summary["calibrated_on"], "thresholds_from_pytorch": record["structure"]["thresholds"],
                   "thresholds": chosen["thresholds"], "holdout_images": len(labels), "exits": chosen["exits"],
                   "holdout_top1_full": chosen["holdout_top1_full"], "holdout_top1_cascade": chosen["holdout_top1"],
                   "exit_rates": chosen["holdout_exit_rates"], "threshold_confirmation": chosen["confirmation"]}
    # the rewritten cascade has no head for a left-out exit (and the chained form other
    # files): the deployed size and the model file changed
    bundle = Bundle(artifact.bundle_dir, json.loads((artifact.bundle_dir / "bundle.json").read_text()))
    return {"exit_selection_on_target": summary, "cascade_calibration": calibration, "size_bytes": bundle.size_bytes,
            "sha256": sha256_file(artifact.bundle_dir / bundle.data["model_file"]),
            **_speed_gate(record, artifact, images, labels, measured=chosen["measured"])}


CHAIN_CHECK_IMAGES = 64  # held-out images a chained form's outputs are compared on with the exported stages'


def chain_check(run_stages: Callable[[np.ndarray], tuple[list[np.ndarray], np.ndarray]], images: np.ndarray,
                exit_logits: list[np.ndarray], final_logits: np.ndarray) -> Callable[[Sequence[int]], dict[str, Any]]:
    """``check(exits)``: the bundle as it is now (chained stages with those exits), run by
    ``run_stages`` on the first held-out images, against what the exported stages (checked
    against PyTorch) computed there: the same graphs merged, so the fp32 row of the check
    table (the same function) applies at every precision."""
    n = min(len(images), CHAIN_CHECK_IMAGES)

    def check(exits: Sequence[int]) -> dict[str, Any]:
        chained_exits, chained_final = run_stages(images[:n])
        reference = np.concatenate([*(exit_logits[e][:n] for e in exits), final_logits[:n]])
        record = check_outputs(reference, np.concatenate([*chained_exits, chained_final]), "fp32")
        return {**record, "against": f"the exported stages' outputs on {n} held-out images (exits and final logits)"}
    return check


def deployed_cumulative_costs(metrics: dict[str, Any]):
    """``exits`` (indices of the deployed exits) -> the pass's estimated cost of leaving at
    each of them and of the final classifier, when only those are in the cascade."""
    costs, kept = metrics["cost_ms"], metrics["exit_selection"]["kept"]
    stage_ms, head_ms = np.array(costs["stage_ms"]), np.array(costs["head_ms"])
    return lambda exits: cumulative_costs(stage_ms, head_ms, [kept[e] for e in exits])


def _recalibrate_on_runtime(record: dict[str, Any], artifact: ExportedArtifact, images: np.ndarray,
                            labels: np.ndarray) -> dict[str, Any]:
    """Thresholds of a quantized cascade re-calibrated on what the runtime really runs: the
    held-out images through the lowered stages on the target, same budget and stage costs."""
    bundle_dir = artifact.bundle_dir
    progress.step(f"re-calibrating the exit thresholds of {bundle_dir.name} on its quantized stages ({len(labels)} held-out images)")
    exit_logits, final_logits = _runtime_logits(artifact, images)
    metrics = record["metrics"]
    thresholds, result = thresholds_for(exit_logits, final_logits, labels, record["structure"]["rule"],
                                        _record_budget(record), _deployed_stage_ms(metrics),
                                        metrics["flops_per_stage"], metrics["flops_full_model"])
    before = set_cascade_thresholds(bundle_dir, thresholds)
    return {"cascade_calibration": {"on": "the quantized stages in this runtime", "thresholds_from_pytorch": before,
                                    "thresholds": thresholds, **result}}


def _held_out_from(record: dict[str, Any]) -> str:
    """Where the images the cascade is timed and gated on come from, for the report."""
    return "from --val-data" if record["structure"]["holdout"]["source"] == VAL_SOURCE else "held out of --train-data"


def _record_budget(record: dict[str, Any]) -> AccuracyBudget:
    return accuracy_budget(ExitsConfig(**record["config"]), record["structure"]["holdout"]["source"])


def _deployed_stage_ms(metrics: dict[str, Any]) -> list[float]:
    """ms of each deployed stage with its head (from the pass's measured costs)."""
    cumulative = deployed_cumulative_costs(metrics)(list(range(len(metrics["exit_selection"]["kept"]))))
    return np.diff(cumulative, prepend=0.0).tolist()


def _time_cascade(artifact: ExportedArtifact, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The device runner's run of the bundle as a cascade, interleaved with its reference."""
    return artifact.transport.run(artifact.bundle_dir, runs=0, warmup=0, threads=artifact.threads, batch=artifact.batch,
                                  eval_set={"images": images, "labels": labels}).data["cascade"]


def _speed_gate(record: dict[str, Any], artifact: ExportedArtifact, images: np.ndarray, labels: np.ndarray,
                measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """``measured``: the bundle as it is already timed (by the exit choice on the target)."""
    bundle_dir = artifact.bundle_dir
    n = min(len(labels), GATE_IMAGES)
    if measured is None:
        progress.step(f"timing the cascade {bundle_dir.name} against the same network without exits ({n} held-out images, "
                      f"batch {artifact.batch}, interleaved)")
        measured = _time_cascade(artifact, images[:n], labels[:n])
    speedup, se = measured["speedup_mean"], measured.get("speedup_se")
    gate = {"on": f"{n} images {_held_out_from(record)}, batch {artifact.batch}, {artifact.threads} thread(s), "
                  "interleaved batch by batch with the bundled reference",
            "speedup_mean": speedup, "speedup_se": se, "margin_se": GATE_MARGIN_SE,
            "rule": f"the cascade ships if its speed-up minus {GATE_MARGIN_SE:g} standard errors is >= 1.0x",
            "speedup_measured_as": measured.get("speedup_measured_as", "wall time"),
            "speedup_p50": measured["speedup_p50"],
            "mean_ms": measured["latency"]["mean_ms"], "full_model_mean_ms": measured["full_model_latency"]["mean_ms"],
            "cpu_time_ms": measured["latency"].get("cpu_time_ms"),
            "full_model_cpu_time_ms": measured["full_model_latency"].get("cpu_time_ms"),
            "exit_rates": measured["exit_rates"], "accuracy": measured["accuracy"],
            "full_model_accuracy": measured["full_model_accuracy"],
            "stage_mean_ms": [s.get("mean_ms") for s in measured["stage_latency"]]}
    if gate_passes(measured):
        return {"cascade_gate": {**gate, "published": "cascade"}}
    policy = record["config"].get("if_slower", "fallback")
    warning = (f"{bundle_dir.name}: the exported cascade is not measurably faster than the same network without exits "
               f"({speedup_text(measured)} mean latency on {n} held-out images; it ships when faster by more than "
               f"{GATE_MARGIN_SE:g} standard errors); "
               + ("published anyway (exits: if_slower: keep)" if policy == "keep"
                  else "published the network without exits instead (exits: if_slower: fallback)"))
    progress.warn(warning)
    if policy == "keep":
        return {"cascade_gate": {**gate, "published": "cascade"}, "warnings": [warning]}
    bundle = publish_reference(bundle_dir)
    return {"cascade_gate": {**gate, "published": "reference (the network without exits)"}, "warnings": [warning],
            "sha256": sha256_file(bundle_dir / bundle.data["model_file"]), "size_bytes": bundle.size_bytes}


def _spec_dict(spec: HeadSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["grid"] = list(spec.grid) if spec.grid else None
    return d
