"""Section `stacks`: edgevit's int8 lowering and pass stacks against the peers a user would
reach for on the same CPU, in one run.

Per family, a reference model (top-1) and the 224x224 timm model (latency, size; random
weights) each go through the fp32 baseline, edgevit's uniform int8 (`int8_deit`) and the
family's stack recipe, as shipped. Peers from the fp32 run of the same model: NNCF int8
(`ModelType.TRANSFORMER`, OpenVINO), ONNX Runtime quantize_static, LiteRT int8 (XNNPACK).
All 224 artifacts are timed interleaved at 1 thread (process CPU time), OpenVINO's
artifacts also by OpenVINO's own `benchmark_app`; each is profiled per op by its runtime
(time by kind of layer), and its MACs / time is set against the machine's int8 GEMM peak.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.bench.context import BenchContext, section
from edgevit.bench.peers import artifact_size, artifact_top1, calibration_images, nncf_int8, ort_quantize_static
from edgevit.bench.peak import benchmark_app_ms, int8_gemm_peak
from edgevit.bench.runs import published_top1, shipped_recipe_run
from edgevit.bench.timing import interleaved, session_call, summary
from edgevit.layer_kinds import by_kind, kind_cells
from edgevit.profiling import runner_module

EVAL_N = 5000
FAMILIES = {"deit": ("vit_tiny_c10", "deit_small_patch16_224", "stack_deit"),
            "swin": ("swin_tiny_c10", "swin_tiny_patch4_window7_224", "stack_swin")}
RECIPES = ("fp32_baseline", "int8_deit")  # + the family's stack recipe
RUNTIMES = {"x86-onnxruntime": "onnxruntime", "x86-openvino": "openvino"}
PEER = "NNCF int8 (OpenVINO)"
ROUNDS, PER_ROUND, PROFILE_RUNS = 7, 6, 5  # 5 x 3 could not resolve 5 % on this shared machine
KIND_ORDER = ("linear", "matmul", "attention", "softmax", "norm", "quantize", "token glue", "layout", "elementwise / other")


def _litert_int8(fp32_run: Path, out: Path, images: np.ndarray) -> Path:
    """LiteRT int8 (PT2E static, every Linear but the classifier) of the fp32 run's model."""
    from edgevit.bench.litert import int8_plan
    from edgevit.exporters.litert import convert_tflite
    from edgevit.models import load_model_folder

    out.mkdir(parents=True, exist_ok=True)
    model = load_model_folder(fp32_run / "model").model.eval()
    calib = torch.from_numpy(images)
    return convert_tflite(model, "int8", calib[:1], out / "int8.tflite", calib, int8_plan(model))


def _litert_top1(fp32_run: Path, test: Path, calib: Path, work: Path) -> float:
    from edgevit.accuracy import artifact_predictor, measure_top1
    from edgevit.data import scan_image_folder
    from edgevit.bench.peers import data_config

    path = _litert_int8(fp32_run, work, calibration_images(fp32_run, calib))
    report = json.loads((fp32_run / "report.json").read_text())
    labels = json.loads((fp32_run / "model" / "config.json").read_text()).get("label_names")
    session = runner_module().open_artifact(str(path), 2)
    acc = measure_top1({"litert": artifact_predictor(session)}, scan_image_folder(test), EVAL_N, report["recipe"]["seed"],
                       data_config(fp32_run), 100, labels)
    return acc["top1"]["litert"]


