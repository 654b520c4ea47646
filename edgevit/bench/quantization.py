"""Section `quantization`: LRP-allocated mixed int4/int8 vs uniform precisions, an
error-only allocation (what LRP adds) and ONNX Runtime's quantize_static defaults (a peer),
all evaluated in the real runtimes; size and latency vs fp32 of the same runtime."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from edgevit.bench.context import BenchContext, section
from edgevit.bench.peers import artifact_top1, calibration_images, ort_quantize_static
from edgevit.bench.runs import compress_run
from edgevit.bench.variants import artifact_variants, time_variants
from edgevit.recipe import resolve_recipe_path
from edgevit.yamlfile import load_yaml

EVAL_N = 5000
VARIANTS = {
    "fp32": "[]",
    "uniform int8": "[{kind: quantize, method: uniform, weights: int8}]",
    "uniform int4 (weights)": "[{kind: quantize, method: uniform, weights: int4}]",
    "LRP 4.5 bits": "[{kind: quantize, method: lrp, budget: {avg_weight_bits: 4.5}}]",
    "error-only 4.5 bits": "[{kind: quantize, method: error, budget: {avg_weight_bits: 4.5}}]",
    "LRP 6 bits": "[{kind: quantize, method: lrp, budget: {avg_weight_bits: 6}}]",
    "error-only 6 bits": "[{kind: quantize, method: error, budget: {avg_weight_bits: 6}}]",
}
LATENCY_MODELS = ["deit_small_patch16_224", "swin_tiny_patch4_window7_224"]
LATENCY_VARIANTS = ["fp32", "uniform int8", "LRP 4.5 bits"]

def _ort_defaults_peer(ctx: BenchContext, fp32_run: Path, calib: Path, test: Path, n: int) -> dict[str, Any]:
    """onnxruntime.quantization.quantize_static with its defaults on the fp32 export."""
    out = ort_quantize_static(fp32_run, ctx.work / f"{fp32_run.name}-ort-defaults", calibration_images(fp32_run, calib))
    return {"top1": artifact_top1(out, fp32_run, test, n), "size_bytes": (out / "model.onnx").stat().st_size}


def _accuracy(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    rows = []
    test, calib = ctx.shared / "data/cifar10/test", ctx.shared / "data/cifar10/train"
    for name in ("swin_tiny_c10", "vit_tiny_c10"):
        folder = ctx.shared / "models" / name
        if not folder.is_dir():
            notes.append(f"{name}: not found")
            continue
        fp32_run = None
        for label, passes in VARIANTS.items():
            if ctx.over_cap():
                notes.append(f"{name} {label}: skipped (time cap)")
                continue
            run, failed = compress_run(ctx, label, str(folder), passes, test, calib, EVAL_N)
            if failed:
                notes.append(f"{name} {label}: {failed}")
            fp32_run = fp32_run or run
            rep = json.loads((run / "report.json").read_text())
            q = rep["passes"][0]["metrics"] if rep["passes"] else {}
            arts = {a["name"]: a for a in rep["artifacts"]}
            top1 = rep["accuracy"]["top1"]
            rows.append([name, label, f"{q.get('avg_weight_bits', 32):.2f}",
                         f"{arts['x86-onnxruntime']['size_bytes'] / 1e6:.2f}", f"{arts['x86-openvino']['size_bytes'] / 1e6:.2f}",
                         f"{top1['x86-onnxruntime']:.4f}", f"{top1['x86-openvino']:.4f}",
                         arts["x86-onnxruntime"]["executed_precision"], arts["x86-openvino"]["executed_precision"]])
            results.setdefault(name, {})[label] = {"top1": top1, "sizes": {k: a["size_bytes"] for k, a in arts.items()},
                                                   "executed": {k: a["executed_precision"] for k, a in arts.items()},
                                                   "allocation": q.get("allocation"), "bits_per_layer": q.get("bits_per_layer")}
        if fp32_run is not None and not ctx.over_cap():
            peer = _ort_defaults_peer(ctx, fp32_run, calib, test, EVAL_N)
            rows.append([name, "peer: ORT quantize_static defaults", "8.00", f"{peer['size_bytes'] / 1e6:.2f}", "-",
                         f"{peer['top1']:.4f}", "-", "int8 (QDQ, all ops)", "-"])
            results[name]["ort_quantize_static_defaults"] = peer
    return rows


def _headline(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    """The shipped int4_swin recipe (prune -30 % FLOPs + fine-tune, then LRP 4.5 bits) on the reference Swin."""
    folder = ctx.shared / "models" / "swin_tiny_c10"
    if not folder.is_dir() or ctx.over_cap():
        notes.append("int4_swin headline: skipped")
        return []
    data = ctx.shared / "data/cifar10"
    # the shipped recipe, evaluated on the same seeded subset as the variants above
    recipe = load_yaml(resolve_recipe_path("int4_swin"))
    recipe["evaluation"] = {**recipe.get("evaluation", {}), "n": EVAL_N, "batch_size": 250}
    run, failed = compress_run(ctx, "int4_swin", str(folder), None, data / "test", data / "train", EVAL_N,
                       recipe_text=yaml.safe_dump(recipe, sort_keys=False), train=data / "train")
    if failed:
        notes.append(f"int4_swin: {failed}")
    rep = json.loads((run / "report.json").read_text())
    base = results.get("swin_tiny_c10", {}).get("fp32")
    rows = []
    for a in rep["artifacts"]:
        fp32_size = base["sizes"][a["name"]] if base else None
        fp32_top1 = base["top1"][a["name"]] if base else None
        top1 = rep["accuracy"]["top1"][a["name"]]
        rows.append(["swin_tiny_c10", a["name"], f"{a['size_bytes'] / 1e6:.2f}",
                     f"{fp32_size / a['size_bytes']:.2f}x" if fp32_size else "-", f"{top1:.4f}",
                     f"{(top1 - fp32_top1) * 100:+.2f} pt" if fp32_top1 is not None else "-", a["executed_precision"]])
    results["int4_swin"] = {"report": {k: rep[k] for k in ("flops", "params", "accuracy", "training")},
                            "sizes": {a["name"]: a["size_bytes"] for a in rep["artifacts"]}}
    return rows


def _latency(ctx: BenchContext, results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    rows = []
    for name in LATENCY_MODELS:
        if ctx.over_cap():
            notes.append(f"{name} latency: skipped (time cap)")
            continue
        runs = {}
        for label in LATENCY_VARIANTS:
            runs[label], failed = compress_run(ctx, label, name, VARIANTS[label], None, None, 1)
            if failed:
                notes.append(f"{name} {label}: published as .failed and still timed: {failed}")
        timing = time_variants(lambda threads: {k: f for label, run in runs.items()
                                                for k, f in artifact_variants(run, threads, prefix=f"{label}|", eager=False).items()},
                               rounds=5, per_round=3)
        reps = {label: json.loads((run / "report.json").read_text()) for label, run in runs.items()}
        for runtime, profile in (("onnxruntime", "x86-onnxruntime"), ("openvino", "x86-openvino")):
            base = timing[f"fp32|{runtime}"]
            for label, rep in reps.items():
                art = next(a for a in rep["artifacts"] if a["name"] == profile)
                c, w = timing[f"{label}|{runtime}"]["cpu_1t"]["p50"], timing[f"{label}|{runtime}"]["wall_2t"]["p50"]
                rows.append([name, label, runtime, art["executed_precision"], f"{art['size_bytes'] / 1e6:.1f}",
                             w, base["wall_2t"]["p50"] / w, c, base["cpu_1t"]["p50"] / c])
        results[f"{name}-latency"] = timing
    return rows


@section("quantization", "Mixed-precision quantization: LRP allocation vs uniform, error-only and ORT defaults",
         f"Reference models: top-1 on a seeded {EVAL_N}-image subset of CIFAR-10 test, measured in ONNX Runtime and OpenVINO "
         "(the real integer kernels; `executed` is read back from each runtime), calibration 64 seeded CIFAR-10 train images. "
         "avg bits = nominal weight bits over the governed Linear layers (classifier kept fp32). error-only = the same "
         "knapsack with every layer weighted equally (no LRP). timm 224x224 models (random weights, synthetic calibration): "
         "latency vs the fp32 export of the same runtime, batch 1, interleaved; CPU time at 1 thread, wall p50 at 2 threads.",
         cap_s=3000)
def quantization_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    notes: list[str] = []
    tables = [{"title": f"Top-1 and size ({EVAL_N} CIFAR-10 test images, real runtimes)",
               "header": ["model", "variant", "avg weight bits", "ORT MB", "OpenVINO MB", "top-1 ORT", "top-1 OpenVINO",
                          "executed (ORT)", "executed (OpenVINO)"],
               "rows": _accuracy(ctx, results, notes)},
              {"title": f"Headline: recipes/int4_swin.yaml on swin_tiny_c10 (prune -30 % FLOPs + fine-tune with --train-data, "
                        f"then LRP 4.5 bits; same {EVAL_N}-image subset, vs the fp32 row above)",
               "header": ["model", "runtime", "MB", "smaller than fp32", "top-1", "vs fp32", "executed"],
               "rows": _headline(ctx, results, notes)},
              {"title": "Latency vs fp32 of the same runtime, batch 1",
               "header": ["model", "variant", "runtime", "executed", "MB", "p50 ms (2 thr)", "speed-up (2 thr)",
                          "CPU ms/inference (1 thr)", "speed-up (CPU)"],
               "rows": _latency(ctx, results, notes)}]
    return {"tables": tables, "results": results, "notes": notes}
