"""Section `swin_tokens`: swin_merge (merge -> MLP -> unmerge on Swin's token grid) —
top-1 training-free on swin_tiny_c10, speed of Swin-T 224 exports vs the unpatched ones."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from edgevit.accuracy import measure_top1, torch_predictor
from edgevit.bench.context import FINETUNE, BenchContext, section
from edgevit.bench.variants import RUNTIMES, artifact_variants, time_variants
from edgevit.data import scan_image_folder
from edgevit.models import load_model
from edgevit.passes.base import PassContext
from edgevit.passes.swin_merge import SwinMergeConfig, SwinMergePass
from edgevit.pipeline import CompressOptions, compress

# label -> swin_merge config; the unpatched model is always the reference. Stages are
# explicit: swin_tiny_c10's last grid (2x2) divides by the stride where Swin-T 224's (7x7)
# does not, and both should merge in the same stages
STRENGTHS: dict[str, dict[str, Any]] = {
    "stages 1-3, ratio 0.25": {"ratio": 0.25, "stages": [1, 2, 3]},
    "stage 3, ratio 0.25, grid match": {"ratio": 0.25, "stages": [3], "match": "grid"},
    "stage 3, ratio 0.5, grid match": {"ratio": 0.5, "stages": [3], "match": "grid"},
    "stage 3, ratio 0.75": {"ratio": 0.75, "stages": [3]},
}
LATENCY_MODEL, LATENCY_ARGS = "swin_tiny_patch4_window7_224", {}
# all 10000 test images: on a 2000-image subset the paired standard error of a change is
# about 0.5 pt, as large as the 0.5-pt budget (stage 3 ratio 0.5 read -0.70 pt there, -1.89 on all)
ACCURACY_FOLDER, ACCURACY_N, ACCURACY_SEED = "swin_tiny_c10", None, 0
# the tokens section's short fine-tune (distillation from the unpatched model), capped in wall time
SWIN_FINETUNE = {**FINETUNE, "max_minutes": 5}
RECIPE = ("name: bench_swin_tokens\nexports: [x86-onnxruntime, x86-openvino]\nevaluation: {{check_batch: 2}}\n"
          "profile: {{runs: 3, warmup: 1, baseline: false}}\nmodel: {{model_args: {args}}}\npasses: {passes}\n")


def _passes(cfg: dict[str, Any] | None) -> str:
    return "[]" if cfg is None else json.dumps([{"kind": "swin_merge", **cfg}])


def accuracy_rows(folder: Path, data: Path, strengths: dict[str, dict[str, Any]], n: int | None, seed: int,
                  results: dict[str, Any], train: Path | None = None, finetune: dict[str, Any] | None = None) -> list[list[Any]]:
    """Top-1 of each strength training-free and, with ``train`` and ``finetune``, after the
    fine-tune (distilled from the unpatched model), all on the same images."""
    test = scan_image_folder(data)
    base = load_model(str(folder))
    cfg = base.data_config()
    pctx = PassContext(seed=0, input_size=base.input_size, data_config=cfg, label_names=base.label_names,
                       teacher=base.model, train_data=train)
    predictors = {"unpatched": torch_predictor(base.model)}
    records, training = {}, {}
    for label, kw in strengths.items():
        model, records[label] = SwinMergePass().apply(copy.deepcopy(base.model), SwinMergeConfig(**kw), pctx)
        predictors[label] = torch_predictor(model)
        if train is not None and finetune is not None:
            tuned, record = SwinMergePass().apply(copy.deepcopy(base.model), SwinMergeConfig(**kw, finetune=finetune), pctx)
            predictors[f"{label}|fine-tuned"], training[label] = torch_predictor(tuned), record.training
    # one pass over the images for every variant: the same decoded batches, no rerun spread
    measured = measure_top1(predictors, test, n, seed, cfg, 50, base.label_names)
    top1, se = measured["top1"], measured["change_se"]

    def change(name: str) -> str:
        return f"{100 * (top1[name] - top1['unpatched']):+.2f} +- {100 * se[name]:.2f}"

    rows = [[folder.name, "unpatched", "0.0 %", f"{top1['unpatched']:.4f}", "+0.00", "-", "-", "-", measured["n"]]]
    for label in strengths:
        tuned, t = top1.get(f"{label}|fine-tuned"), training.get(label)
        rows.append([folder.name, label, f"{records[label].metrics['flops_reduction']:.1%}", f"{top1[label]:.4f}",
                     change(label), "-" if tuned is None else f"{tuned:.4f}", "-" if tuned is None else change(f"{label}|fine-tuned"),
                     "-" if t is None else f"{t['epochs']:.2f} ep x {t['images_per_epoch']} img, {t['wall_s']:.0f} s ({t['stopped_by']})",
                     measured["n"]])
    results["accuracy"] = {"n": measured["n"], "seed": seed, "top1": top1, "change_se": se, "training": training, "finetune": finetune,
                           "flops_reduction": {k: r.metrics["flops_reduction"] for k, r in records.items()}}
    return rows


def latency_rows(name: str, model_args: dict[str, Any], strengths: dict[str, dict[str, Any]], ctx: BenchContext,
                 results: dict[str, Any], notes: list[str], rounds: int = 5, per_round: int = 4) -> list[list[Any]]:
    runs = {}
    for label, kw in {"unpatched": None, **strengths}.items():
        if ctx.over_cap():
            notes.append(f"{label} latency: skipped (time cap)")
            continue
        recipe = ctx.work / "recipe.yaml"
        recipe.write_text(RECIPE.format(args=json.dumps(model_args), passes=_passes(kw)))
        runs[label] = compress(CompressOptions(recipe=str(recipe), out=ctx.work / f"run{len(runs)}", model=name, force=True))

    def build(threads: int) -> dict[str, Any]:
        fns = {}
        for label, run_dir in runs.items():
            fns |= artifact_variants(run_dir, threads, prefix=f"{label}|", eager=False)
        return fns

    timing = time_variants(build, rounds, per_round)
    reports = {label: json.loads((d / "report.json").read_text()) for label, d in runs.items()}
    rows = []
    for runtime in RUNTIMES:
        base = timing[f"unpatched|{runtime}"]
        for label, rep in reports.items():
            t = timing[f"{label}|{runtime}"]
            flops = rep["flops"]
            rows.append([name, label, runtime, f"{flops['after'] / 1e9:.2f} G", f"{1 - flops['after'] / flops['before']:.1%}",
                         _with_spread(t["cpu_1t"]), f"{base['cpu_1t']['p50'] / t['cpu_1t']['p50']:.2f}x",
                         f"{t['wall_2t']['p50']:.1f}", f"{base['wall_2t']['p50'] / t['wall_2t']['p50']:.2f}x"])
    results["latency"] = {"model": name, "timing": timing,
                          "mlp_tokens_per_block": {k: (r["passes"][0]["metrics"]["mlp_tokens_per_block"] if r["passes"] else None)
                                                   for k, r in reports.items()}}
    return rows


def _with_spread(stats: dict[str, Any]) -> str:
    """p50 with the range of the round medians: how far one round's figure can move."""
    rounds = stats.get("round_medians") or {"min": stats["p50"], "max": stats["p50"]}
    return f"{stats['p50']:.1f} [{rounds['min']:.1f}-{rounds['max']:.1f}]"


