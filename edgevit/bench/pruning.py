"""Section `pruning`: DIMAP structural pruning vs the naive L1 baseline; real speed-ups."""
from __future__ import annotations

import copy
import json
from typing import Any

import torch

from edgevit.accuracy import measure_top1, torch_predictor
from edgevit.bench.context import FINETUNE, BenchContext, section
from edgevit.bench.variants import artifact_variants, time_variants
from edgevit.data import scan_image_folder
from edgevit.models import load_model
from edgevit.passes.base import PassContext
from edgevit.passes.prune import PruneConfig, PrunePass
from edgevit.pipeline import CompressOptions, compress

REFERENCE_MODELS = ["vit_tiny_c10", "swin_tiny_c10"]
LATENCY_MODELS = ["swin_tiny_patch4_window7_224", "deit_small_patch16_224"]
LEVELS = [0.3, 0.5]
METHODS = {"DIMAP (cost-aware)": {"method": "dimap"}, "L1, one global ranking": {"method": "l1"}}
LATENCY_RECIPE = """\
name: bench_prune
exports: [x86-onnxruntime, x86-openvino]
profile: {{runs: 5, warmup: 1}}
passes: {passes}
"""


def _accuracy_rows(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    test = scan_image_folder(ctx.shared / "data" / "cifar10" / "test")
    train = ctx.shared / "data" / "cifar10" / "train"
    rows = []
    for name in REFERENCE_MODELS:
        folder = ctx.shared / "models" / name
        if not folder.is_dir() or ctx.over_cap():
            notes.append(f"{name}: skipped ({'not found' if not folder.is_dir() else 'time cap'})")
            continue
        base = load_model(str(folder))
        cfg = base.data_config()

        def top1(model) -> float:
            return measure_top1({"m": torch_predictor(model)}, test, None, 0, cfg, 250, base.label_names)["top1"]["m"]

        baseline = top1(base.model)
        rows.append([name, "unpruned", "0 %", f"{baseline:.4f}", "-", "-", "-"])
        results[name] = {"baseline_top1": baseline, "runs": []}
        for label, kw in METHODS.items():
            for level in LEVELS:
                if ctx.over_cap():
                    notes.append(f"{name} {label} {level:.0%}: skipped (time cap)")
                    continue
                model = copy.deepcopy(base.model)
                pctx = PassContext(seed=0, input_size=base.input_size, data_config=cfg, label_names=base.label_names,
                                   teacher=base.model, train_data=train)
                pruned, record = PrunePass().apply(model, PruneConfig(flops_reduction=level, **kw), pctx)
                free = top1(pruned)
                tuned_model, tuned_record = PrunePass().apply(
                    copy.deepcopy(base.model), PruneConfig(flops_reduction=level, finetune=FINETUNE, **kw), pctx)
                tuned = top1(tuned_model)
                t = tuned_record.training
                rows.append([name, label, f"{record.metrics['flops_reduction']:.1%}", f"{free:.4f}", f"{tuned:.4f}",
                             f"{tuned - baseline:+.4f}", f"{t['epochs']:.2f} ep x {t['images_per_epoch']} img, {t['wall_s']:.0f} s"])
                results[name]["runs"].append({"method": label, "target": level, "metrics": record.metrics,
                                              "top1_training_free": free, "top1_finetuned": tuned, "training": t})
    return rows


def _latency_rows(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    rows = []
    for name in LATENCY_MODELS:
        if ctx.over_cap():
            notes.append(f"{name} latency: skipped (time cap)")
            continue
        runs = {}
        for label, passes in (("unpruned", "[]"), ("DIMAP -30% FLOPs", "[{kind: prune, flops_reduction: 0.3}]")):
            recipe = ctx.work / f"{label.split()[0]}.yaml"
            recipe.write_text(LATENCY_RECIPE.format(passes=passes))
            runs[label] = compress(CompressOptions(recipe=str(recipe), out=ctx.work / f"{name}-{label.split()[0]}", model=name, force=True))

        def build(threads: int) -> dict[str, Any]:
            fns = {}
            for label, run_dir in runs.items():
                fns |= artifact_variants(run_dir, threads, prefix=f"{label}|", eager=False)
            return fns

        timing = time_variants(build, rounds=5, per_round=4)
        reports = {label: json.loads((d / "report.json").read_text()) for label, d in runs.items()}
        for runtime in ("onnxruntime", "openvino"):
            base = timing[f"unpruned|{runtime}"]
            for label, rep in reports.items():
                t = timing[f"{label}|{runtime}"]
                rows.append([name, label, runtime, f"{rep['params']['after'] / 1e6:.2f} M", f"{rep['flops']['after'] / 1e9:.2f} G",
                             t["wall_2t"]["p50"], base["wall_2t"]["p50"] / t["wall_2t"]["p50"],
                             t["cpu_1t"]["p50"], base["cpu_1t"]["p50"] / t["cpu_1t"]["p50"]])
        results[name] = {"timing": timing, "flops": {k: r["flops"] for k, r in reports.items()},
                         "params": {k: r["params"] for k, r in reports.items()}}
    return rows


@section("pruning", "Structural DIMAP pruning vs naive L1 pruning",
         "Reference models (CIFAR-10 test, all 10,000 images): top-1 after removing 30 % / 50 % of the FLOPs as whole "
         "heads and MLP channels, training-free and after a short distillation fine-tune on CIFAR-10 train "
         f"({FINETUNE['max_images']} seeded images, lr {FINETUNE['lr']}, 2 threads). DIMAP ranks structure-level DIMAP "
         "scores per removed FLOP; the baseline ranks mean |w| globally. timm 224x224 models (random weights): the pruned "
         "export vs the unpruned export of the same runtime, batch 1, interleaved; speed-up = unpruned time / pruned time.",
         cap_s=2400)
def pruning_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    notes: list[str] = []
    tables = [{"title": "Top-1 after pruning (CIFAR-10 test, 10,000 images)",
               "header": ["model", "method", "FLOPs removed (counted)", "top-1 training-free", "top-1 fine-tuned",
                          "fine-tuned vs unpruned", "fine-tune"],
               "rows": _accuracy_rows(ctx, results, notes)},
              {"title": "Latency of the pruned export, batch 1",
               "header": ["model", "variant", "runtime", "params", "FLOPs", "p50 ms (2 thr)", "speed-up (2 thr)",
                          "CPU ms/inference (1 thr)", "speed-up (CPU)"],
               "rows": _latency_rows(ctx, results, notes)}]
    return {"tables": tables, "results": results, "notes": notes}
