"""Section `tokens`: EViT and ToMe — accuracy on the reference ViT, speed on DeiT at 224."""
from __future__ import annotations

import copy
import json
from typing import Any

import torch

from edgevit.accuracy import measure_top1, torch_predictor
from edgevit.bench.context import FINETUNE, BenchContext, section
from edgevit.bench.timing import interleaved, summary
from edgevit.bench.variants import artifact_variants
from edgevit.data import scan_image_folder
from edgevit.models import load_model
from edgevit.passes.base import PassContext
from edgevit.passes.tokens import EvitPass, TomePass
from edgevit.pipeline import CompressOptions, compress

STRENGTHS = [
    ("EViT keep 0.9", EvitPass, {"keep_rate": 0.9}), ("EViT keep 0.7", EvitPass, {"keep_rate": 0.7}),
    ("EViT keep 0.5", EvitPass, {"keep_rate": 0.5}),
    ("ToMe -25% FLOPs", TomePass, {"flops_reduction": 0.25}), ("ToMe -40% FLOPs", TomePass, {"flops_reduction": 0.40}),
    ("ToMe -55% FLOPs", TomePass, {"flops_reduction": 0.55}),
    # a few large merges at EViT's three locations: less token glue at batch 1 (stack_deit's form)
    ("ToMe -40% FLOPs, EViT's blocks", TomePass, {"flops_reduction": 0.40, "blocks": "evit"}),
]
LATENCY_MODELS = ["deit_tiny_patch16_224", "deit_small_patch16_224"]
LATENCY_VARIANTS = {"unpatched": "[]", "EViT keep 0.7": "[{kind: evit, keep_rate: 0.7}]",
                    "ToMe -40% FLOPs": "[{kind: tome, flops_reduction: 0.4}]",
                    "ToMe -40% FLOPs, EViT's blocks": "[{kind: tome, flops_reduction: 0.4, blocks: evit}]"}
RECIPE = "name: bench_tokens\nexports: [x86-onnxruntime, x86-openvino]\nevaluation: {{check_batch: 2}}\nprofile: {{runs: 3, warmup: 1}}\npasses: {passes}\n"


def _accuracy(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    folder = ctx.shared / "models" / "vit_tiny_c10"
    if not folder.is_dir():
        notes.append("vit_tiny_c10 not found: accuracy rows skipped")
        return []
    test = scan_image_folder(ctx.shared / "data" / "cifar10" / "test")
    base = load_model(str(folder))
    cfg = base.data_config()

    def top1(model) -> float:
        return measure_top1({"m": torch_predictor(model)}, test, None, 0, cfg, 250, base.label_names)["top1"]["m"]

    baseline = top1(base.model)
    rows = [["vit_tiny_c10", "baseline", "0 %", f"{baseline:.4f}", "-", "-", "-"]]
    results["vit_tiny_c10"] = {"baseline_top1": baseline, "runs": []}
    for label, pass_cls, kw in STRENGTHS:
        if ctx.over_cap():
            notes.append(f"{label}: skipped (time cap)")
            continue
        pctx = PassContext(seed=0, input_size=base.input_size, data_config=cfg, label_names=base.label_names,
                           teacher=base.model, train_data=ctx.shared / "data" / "cifar10" / "train")
        free_model, record = pass_cls().apply(copy.deepcopy(base.model), pass_cls.config_type(**kw), pctx)
        free = top1(free_model)
        tuned_model, tuned_record = pass_cls().apply(copy.deepcopy(base.model), pass_cls.config_type(**kw, finetune=FINETUNE), pctx)
        tuned = top1(tuned_model)
        t = tuned_record.training
        rows.append(["vit_tiny_c10", label, f"{record.metrics['flops_reduction']:.1%}", f"{free:.4f}", f"{tuned:.4f}",
                     f"{tuned - baseline:+.4f}", f"{t['epochs']:.2f} ep x {t['images_per_epoch']} img, {t['wall_s']:.0f} s"])
        results["vit_tiny_c10"]["runs"].append({"variant": label, "metrics": record.metrics, "top1_training_free": free,
                                                "top1_finetuned": tuned, "training": t})
    return rows


def _latency(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    rows = []
    for name in LATENCY_MODELS:
        if ctx.over_cap():
            notes.append(f"{name} latency: skipped (time cap)")
            continue
        runs = {}
        for label, passes in LATENCY_VARIANTS.items():
            recipe = ctx.work / "recipe.yaml"
            recipe.write_text(RECIPE.format(passes=passes))
            slug = "".join(c if c.isalnum() else "_" for c in label)
            runs[label] = compress(CompressOptions(recipe=str(recipe), out=ctx.work / f"{name}-{slug}", model=name, force=True))
        timing = {}
        for batch in (1, 8):
            torch.set_num_threads(2)
            fns = {}
            for label, run_dir in runs.items():
                fns |= artifact_variants(run_dir, 2, prefix=f"{label}|", eager=False, batch=batch)
            samples = interleaved(fns, rounds=5, per_round=4 if batch == 1 else 2)
            timing[batch] = {k: summary(v.wall_ms) for k, v in samples.items()}
        reports = {label: json.loads((d / "report.json").read_text()) for label, d in runs.items()}
        for runtime in ("onnxruntime", "openvino"):
            for label, rep in reports.items():
                row = [name, label, runtime, f"{rep['flops']['after'] / 1e9:.2f} G", f"{1 - rep['flops']['after'] / rep['flops']['before']:.1%}"]
                for batch in (1, 8):
                    t, base = timing[batch][f"{label}|{runtime}"], timing[batch][f"unpatched|{runtime}"]
                    row += [t["p50"], base["p50"] / t["p50"]]
                rows.append(row)
        results[name] = {"timing": {str(b): t for b, t in timing.items()},
                         "tokens_per_block": {k: (r["passes"][0]["metrics"]["tokens_per_block"] if r["passes"] else None) for k, r in reports.items()}}
    return rows


@section("tokens", "Token reduction: EViT and ToMe",
         "vit_tiny_c10 (6 blocks, 65 tokens; CIFAR-10 test, all 10,000 images): top-1 at three strengths per method, "
         f"training-free and after a short distillation fine-tune on CIFAR-10 train ({FINETUNE['max_images']} seeded images, "
         f"lr {FINETUNE['lr']}, 2 threads). DeiT at 224x224 (random weights): the patched export vs the unpatched export of "
         "the same runtime, wall-clock p50 at 2 threads, batch 1 and 8, interleaved; speed-up = unpatched / patched.",
         cap_s=2400)
def tokens_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    notes: list[str] = []
    tables = [{"title": "Top-1 of vit_tiny_c10 with token reduction (CIFAR-10 test, 10,000 images)",
               "header": ["model", "variant", "FLOPs removed (counted)", "top-1 training-free", "top-1 fine-tuned",
                          "fine-tuned vs baseline", "fine-tune"],
               "rows": _accuracy(ctx, results, notes)},
              {"title": "Latency of the token-reduced export (2 threads)",
               "header": ["model", "variant", "runtime", "FLOPs", "FLOPs removed", "p50 ms batch 1", "speed-up batch 1",
                          "p50 ms batch 8", "speed-up batch 8"],
               "rows": _latency(ctx, results, notes)}]
    return {"tables": tables, "results": results, "notes": notes}