@section("swin_tokens", "Token merging on Swin: swin_merge",
         f"{ACCURACY_FOLDER} (CIFAR-10 test, {'all images' if ACCURACY_N is None else f'a seeded {ACCURACY_N}-image subset'}): "
         "top-1 training-free at "
         f"each strength and after the short fine-tune ({SWIN_FINETUNE['epochs']} epoch of {SWIN_FINETUNE['max_images']} seeded "
         f"training images, distilled from the unpatched model, lr {SWIN_FINETUNE['lr']}, 2 threads, capped at "
         f"{SWIN_FINETUNE['max_minutes']} min), all variants on the same images; a change is given +- its paired standard "
         f"error (only images where exactly one of the two is right carry it). {LATENCY_MODEL} at 224x224 (random weights): "
         "each export vs the unpatched export of the same runtime, batch 1, interleaved, input shapes fixed to one image (the "
         "runner's prepare); CPU time of the process at 1 thread and wall-clock at 2 threads, p50; speed-up = unpatched / "
         "patched. FLOPs counted on the PyTorch model.",
         cap_s=2400)
def swin_tokens_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    notes: list[str] = []
    folder, data = ctx.shared / "models" / ACCURACY_FOLDER, ctx.shared / "data" / "cifar10" / "test"
    if folder.is_dir() and data.is_dir():
        train = ctx.shared / "data" / "cifar10" / "train"
        acc = accuracy_rows(folder, data, STRENGTHS, ACCURACY_N, ACCURACY_SEED, results,
                            train if train.is_dir() else None, SWIN_FINETUNE)
        if not train.is_dir():
            notes.append("CIFAR-10 train not found: fine-tuned rows skipped")
    else:
        acc = []
        notes.append(f"{ACCURACY_FOLDER} or CIFAR-10 test not found: accuracy rows skipped")
    tables = [{"title": f"Top-1 of {ACCURACY_FOLDER} with swin_merge, training-free and after the short fine-tune",
               "header": ["model", "variant", "FLOPs removed (counted)", "top-1 training-free", "vs unpatched (pt +- s.e.)",
                          "top-1 fine-tuned", "vs unpatched (pt +- s.e.)", "fine-tune", "images"], "rows": acc},
              {"title": f"Latency of the swin_merge export, {LATENCY_MODEL}, batch 1",
               "header": ["model", "variant", "runtime", "FLOPs", "FLOPs removed", "CPU ms 1 thread [round medians]", "speed-up 1 thread",
                          "wall ms 2 threads", "speed-up 2 threads"],
               "rows": latency_rows(LATENCY_MODEL, LATENCY_ARGS, STRENGTHS, ctx, results, notes, rounds=12, per_round=4)}]
    return {"tables": tables, "results": results, "notes": notes}