def _feeds(session) -> dict[str, np.ndarray]:
    shape = [1 if not isinstance(d, int) or d <= 0 else d for d in session.inputs[0][1]]
    return {session.inputs[0][0]: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def _time(paths: dict[str, Path]) -> dict[str, Any]:
    runner = runner_module()
    fns = {}
    for key, path in paths.items():
        session = runner.open_artifact(str(path), 1)
        feeds = _feeds(session)
        fns[key] = session_call(session, feeds)
    torch.set_num_threads(1)
    samples = interleaved(fns, ROUNDS, PER_ROUND, cpu_time=True)
    torch.set_num_threads(2)
    return {k: {"cpu_1t": summary(s.cpu_ms, PER_ROUND), "wall_1t": summary(s.wall_ms, PER_ROUND)} for k, s in samples.items()}


def _profile(path: Path) -> dict[str, Any] | None:
    """Time by kind of layer from the runtime's own counters (None where it has none: LiteRT)."""
    session = runner_module().open_artifact(str(path), 1, profile_ops=True)
    if not hasattr(session, "op_times"):
        return None
    feeds = _feeds(session)
    session.prepare(feeds)  # the counters of the model as it is timed
    session.run(feeds)
    return by_kind(session.op_times(feeds, PROFILE_RUNS))


def _family(ctx: BenchContext, family: str, notes: list[str], peak: dict[str, float]) -> dict[str, Any] | None:
    reference, latency_model, stack = FAMILIES[family]
    folder, data = ctx.shared / "models" / reference, ctx.shared / "data" / "cifar10"
    if not folder.is_dir():
        notes.append(f"{reference}: not found, {family} skipped")
        return None
    acc, lat = {}, {}
    for recipe in (*RECIPES, stack):
        if ctx.over_cap():
            notes.append(f"{recipe} on {reference}: skipped (time cap)")
            continue
        acc[recipe] = shipped_recipe_run(ctx, recipe, str(folder), data / "test", data / "train", notes, list(RUNTIMES), EVAL_N)
        lat[recipe] = shipped_recipe_run(ctx, recipe, latency_model, None, None, notes, list(RUNTIMES), EVAL_N)
    if not (acc.get("fp32_baseline") and lat.get("fp32_baseline")):
        notes.append(f"{family}: no fp32 baseline, no comparison")
        return None
    base_acc, base_lat = acc["fp32_baseline"], lat["fp32_baseline"]
    rows: list[dict[str, Any]] = []
    for recipe, run in lat.items():
        if run is None or acc.get(recipe) is None:
            continue
        for art in run["report"]["artifacts"]:
            f = art.get("float_form") or {}
            if f.get("timed"):
                notes.append(f"{recipe} on {Path(latency_model).name}, {art['name']}: int8 {f['quantized_cpu_ms']:.1f} ms vs "
                             f"float form {f['float_cpu_ms']:.1f} ms (CPU time, 1 thread, interleaved): published {f['published']}")
            rows.append({"label": "fp32" if recipe == "fp32_baseline" else recipe, "runtime": RUNTIMES[art["name"]],
                         "path": run["dir"] / art["path"], "size": art["size_bytes"],
                         "top1": published_top1(acc[recipe]["report"], art),
                         "macs": run["report"]["flops"]["after"] / 2, "executed": art["executed_precision"]})
    images_lat = calibration_images(base_lat["dir"], None)
    images_acc = calibration_images(base_acc["dir"], data / "train")
    work = ctx.work / f"peers-{family}"
    full_macs = base_lat["report"]["flops"]["after"] / 2
    peers = {PEER: ("openvino", nncf_int8, "nncf-int8"), "ORT quantize_static": ("onnxruntime", ort_quantize_static, "ort-static")}
    for label, (runtime, make, slug) in peers.items():
        path = make(base_lat["dir"], work / f"{slug}-224", images_lat)
        acc_path = make(base_acc["dir"], work / f"{slug}-ref", images_acc)
        rows.append({"label": label, "runtime": runtime, "path": path, "size": artifact_size(path), "macs": full_macs,
                     "top1": artifact_top1(acc_path, base_acc["dir"], data / "test", EVAL_N), "executed": "int8 (peer)"})
    try:
        path = _litert_int8(base_lat["dir"], work / "litert-224", images_lat)
        rows.append({"label": "LiteRT int8 (XNNPACK)", "runtime": "litert", "path": path, "size": path.stat().st_size,
                     "macs": full_macs, "top1": _litert_top1(base_acc["dir"], data / "test", data / "train", work / "litert-ref"),
                     "executed": "int8"})
    except Exception as exc:  # litert-torch cannot convert every timm model: the row is left out, said in the notes
        notes.append(f"LiteRT int8 of {latency_model}: not measured ({type(exc).__name__}: {str(exc)[:200]})")
    timing = _time({f"{r['label']}|{r['runtime']}": r["path"] for r in rows})
    fp32_top1 = base_acc["report"]["accuracy"]["top1"]["pytorch"]
    for r in rows:
        key = f"{r['label']}|{r['runtime']}"
        r.update(cpu_ms=timing[key]["cpu_1t"]["p50"], spread=timing[key]["cpu_1t"]["round_medians"],
                 wall_ms=timing[key]["wall_1t"]["p50"], drop_pt=(r["top1"] - fp32_top1) * 100)
        r["roofline"] = r["macs"] / (r["cpu_ms"] / 1e3) / 1e9 / peak["int8_gmacs"]
        if r["runtime"] == "openvino":
            r["benchmark_app_ms"] = benchmark_app_ms(r["path"] / "model.xml", tuple(json.loads(
                (base_lat["dir"] / "report.json").read_text())["model"]["input_size"]))
        r["kinds"] = _profile(r["path"])
    peer_ms = next(r["cpu_ms"] for r in rows if r["label"] == PEER)
    fastest_peer = min((r for r in rows if r["executed"] == "int8 (peer)" or r["label"].startswith("LiteRT")),
                       key=lambda r: r["cpu_ms"])
    for r in rows:
        r["vs_nncf"], r["vs_fastest_peer"] = peer_ms / r["cpu_ms"], fastest_peer["cpu_ms"] / r["cpu_ms"]
    return {"reference": reference, "latency_model": latency_model, "stack": stack, "fp32_top1": fp32_top1,
            "fastest_peer": f"{fastest_peer['label']} ({fastest_peer['runtime']})",
            "rows": [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for r in rows]}


def _tables(results: dict[str, Any], peak: dict[str, float]) -> list[dict[str, Any]]:
    main, kinds = [], []
    for fam in results.values():
        for r in fam["rows"]:
            bapp = r.get("benchmark_app_ms")
            main.append([fam["latency_model"], r["label"], r["runtime"], f"{r['top1']:.4f}", f"{r['drop_pt']:+.2f}",
                         f"{r['size'] / 1e6:.1f}", f"{r['cpu_ms']:.1f} [{r['spread']['min']:.1f}-{r['spread']['max']:.1f}]",
                         f"{bapp:.1f}" if bapp else "-", f"{r['vs_nncf']:.2f}x", f"{r['vs_fastest_peer']:.2f}x",
                         f"{r['macs'] / 1e9:.2f}", f"{r['roofline']:.0%}", r["executed"]])
            if r.get("kinds"):
                kinds.append([fam["latency_model"], r["label"], r["runtime"], f"{r['kinds']['total_ms']:.1f}",
                              *kind_cells(r["kinds"], KIND_ORDER), f"{r['kinds']['compute_integer_share']:.0%}"])
    return [{"title": "edgevit int8 and stacks vs the peers: top-1 (reference model, CIFAR-10) vs latency and size "
                      "(224 model, random weights), batch 1, 1 thread", "headline": True,
             "header": ["latency model", "variant", "runtime", "top-1", "vs fp32 (pt)", "MB", "CPU ms [round min-max]",
                        "benchmark_app ms", "speed vs NNCF int8", "speed vs fastest peer", "GMACs kept",
                        "int8 roofline share", "executed"], "rows": main},
            {"title": "Where the time goes: share of the runtime's own per-op counters by kind of layer (1 thread, "
                      f"{PROFILE_RUNS} runs; profiled ms include the profiler's overhead)",
             "header": ["latency model", "variant", "runtime", "profiled ms", *KIND_ORDER, "compute time in int8"],
             "rows": kinds},
            {"title": "Machine peaks (1 thread, ONNX Runtime GEMM kernels)", "header": ["kernel", "GMAC/s"],
             "rows": [[k, f"{v:.1f}"] for k, v in peak.items() if k.endswith("gmacs")]}]


@section("stacks", "Faster than the best peer: edgevit int8 and pass stacks vs NNCF int8, ORT, LiteRT",
         f"Per family a reference model (top-1 on a seeded {EVAL_N}-image CIFAR-10 test subset, stacks fine-tuned on "
         "CIFAR-10 train as the recipe says) and the 224x224 timm model of the same family (random weights: latency, "
         "size, MACs). Recipes as shipped: fp32_baseline, int8_deit (uniform int8 weights + static int8 activations) and "
         "the family's stack (stack_deit: DIMAP prune + ToMe at EViT's locations + int8; stack_swin). Peers from the fp32 "
         "run with 64 calibration images: NNCF int8 ModelType.TRANSFORMER (OpenVINO), ONNX Runtime quantize_static "
         "defaults, LiteRT int8 (litert-torch PT2E, XNNPACK). All 224 artifacts timed interleaved in one process: "
         f"{ROUNDS} rounds x {PER_ROUND} inferences, process CPU time at 1 thread (p50, [min-max] of round medians); "
         "OpenVINO artifacts also by OpenVINO's benchmark_app (-hint none -nthreads 1 -nstreams 1, median wall ms). "
         "Roofline share = MACs kept (FLOPs/2 counted in PyTorch) per CPU second over the int8 GEMM peak of this CPU "
         "measured by ONNX Runtime's MatMulInteger on a 256x1024x1024 product at 1 thread (MLAS; AVX2 here, VNNI where "
         "the CPU has it). The stack recipes publish per target the faster of their int8 artifact and the same stack in "
         "float (profile.float_form: publish_faster; decided in the 224 run, 20 interleaved runs at 1 thread, see the "
         "notes): where the float form was published, `executed` says fp32 and its top-1 is the compressed model's "
         "PyTorch top-1 (the float form matches it at fp32 check tolerances).",
         cap_s=5400)
def stacks_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    notes: list[str] = []
    peak = int8_gemm_peak()
    results = {}
    for family in ctx.models or list(FAMILIES):
        if family not in FAMILIES:
            notes.append(f"--models {family}: this section takes {', '.join(FAMILIES)}")
            continue
        out = _family(ctx, family, notes, peak)
        if out:
            results[family] = out
    return {"tables": _tables(results, peak), "results": {"peak": peak, **results}, "notes": notes}
