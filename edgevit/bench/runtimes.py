"""Section `runtimes`: fp32 PyTorch eager vs ONNX Runtime vs OpenVINO, batch 1."""
from __future__ import annotations

import json
from typing import Any

from edgevit.bench.context import BenchContext, section
from edgevit.bench.variants import artifact_variants, time_variants
from edgevit.pipeline import CompressOptions, compress

TIMM_MODELS = ["deit_tiny_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224"]
REFERENCE_MODELS = ["vit_tiny_c10", "swin_tiny_c10"]
RECIPE = """\
name: bench_fp32
description: fp32 export for the runtimes benchmark
exports: [x86-onnxruntime, x86-openvino]
evaluation: {batch_size: 250}
profile: {runs: 10, warmup: 2, threads: 2}
"""


@section("runtimes", "fp32 runtimes: PyTorch eager vs ONNX Runtime vs OpenVINO",
         "Each model exported by `edgevit compress` (fp32 recipe), then timed in one process at batch 1, variants "
         "interleaved round-robin: wall-clock p50/p90 at 2 threads, and process CPU time per inference at 1 thread "
         "(the noise-robust figure). Ratios are PyTorch eager time / runtime time (>1 = faster than eager). Reference "
         "models: top-1 on the 10,000 CIFAR-10 test images in every runtime. timm models: random weights, latency only.",
         cap_s=1200)
def runtimes_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    recipe = ctx.work / "bench_fp32.yaml"
    recipe.write_text(RECIPE)
    data = ctx.shared / "data" / "cifar10" / "test"
    models = [(m, ctx.shared / "models" / m, data) for m in REFERENCE_MODELS if (ctx.shared / "models" / m).is_dir()]
    models += [(m, None, None) for m in TIMM_MODELS]
    accuracy_rows, latency_rows, results, notes = [], [], {}, []
    for name, folder, eval_data in models:
        if ctx.over_cap():
            notes.append(f"{name}: skipped, section time cap reached")
            continue
        run_dir = compress(CompressOptions(recipe=str(recipe), out=ctx.work / name, model=str(folder or name),
                                           data=eval_data if eval_data and eval_data.is_dir() else None, force=True))
        report = json.loads((run_dir / "report.json").read_text())
        heavy = "small" in name or "swin_tiny_patch4" in name
        timing = time_variants(lambda t, d=run_dir: artifact_variants(d, t), rounds=5, per_round=4 if heavy else 10)
        results[name] = {"timing": timing, "accuracy": report["accuracy"], "input_size": report["model"]["input_size"],
                         "checks": {a["name"]: a["check"] for a in report["artifacts"]}}
        if report["accuracy"]:
            top1 = report["accuracy"]["top1"]
            accuracy_rows.append([name, report["accuracy"]["n"], *(f"{top1[k]:.4f}" for k in ("pytorch", "x86-onnxruntime", "x86-openvino"))])
        base = timing["pytorch eager"]
        for variant, t in timing.items():
            latency_rows.append([
                name, "x".join(map(str, report["model"]["input_size"][1:])), variant,
                t["wall_2t"]["p50"], t["wall_2t"]["p90"], base["wall_2t"]["p50"] / t["wall_2t"]["p50"],
                t["cpu_1t"]["p50"], base["cpu_1t"]["p50"] / t["cpu_1t"]["p50"],
            ])
    tables = []
    if accuracy_rows:
        tables.append({"title": "Top-1 on CIFAR-10 test (10,000 images), fp32",
                       "header": ["model", "images", "PyTorch", "ONNX Runtime", "OpenVINO (f32 hint)"], "rows": accuracy_rows})
    tables.append({"title": "Latency, batch 1",
                   "header": ["model", "input", "runtime", "p50 ms (2 thr)", "p90 ms (2 thr)", "speed-up vs eager (p50)",
                              "CPU ms/inference (1 thr, p50)", "speed-up vs eager (CPU)"],
                   "rows": latency_rows})
    return {"tables": tables, "results": results, "notes": notes}
