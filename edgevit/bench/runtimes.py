"""Section `runtimes`: fp32 PyTorch eager vs ONNX Runtime vs OpenVINO, batch 1."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgevit.bench.context import BenchContext, section
from edgevit.bench.timing import interleaved, summary
from edgevit.models import load_model_folder
from edgevit.pipeline import CompressOptions, compress
from edgevit.profiling import runner_module

TIMM_MODELS = ["deit_tiny_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224"]
REFERENCE_MODELS = ["vit_tiny_c10", "swin_tiny_c10"]
RECIPE = """\
name: bench_fp32
description: fp32 export for the runtimes benchmark
exports: [x86-onnxruntime, x86-openvino]
evaluation: {batch_size: 250}
profile: {runs: 10, warmup: 2, threads: 2}
"""
RUNTIMES = {"onnxruntime": "x86-onnxruntime", "openvino": "x86-openvino"}


def _variants(run_dir: Path, threads: int) -> dict[str, Any]:
    """Callables running one batch-1 inference in PyTorch eager and in each artifact."""
    model = load_model_folder(run_dir / "model").model
    size = json.loads((run_dir / "report.json").read_text())["model"]["input_size"]
    x = torch.randn(1, *size)
    runner = runner_module()

    def eager():
        with torch.no_grad():
            model(x)

    fns = {"pytorch eager": eager}
    for runtime, profile in RUNTIMES.items():
        session = runner.open_artifact(str(run_dir / "artifacts" / profile), threads)
        feeds = {session.inputs[0][0]: x.numpy()}
        fns[runtime] = (lambda s=session, f=feeds: s.run(f))
    return fns


def _time_model(run_dir: Path, rounds: int, per_round: int) -> dict[str, Any]:
    torch.set_num_threads(2)
    wall = interleaved(_variants(run_dir, threads=2), rounds, per_round)
    torch.set_num_threads(1)
    cpu = interleaved(_variants(run_dir, threads=1), rounds, per_round, cpu_time=True)
    torch.set_num_threads(2)
    return {name: {"wall_2t": summary(wall[name].wall_ms), "cpu_1t": summary(cpu[name].cpu_ms)} for name in wall}


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
        timing = _time_model(run_dir, rounds=5, per_round=4 if heavy else 10)
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
