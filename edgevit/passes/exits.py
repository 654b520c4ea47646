"""`kind: exits` — LGViT early-exit heads on a frozen backbone, calibrated as a cascade.

1. Heads are attached after the chosen blocks (local-perception heads for shallow exits,
   global-aggregation heads for deep ones, or linear heads).
2. The frozen backbone runs once over a seeded subset of --train-data; the tokens at every
   exit, the final logits and pre-logits are cached (fp16, capped by ``cache_gb``), so the
   heads train in minutes: self-distillation (KL to the final classifier, optional feature
   loss) through the shared training loop.
3. Images held out from that subset (never --data, which measures the result) calibrate
   the exit rule per exit: the cheapest cascade whose top-1 stays within
   ``max_accuracy_drop`` points of the full model on those images.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgevit import progress
from edgevit.adapters import adapter_for, check_passes_supported
from edgevit.cascade import attach_exits, block_features, cascade_stages, stage_example_inputs
from edgevit.data import image_batches, label_map, load_images, scan_image_folder
from edgevit.errors import EdgevitError
from edgevit.flops import count_call_flops, count_flops
from edgevit.passes.base import ExportedArtifact, PassContext, PassRecord, register_pass
from edgevit.passes.exit_calibration import calibrate, confidence_scores, to_rule_units
from edgevit.passes.specs.exits import ExitsConfig, ExitTrainConfig  # noqa: F401  (the declaration; re-exported)
from edgevit.exit_heads import HeadSpec
from edgevit.training import train_loop


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


def _head_specs(model: nn.Module, blocks: list[int], cfg: ExitsConfig, input_size) -> list[HeadSpec]:
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
    folder = scan_image_folder(ctx.train_data, "--train-data")
    budget = int(cfg.cache_gb * 1e9 // per_image_bytes) - cfg.holdout_images  # the held-out cache counts too
    wanted = cfg.train.max_images or len(folder.samples)
    n_train = min(wanted, budget, len(folder.samples) - cfg.holdout_images)
    if n_train < cfg.train.batch_size:
        raise EdgevitError(f"--train-data {folder.root}: {len(folder.samples)} images leave {n_train} for head training "
                           f"after {cfg.holdout_images} held out", "give more images or lower holdout_images")
    picked = _draw(folder, n_train + cfg.holdout_images, ctx.seed, ctx.label_names)
    capped = budget < min(wanted, len(folder.samples) - cfg.holdout_images)
    notes = [f"training subset capped at {n_train} images by cache_gb={cfg.cache_gb}"] if capped else []
    return picked[cfg.holdout_images:], picked[:cfg.holdout_images], notes, str(folder.root)


def _draw(folder, n: int, seed: int, label_names) -> list[tuple[Any, int]]:
    """Seeded draw of training images, shuffled: the first ``holdout_images`` are held out."""
    picked = list(folder.subset(n, seed))
    random.Random(seed).shuffle(picked)
    mapping, _ = label_map(folder.classes, label_names)
    return [(p, mapping[y]) for p, y in picked]


def holdout_samples(record: dict[str, Any], train_data, label_names) -> list[tuple[Any, int]]:
    """The held-out images an exits record was calibrated on, drawn again from --train-data
    (same seed and counts), so thresholds can be re-calibrated on quantized stages."""
    h = record["structure"]["holdout"]
    folder = scan_image_folder(train_data, "--train-data")
    return _draw(folder, h["n_train"] + h["n_holdout"], h["seed"], label_names)[:h["n_holdout"]]


def cache_features(model: nn.Module, samples, blocks: list[int], ctx: PassContext, label: str) -> dict[str, Any]:
    """Frozen-backbone features of ``samples``: tokens per exit (fp16), final logits and
    pre-logits, labels."""
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
    return {"tokens": [torch.cat(t) for t in parts["tokens"]], **{k: torch.cat(parts[k]) for k in ("logits", "pre_logits", "labels")}}


def _train_heads(heads: nn.ModuleList, cache: dict[str, Any], cfg: ExitTrainConfig, seed: int) -> dict[str, Any]:
    n, t = len(cache["labels"]), cfg.temperature
    gen = torch.Generator().manual_seed(seed)

    def epoch_batches():
        order = torch.randperm(n, generator=gen)
        return [order[i:i + cfg.batch_size] for i in range(0, n - cfg.batch_size + 1, cfg.batch_size)]

    def batch_loss(index: torch.Tensor) -> torch.Tensor:
        target = F.log_softmax(cache["logits"][index] / t, -1)
        loss = torch.zeros(())
        for head, tokens in zip(heads, cache["tokens"]):
            logits, embedding = head(tokens[index].float())
            loss = loss + F.kl_div(F.log_softmax(logits / t, -1), target, log_target=True, reduction="batchmean") * t * t
            if cfg.feature_weight and embedding is not None:
                loss = loss + cfg.feature_weight * F.mse_loss(embedding, cache["pre_logits"][index].float())
        return loss

    heads.train()
    record = train_loop(list(heads.parameters()), epoch_batches, batch_loss, cfg, "training exit heads (self-distillation)")
    heads.eval()
    return record


def calibrate_exits(model: nn.Module, holdout: dict[str, Any], rule: str, max_drop_points: float,
                    input_size) -> tuple[list[float | None], dict[str, Any]]:
    """Thresholds (rule units) for a model with trained heads, from its cached held-out
    features, and what they give on those images (exit rates, top-1, expected FLOPs)."""
    with torch.no_grad():  # in chunks: a shallow head on a large grid (Swin at 224) would need GBs at once
        exit_logits = [torch.cat([head(c.float())[0] for c in t.split(256)]).numpy()
                       for head, t in zip(model.edgevit_exits, holdout["tokens"])]
    return thresholds_for(exit_logits, holdout["logits"].numpy(), holdout["labels"].numpy(), rule, max_drop_points,
                          _stage_flops(model, input_size), count_flops(model, input_size))


def thresholds_for(exit_logits: list[np.ndarray], final_logits: np.ndarray, labels: np.ndarray, rule: str,
                   max_drop_points: float, stage_flops: list[int], full_flops: int) -> tuple[list[float | None], dict[str, Any]]:
    """Thresholds (rule units) from every exit's logits on held-out images, and what they
    give there. Used on PyTorch outputs by the pass and on a runtime's outputs after quantization."""
    scores = np.stack([confidence_scores(z, rule) for z in exit_logits])
    correct = np.stack([z.argmax(-1) == labels for z in [*exit_logits, final_logits]])
    result = calibrate(scores, correct, np.cumsum(stage_flops).astype(np.float64), max_drop_points / 100.0)
    outcome = result["outcome"]
    return [to_rule_units(t, rule) for t in result["thresholds"]], {
        "holdout_images": len(labels), "holdout_top1_full": result["full_accuracy"],
        "holdout_top1_cascade": outcome.accuracy, "holdout_top1_per_exit": correct[:-1].mean(1).tolist(),
        "exit_rates": outcome.exit_rates, "threshold_search": result["search"],
        "flops_per_stage": list(stage_flops), "flops_full_model": full_flops, "expected_flops": outcome.expected_cost,
        "expected_flops_reduction": 1 - outcome.expected_cost / full_flops,
    }


