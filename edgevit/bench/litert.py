"""Section `litert`: LiteRT fp32 / fp16 / int8 on XNNPACK vs ONNX Runtime, and top-1 of
the reference models through LiteRT int8.

XNNPACK on this x86 CPU stands in for a phone's ARM cores: the ratios between precisions
and runtimes carry over roughly, the milliseconds do not.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevit.bench.context import BenchContext, section
from edgevit.bench.timing import interleaved, session_call, summary
from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.exporters.litert import convert_tflite
from edgevit.profiling import runner_module

TIMM_MODELS = ["deit_tiny_patch16_224", "swin_tiny_patch4_window7_224"]
REFERENCE_MODELS = ["vit_tiny_c10", "swin_tiny_c10"]
EVAL_N, CALIB_N, SEED = 1000, 64, 0


def int8_plan(model: nn.Module) -> LoweringPlan:
    """Uniform int8 weights + static int8 activations on every Linear but the classifier
    (the int8_deit recipe's plan, without its RepQ reparameterisation)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]
    return LoweringPlan(layer_precision=dict.fromkeys(names, "int8"), activations="int8")


class _Images:
    """The calibration interface the ONNX int8 lowering reads (CalibrationSet.images)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def images(self, _preprocessing) -> torch.Tensor:
        return self.x


def _artifacts(model: nn.Module, x: torch.Tensor, calib: torch.Tensor, work: Path) -> dict[str, Path]:
    """LiteRT fp32/fp16/int8 .tflite and ONNX fp32/int8 (QDQ, same plan) of one model."""
    from edgevit.exporters.onnx import export_onnx_graph, lowered_onnx_graph

    work.mkdir(parents=True, exist_ok=True)
    plan = int8_plan(model)
    paths = {f"litert {p}": convert_tflite(model, p, x, work / f"{p}.tflite", calib, plan) for p in ("fp32", "fp16", "int8")}
    ectx = ExportContext(example_input=x, calibration=_Images(calib))
    paths["onnxruntime fp32"] = export_onnx_graph(model, ectx, LoweringPlan(opset=18))
    paths["onnxruntime int8"] = lowered_onnx_graph(model, dataclasses.replace(plan, opset=18), ectx)
    return paths


def _time(paths: dict[str, Path], x: torch.Tensor, rounds: int, per_round: int) -> dict[str, Any]:
    runner = runner_module()

    def build(threads: int):
        fns = {}
        for name, path in paths.items():
            session = runner.open_artifact(str(path), threads)
            feeds = {session.inputs[0][0]: x.numpy()}
            fns[name] = session_call(session, feeds)
        return fns

    wall = interleaved(build(2), rounds, per_round)
    cpu = interleaved(build(1), rounds, per_round, cpu_time=True)
    return {n: {"wall_2t": summary(wall[n].wall_ms), "cpu_1t": summary(cpu[n].cpu_ms)} for n in wall}


def _top1(folder_path: Path, data: Path, calib_data: Path, work: Path) -> dict[str, Any]:
    """PyTorch fp32 vs LiteRT int8 (calibrated on CALIB_N seeded training images)."""
    from edgevit.accuracy import artifact_predictor, measure_top1, torch_predictor
    from edgevit.data import load_images, scan_image_folder
    from edgevit.models import load_model

    loaded = load_model(str(folder_path), None, False, {})
    model = loaded.model.eval()
    config = loaded.data_config()
    calib = load_images(scan_image_folder(calib_data, "--calib-data").subset(CALIB_N, SEED), config)
    path = convert_tflite(model, "int8", calib[:1], work / "int8.tflite", calib, int8_plan(model))
    session = runner_module().open_artifact(str(path), 2)
    predictors = {"pytorch fp32": torch_predictor(model), "litert int8": artifact_predictor(session)}
    return measure_top1(predictors, scan_image_folder(data), EVAL_N, SEED, config, 100, loaded.label_names)


@section("litert", "LiteRT (XNNPACK) fp32 / fp16 / int8 vs ONNX Runtime",
         "timm models at 224 with random weights (latency and size only), converted by litert-torch: fp32, fp16 "
         "weights, int8 (PT2E static, per-channel weights, every Linear but the classifier), beside ONNX Runtime fp32 "
         "and int8 (QDQ, same plan) of the same model. Timed in one process at batch 1 through the device runner's "
         "loader, variants interleaved round-robin: CPU time per inference at 1 thread and wall p50/p90 at 2 threads. "
         "XNNPACK on x86 stands in for a phone. Reference models: top-1 on a seeded CIFAR-10 test subset, PyTorch fp32 "
         "vs LiteRT int8 calibrated on 64 seeded CIFAR-10 training images.",
         cap_s=600)
def litert_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    import timm

    latency_rows, accuracy_rows, results, notes = [], [], {}, []
    torch.manual_seed(SEED)
    for name in TIMM_MODELS:
        if ctx.over_cap():
            notes.append(f"{name}: skipped, section time cap reached")
            continue
        model = timm.create_model(name, pretrained=False).eval()
        x = torch.randn(1, 3, 224, 224)
        calib = torch.randn(8, 3, 224, 224)  # random weights: calibration only sets scales, latency is what counts
        with tempfile.TemporaryDirectory(prefix="edgevit-bench-litert-") as tmp:
            paths = _artifacts(model, x, calib, Path(tmp))
            sizes = {k: p.stat().st_size for k, p in paths.items()}  # ONNX graphs here are single-file
            timing = _time(paths, x, rounds=4, per_round=5 if "swin" in name else 8)
        base = timing["onnxruntime fp32"]
        results[name] = {"timing": timing, "size_bytes": sizes}
        for variant, t in timing.items():
            latency_rows.append([name, variant, f"{sizes[variant] / 1e6:.1f}", t["cpu_1t"]["p50"],
                                 base["cpu_1t"]["p50"] / t["cpu_1t"]["p50"], t["wall_2t"]["p50"], t["wall_2t"]["p90"]])
    data = ctx.shared / "data" / "cifar10"
    for name in REFERENCE_MODELS:
        folder = ctx.shared / "models" / name
        if not folder.is_dir() or not (data / "test").is_dir():
            notes.append(f"{name}: model or CIFAR-10 not found under {ctx.shared}")
            continue
        if ctx.over_cap():
            notes.append(f"{name}: skipped, section time cap reached")
            continue
        acc = _top1(folder, data / "test", data / "train", ctx.work / name)
        results[name] = {"accuracy": acc}
        top1 = acc["top1"]
        accuracy_rows.append([name, acc["n"], f"{top1['pytorch fp32']:.4f}", f"{top1['litert int8']:.4f}",
                              f"{(top1['litert int8'] - top1['pytorch fp32']) * 100:+.2f} pt"])
    tables = [{"title": "Latency and size, batch 1, 224x224 (random weights)",
               "header": ["model", "variant", "size MB", "CPU ms/inference (1 thr, p50)", "speed-up vs ORT fp32 (CPU)",
                          "p50 ms (2 thr)", "p90 ms (2 thr)"], "rows": latency_rows}]
    if accuracy_rows:
        tables.append({"title": "Top-1 on a seeded CIFAR-10 test subset, LiteRT int8 vs PyTorch fp32",
                       "header": ["model", "images", "PyTorch fp32", "LiteRT int8", "delta"], "rows": accuracy_rows})
    return {"tables": tables, "results": results, "notes": notes}
