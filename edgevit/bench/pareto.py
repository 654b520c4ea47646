"""Section `pareto`: every shipped recipe against the peers, in one run, with plots.

Models come in pairs: a reference model trained on CIFAR-10 (accuracy) and the standard
224x224 timm model of the same family (latency, size; random weights). Each recipe runs
on both as shipped (passes, fine-tunes, budgets), with the evaluation subset and export
targets fixed for comparability. Peers are made from the fp32 run of each model: ONNX
Runtime quantize_static (defaults), NNCF int8 (transformer preset), NNCF int4/int8 weight
compression. All 224 artifacts are timed interleaved in one process: wall p50/p90 at 2
threads and per-inference CPU time at 1 thread, with min/median/max over the rounds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit import plots, resources
from edgevit.bench.context import BenchContext, section
from edgevit.bench.timing import session_call
from edgevit.bench.peers import artifact_size, artifact_top1, calibration_images, nncf_int8, nncf_weight_compression, ort_quantize_static
from edgevit.bench.runs import published_top1, shipped_recipe_run
from edgevit.bench.variants import time_variants
from edgevit.profiling import runner_module

EVAL_N = 5000
PAIRS = ["vit_tiny_c10=deit_tiny_patch16_224", "swin_tiny_c10=swin_tiny_patch4_window7_224"]
RUNTIMES = {"x86-onnxruntime": "onnxruntime", "x86-openvino": "openvino"}
ROUNDS, WALL_PER_ROUND, CPU_PER_ROUND = 5, 4, 3
BASELINE = "fp32_baseline"
SHORT = {"onnxruntime": "ORT", "openvino": "OV"}


def _compress(ctx: BenchContext, recipe: str, model: str, data: Path | None, train: Path | None, notes: list[str]) -> dict | None:
    return shipped_recipe_run(ctx, recipe, model, data, train, notes, list(RUNTIMES), EVAL_N)


def _peers(ctx: BenchContext, fp32: dict, tag: str, calib: Path | None) -> dict[str, tuple[str, Path]]:
    images = calibration_images(fp32["dir"], calib)
    work = ctx.work / f"peers-{tag}"
    return {"ORT quantize_static int8": ("onnxruntime", ort_quantize_static(fp32["dir"], work / "ort-static", images)),
            "NNCF int8 (transformer)": ("openvino", nncf_int8(fp32["dir"], work / "nncf-int8", images)),
            "NNCF int4/int8 weights": ("openvino", nncf_weight_compression(fp32["dir"], work / "nncf-wc", images, 0.875))}


def _time(variants: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Every artifact folder through the device runner's loader, timed by time_variants."""
    runner = runner_module()

    def build(threads: int) -> dict[str, Any]:
        fns = {}
        for name, folder in variants.items():
            session = runner.open_artifact(str(folder), threads)
            shape = [1 if not isinstance(d, int) or d <= 0 else d for d in session.inputs[0][1]]
            feeds = {session.inputs[0][0]: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
            fns[name] = session_call(session, feeds)
        return fns

    return time_variants(build, ROUNDS, WALL_PER_ROUND, cpu_per_round=CPU_PER_ROUND)


def _pair(ctx: BenchContext, pair: str, recipes: list[str], results: dict, notes: list[str], figures: list[str]) -> list[list[Any]]:
    reference, latency_model = pair.split("=")
    folder = ctx.shared / "models" / reference
    if not folder.is_dir():
        notes.append(f"{reference}: not found, pair skipped")
        return []
    data = ctx.shared / "data" / "cifar10"
    acc_runs, lat_runs = {}, {}
    for recipe in recipes:
        if ctx.over_cap():
            notes.append(f"{recipe} on {reference}: skipped (time cap)")
            continue
        acc_runs[recipe] = _compress(ctx, recipe, str(folder), data / "test", data / "train", notes)
        cascade = acc_runs[recipe] and acc_runs[recipe]["report"].get("cascade")
        # a cascade's latency depends on real weights (where images exit): measured on the reference model instead
        lat_runs[recipe] = _compress(ctx, recipe, latency_model, None, None, notes) if acc_runs[recipe] and not cascade else None
    if not (acc_runs.get(BASELINE) and lat_runs.get(BASELINE)):
        notes.append(f"{pair}: no fp32 baseline run, no comparison")
        return []
    acc_peers = _peers(ctx, acc_runs[BASELINE], reference, data / "train")
    lat_peers = _peers(ctx, lat_runs[BASELINE], latency_model, None)

    variants: dict[str, Path] = {}
    rows_meta: list[dict[str, Any]] = []
    for recipe, run in lat_runs.items():
        if run is None or acc_runs.get(recipe) is None:
            continue
        acc_report, lat_report = acc_runs[recipe]["report"], run["report"]
        for art in lat_report["artifacts"]:
            key = f"{recipe}|{art['name']}"
            variants[key] = run["dir"] / art["path"]
            rows_meta.append({"key": key, "label": recipe, "runtime": RUNTIMES[art["name"]],
                              "kind": "baseline" if recipe == BASELINE else "edgevit",
                              "top1": published_top1(acc_report, art), "size": art["size_bytes"],
                              "executed": art["executed_precision"]})
    for label, (runtime, path) in lat_peers.items():
        key = f"{label}|peer"
        variants[key] = path
        rows_meta.append({"key": key, "label": label, "runtime": runtime, "kind": "peer", "size": artifact_size(path),
                          "top1": artifact_top1(acc_peers[label][1], acc_runs[BASELINE]["dir"], data / "test", EVAL_N),
                          "executed": "-"})
    timing = _time(variants)
    rows = []
    for runtime in RUNTIMES.values():
        mine = [m for m in rows_meta if m["runtime"] == runtime]
        base = next(m for m in mine if m["kind"] == "baseline")
        peers = [m for m in mine if m["kind"] == "peer"]
        best_peer = min(peers, key=lambda m: timing[m["key"]]["cpu_1t"]["p50"]) if peers else None
        for m in mine:
            t = timing[m["key"]]
            cpu, base_cpu = t["cpu_1t"]["p50"], timing[base["key"]]["cpu_1t"]["p50"]
            m.update(cpu_ms=cpu, wall_p50=t["wall_2t"]["p50"], wall_p90=t["wall_2t"]["p90"])
            spread = t["cpu_1t"]["round_medians"]
            rows.append([reference, m["label"], m["kind"], runtime, f"{m['top1']:.4f}", f"{(m['top1'] - base['top1']) * 100:+.2f}",
                         f"{m['size'] / 1e6:.1f}", f"{base['size'] / m['size']:.2f}x", f"{t['wall_2t']['p50']:.1f}",
                         f"{t['wall_2t']['p90']:.1f}", f"{cpu:.1f} [{spread['min']:.1f}-{spread['max']:.1f}]",
                         f"{base_cpu / cpu:.2f}x",
                         f"{timing[best_peer['key']]['cpu_1t']['p50'] / cpu:.2f}x" if best_peer else "-", m["executed"]])
    results[reference] = {"latency_model": latency_model, "variants": rows_meta, "timing": timing,
                          "runs": {r: str(v["dir"]) for r, v in acc_runs.items() if v}}
    figures += _plots(ctx, reference, latency_model, rows_meta, acc_runs)
    return rows


def _plots(ctx: BenchContext, reference: str, latency_model: str, rows_meta, acc_runs) -> list[str]:
    out = Path(ctx.work).parents[1]  # benchmarks/
    made = []
    points = [{"label": f"{m['label']} ({SHORT[m['runtime']]})", "kind": m["kind"], "cpu_ms": m["cpu_ms"], "top1": m["top1"],
               "size_mb": m["size"] / 1e6} for m in rows_meta if "cpu_ms" in m]
    if points:
        plots.tradeoff_plot(points, "cpu_ms", "top1", f"CPU ms per inference, 1 thread ({latency_model}, 224)",
                            f"top-1 ({reference}, CIFAR-10)", f"accuracy vs latency: {reference} / {latency_model}",
                            out / f"pareto-{reference}")
        plots.tradeoff_plot(points, "size_mb", "top1", f"artifact size MB ({latency_model})", f"top-1 ({reference})",
                            f"size vs accuracy: {reference} / {latency_model}", out / f"size-{reference}")
        made += [f"benchmarks/pareto-{reference}.png", f"benchmarks/size-{reference}.png"]
    for recipe, run in acc_runs.items():
        if not run:
            continue
        for p in run["report"]["passes"]:
            bits = p.get("metrics", {}).get("bits_per_layer")
            if bits:
                plots.bit_allocation_plot(bits, p["metrics"].get("relevance") or {}, f"{recipe} on {reference}: bits per layer",
                                          out / f"bits-{recipe}-{reference}")
                made.append(f"benchmarks/bits-{recipe}-{reference}.png")
        cascade = run["report"].get("cascade") or {}
        histograms = {n: c["exit_histogram"] for n, c in (cascade.get("artifacts") or {}).items() if c.get("exit_histogram")}
        if histograms:
            plots.exit_histogram_plot(histograms, f"{recipe} on {reference}: exits taken", out / f"exits-{recipe}-{reference}")
            made.append(f"benchmarks/exits-{recipe}-{reference}.png")
    return made


def _cascade_rows(results: dict, ctx: BenchContext) -> list[list[Any]]:
    rows = []
    for reference, r in results.items():
        for recipe, run_dir in r["runs"].items():
            report = json.loads((Path(run_dir) / "report.json").read_text())
            gates = {a["name"]: a.get("cascade_gate") for a in report.get("artifacts", [])}
            for name, c in ((report.get("cascade") or {}).get("artifacts") or {}).items():
                if c.get("evaluated", True):
                    rows.append([reference, recipe, name, c["images"], f"{c['accuracy']:.4f}", f"{c['full_model_accuracy']:.4f}",
                                 " / ".join(f"{x:.0%}" for x in c["exit_rates"]), f"{c['latency']['mean_ms']:.2f}",
                                 f"{c['full_model_latency']['mean_ms']:.2f}", f"{c['speedup_mean']:.2f}x"])
                elif gates.get(name):  # the speed gate published the network without exits: say so, not a missing row
                    gate = gates[name]
                    rows.append([reference, recipe, name, "-", "-", "-", f"none: {gate['published']} published",
                                 f"{gate['mean_ms']:.2f} (gate)", f"{gate['full_model_mean_ms']:.2f} (gate)",
                                 f"{gate['speedup_mean']:.2f}x at the gate: plain model shipped"])
    return rows


@section("pareto", "Every recipe against the peers (accuracy, latency, size)",
         f"Each shipped recipe as shipped (its passes, fine-tunes with CIFAR-10 train, budgets) on a reference model "
         f"(top-1 on a seeded {EVAL_N}-image CIFAR-10 test subset) and on the 224x224 timm model of the same family "
         "(random weights: latency and size). Peers made from the fp32 run of the same model with 64 calibration images: "
         "ONNX Runtime quantize_static defaults (QDQ int8), NNCF quantize int8 (ModelType.TRANSFORMER), NNCF compress_weights "
         "INT4_SYM ratio 0.875 (rest int8). All 224 artifacts timed interleaved in one process, batch 1: wall p50/p90 at 2 "
         f"threads, CPU time per inference at 1 thread ({ROUNDS} rounds; [min-max] of the round medians). Speed-ups are "
         "CPU-time ratios: to the fp32 export of the same runtime, and best peer = the fastest peer of that runtime "
         "(> 1 = this row is faster). Early-exit recipes are measured as cascades on the reference model (own table).",
         cap_s=5400)
def pareto_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    recipes = ctx.recipes or resources.names("recipes")
    if BASELINE not in recipes:
        recipes = [BASELINE, *recipes]
    results: dict[str, Any] = {}
    notes: list[str] = []
    figures: list[str] = []
    rows = []
    for pair in ctx.models or PAIRS:
        if "=" not in pair:
            notes.append(f"--models {pair}: expected REFERENCE=TIMM_224_NAME, skipped")
            continue
        rows += _pair(ctx, pair, recipes, results, notes, figures)
    tables = [{"title": "Recipes and peers: top-1 (reference model) vs size and latency (224 model), batch 1",
               "header": ["reference", "variant", "kind", "runtime", "top-1", "vs fp32 (pt)", "MB (224)", "smaller than fp32",
                          "p50 ms (2 thr)", "p90 ms (2 thr)", "CPU ms (1 thr) [round min-max]", "speed-up vs fp32",
                          "vs best peer", "executed"],
               "rows": rows, "headline": True},
              {"title": f"Early-exit recipes: the cascade measured on the reference model ({EVAL_N} test images, batch 1, "
                        "interleaved with the same network without exits)",
               "header": ["reference", "recipe", "runtime", "images", "top-1 cascade", "top-1 full", "exits taken",
                          "mean ms", "full mean ms", "speed-up"],
               "rows": _cascade_rows(results, ctx)}]
    notes += [f"plot: {f}" for f in figures]
    return {"tables": tables, "results": results, "notes": notes, "figures": figures}