def _stage_flops(model: nn.Module, input_size) -> list[int]:
    stages = cascade_stages(model)
    inputs = stage_example_inputs(stages, torch.zeros(1, *input_size))
    return [count_call_flops(stage, *x) for stage, x in zip(stages, inputs)]


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
        specs = _head_specs(model, blocks, cfg, ctx.input_size)
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
        training.update({"what": "exit heads only (backbone frozen)", "loss": f"self-distillation KL (T={cfg.train.temperature})"
                         + (f" + {cfg.train.feature_weight} x feature MSE" if cfg.train.feature_weight else ""),
                         "images_per_epoch": len(train_samples), "train_data": root, "seed": ctx.seed,
                         "feature_cache_mb": round(cache_mb, 1), "feature_cache_s": round(cache_s, 1),
                         "batch_size": cfg.train.batch_size, "lr": cfg.train.lr})

        thresholds, metrics = calibrate_exits(model, hold_cache, cfg.rule, cfg.max_accuracy_drop, ctx.input_size)
        self.holdout = hold_cache  # kept so a caller (the bench) can re-calibrate at other budgets without re-training
        structure = {"heads": [_spec_dict(s) for s in specs], "rule": cfg.rule, "thresholds": thresholds,
                     "holdout": {"seed": ctx.seed, "n_train": len(train_samples), "n_holdout": len(holdout_samples)}}
        metrics = {"exit_blocks_1based": [b + 1 for b in blocks], "head_kinds": [s.kind for s in specs], **metrics,
                   "head_params": sum(p.numel() for p in model.edgevit_exits.parameters())}
        notes += [f"thresholds calibrated on {len(holdout_samples)} images held out from --train-data; "
                  "expected FLOPs are an estimate from those images, latency is measured by the runner",
                  "heads are trained and calibrated on fp16-cached tokens and run on fp32 features when deployed"]
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(mode="json"), structure=structure, metrics=metrics,
                                 training=training, notes=notes)

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        specs = [HeadSpec(**{**h, "grid": tuple(h["grid"]) if h["grid"] else None}) for h in record.structure["heads"]]
        return attach_exits(model, specs)

    def after_export(self, record: dict[str, Any], artifact: ExportedArtifact) -> dict[str, Any] | None:
        """Thresholds of a quantized cascade re-calibrated on what the runtime really runs:
        the held-out images (drawn again from --train-data, read once per run) through the
        lowered stages on the target, same budget; bundle.json is rewritten with them."""
        if not artifact.quantized:
            return None
        if "exits_holdout" not in artifact.run_cache:
            samples = holdout_samples(record, artifact.train_data, artifact.label_names)
            artifact.run_cache["exits_holdout"] = (load_images(samples, artifact.data_config).numpy(),
                                                   np.array([y for _, y in samples]))
        images, labels = artifact.run_cache["exits_holdout"]
        bundle_dir = artifact.bundle_dir
        progress.step(f"re-calibrating the exit thresholds of {bundle_dir.name} on its quantized stages ({len(labels)} held-out images)")
        outputs = artifact.transport.run(bundle_dir, runs=0, warmup=0, threads=artifact.threads, batch=artifact.batch,
                                         inputs=images).outputs
        bundle = json.loads((bundle_dir / "bundle.json").read_text())
        stages = bundle["cascade"]["stages"]
        exit_logits = [outputs[s["name"]] for s in stages[:-1]]
        metrics = record["metrics"]
        thresholds, result = thresholds_for(exit_logits, outputs[stages[-1]["name"]], labels, record["structure"]["rule"],
                                            record["config"]["max_accuracy_drop"], metrics["flops_per_stage"],
                                            metrics["flops_full_model"])
        before = [s["threshold"] for s in stages[:-1]]
        for stage_entry, t in zip(stages, thresholds):
            stage_entry["threshold"] = t
        (bundle_dir / "bundle.json").write_text(json.dumps(bundle, indent=2, sort_keys=True) + "\n")
        return {"cascade_calibration": {"on": "the quantized stages in this runtime", "thresholds_from_pytorch": before,
                                        "thresholds": thresholds, **result}}


def _spec_dict(spec: HeadSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["grid"] = list(spec.grid) if spec.grid else None
    return d
