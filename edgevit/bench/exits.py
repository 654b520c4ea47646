"""Section `exits`: LGViT early-exit cascades on the reference models, measured in ONNX Runtime.

Per model the heads are trained once (frozen backbone, cached features), then the
thresholds are calibrated at three accuracy budgets on images held out from CIFAR-10
train. Each cascade is exported and run by the device runner over CIFAR-10 test images,
one image at a time, interleaved image by image with the same network without exits:
accuracy, exit histogram, mean and p90 latency of both, measured side by side.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from edgevit.bench.context import BenchContext, section
from edgevit.data import label_map, load_images, scan_image_folder
from edgevit.cascade import keep_exits
from edgevit.exporters.base import ExportContext, LoweringPlan, load_profile
from edgevit.exporters.onnx import OnnxExporter
from edgevit.models import load_model
from edgevit.passes.base import PassContext
from edgevit.passes.exits import ExitsConfig, ExitsPass, calibrate_exits
from edgevit.profiling import LocalTransport

MODELS = ["vit_tiny_c10", "swin_tiny_c10"]
BUDGETS = [0.25, 0.5, 1.0]  # top-1 points the cascade may lose on the held-out images
TEST_IMAGES = 5000
THREADS = 1  # one image at a time on one thread: the least noisy latency this shared machine gives
EXITS = {"count": 4, "rule": "entropy", "holdout_images": 2000,
         "train": {"epochs": 10, "lr": 1e-3, "batch_size": 128, "max_images": 20000, "max_minutes": 6}}


def _model_rows(ctx: BenchContext, name: str, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    folder = ctx.shared / "models" / name
    if not folder.is_dir():
        notes.append(f"{name} not found: skipped")
        return []
    base = load_model(str(folder))
    cfg = base.data_config()
    pctx = PassContext(seed=0, input_size=base.input_size, data_config=cfg, label_names=base.label_names,
                       train_data=ctx.shared / "data" / "cifar10" / "train")
    exits_pass = ExitsPass()
    model, record = exits_pass.apply(copy.deepcopy(base.model), ExitsConfig(**EXITS), pctx)
    t = record.training
    test = scan_image_folder(ctx.shared / "data" / "cifar10" / "test")
    samples = test.subset(TEST_IMAGES, 0)
    mapping, _ = label_map(test.classes, base.label_names)
    eval_set = {"images": load_images(samples, cfg).numpy(), "labels": np.array([mapping[y] for _, y in samples])}
    export_ctx = ExportContext(example_input=torch.from_numpy(eval_set["images"][:2]))
    rows, runs = [], []
    for budget in BUDGETS:
        if ctx.over_cap():
            notes.append(f"{name} budget {budget}: skipped (time cap)")
            continue
        # every trained head back, then the exits that pay at this budget (re-selected per budget)
        heads, specs = exits_pass.trained
        model.edgevit_exits, model.edgevit_exit_specs = torch.nn.ModuleList(heads), list(specs)
        keep, thresholds, metrics = calibrate_exits(model, exits_pass.holdout, EXITS["rule"], budget, base.input_size,
                                                    exits_pass.costs)
        keep_exits(model, keep)
        if not keep:
            notes.append(f"{name} budget {budget}: no exit pays; nothing to run as a cascade")
            continue
        plan = LoweringPlan(cascade={"rule": EXITS["rule"], "thresholds": thresholds},
                            pass_records=[{"kind": "exits", "structure": {}}])  # the profile's export form (if_graph)
        bundle = OnnxExporter().export(model, plan, load_profile("x86-onnxruntime"), export_ctx, ctx.work / f"{name}-{budget}")
        measured = LocalTransport().run(bundle.path, runs=0, warmup=0, threads=THREADS, batch=1, eval_set=eval_set).data["cascade"]
        lat, full = measured["latency"], measured["full_model_latency"]
        rows.append([name, f"{budget:g} pt", f"{(metrics['holdout_top1_cascade'] - metrics['holdout_top1_full']) * 100:+.2f}",
                     f"{measured['accuracy']:.4f}", f"{measured['full_model_accuracy']:.4f}",
                     f"{(measured['accuracy'] - measured['full_model_accuracy']) * 100:+.2f}",
                     "blocks " + ",".join(str(specs[k].block + 1) for k in keep) + ": "
                     + " / ".join(f"{r:.0%}" for r in measured["exit_rates"]),
                     f"{lat['mean_ms']:.2f}", f"{lat['p90_ms']:.2f}", f"{full['mean_ms']:.2f}", f"{full['p90_ms']:.2f}",
                     f"{measured['speedup_mean']:.2f}x", f"{metrics['expected_flops_reduction']:.1%}"])
        runs.append({"budget_points": budget, "exits_kept": keep, "thresholds": thresholds, "calibration": metrics,
                     "measured": measured})
    results[name] = {"exit_blocks_1based": record.metrics["exit_blocks_1based"], "head_kinds": record.metrics["head_kinds"],
                     "head_params": record.metrics["head_params"], "training": t, "runs": runs}
    notes.append(f"{name}: exits after blocks {record.metrics['exit_blocks_1based']} ({', '.join(record.metrics['head_kinds'])} heads, "
                 f"{record.metrics['head_params'] / 1e6:.2f} M params); feature cache {t['feature_cache_mb']:.0f} MB built in "
                 f"{t['feature_cache_s']:.0f} s; head training {t['epochs']:.1f} epochs x {t['images_per_epoch']} images in "
                 f"{t['wall_s']:.0f} s (stopped by {t['stopped_by']}); per-exit top-1 on the held-out images "
                 + ", ".join(f"{a:.3f}" for a in record.metrics["holdout_top1_per_exit"]))
    return rows


@section("exits", "Early exits: LGViT cascades in ONNX Runtime",
         f"Reference models, exit heads trained on a frozen backbone (self-distillation on {EXITS['train']['max_images']} "
         f"seeded CIFAR-10 train images, {EXITS['train']['epochs']} epochs), thresholds ({EXITS['rule']} rule) calibrated on "
         f"{EXITS['holdout_images']} other train images for three top-1 budgets, then the exported cascade run by the device "
         f"runner on {TEST_IMAGES} CIFAR-10 test images at batch 1, {THREADS} thread, image by image interleaved with the "
         "same network without exits (its ONNX export). Speed-up = full-model mean / cascade mean latency, measured.",
         cap_s=1500)
def exits_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    notes: list[str] = []
    rows = []
    for name in MODELS:
        if ctx.over_cap():
            notes.append(f"{name}: skipped (time cap)")
            continue
        rows += _model_rows(ctx, name, results, notes)
    tables = [{"title": f"Cascade vs full model, ONNX Runtime, batch 1, {THREADS} thread ({TEST_IMAGES} CIFAR-10 test images)",
               "header": ["model", "budget", "held-out drop (pt)", "top-1 cascade", "top-1 full", "drop (pt)",
                          "exits taken (per exit, last = final)", "mean ms", "p90 ms", "full mean ms", "full p90 ms",
                          "speed-up (mean)", "FLOPs saved (held-out estimate)"],
               "rows": rows}]
    return {"tables": tables, "results": results, "notes": notes}
