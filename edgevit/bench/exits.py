"""Section `exits`: LGViT early-exit cascades on the reference models, measured in ONNX
Runtime and OpenVINO; per-stage costs of DeiT-S 224 and its cascade at measured exit rates.

Per model the heads are trained once (frozen backbone, cached features), then the
thresholds are calibrated at three accuracy budgets twice: on images held out from CIFAR-10
train (what compress does by default), and on 2000 seeded test images (compress
--val-data), reported then on the other 8000. Each cascade is exported and run by the device runner over CIFAR-10 test images,
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
from edgevit.cascade import attach_exits, keep_exits
from edgevit.exporters.base import ExportContext, LoweringPlan, load_profile
from edgevit.capabilities import runtime
from edgevit.models import load_model
from edgevit.passes.base import PassContext
from edgevit.passes.exit_calibration import cumulative_costs
from edgevit.report import speedup_text
from edgevit.exporters.cascade_forms import FORM_SHORT
from edgevit.exporters.cascade_graphs import cascade_forms_key
from edgevit.passes.exits import (CHAIN_CHECK_IMAGES, GATE_IMAGES, MARGIN_CONFIRMING, MARGIN_HELD_OUT_TRAIN, VAL_SOURCE,
                                  ExitsConfig, ExitsPass, accuracy_budget,
                                  GATE_MARGIN_SE, gate_passes,
                                  cache_features, calibrate_exits, chain_check,
                                  deployed_cumulative_costs,
                                  exit_blocks, exit_costs, head_specs, holdout_exit_logits, holdout_samples,
                                  runtime_stage_logits)
from edgevit.passes.exits_on_target import select_exits_on_target
from edgevit.profiling import LocalTransport

MODELS = ["vit_tiny_c10", "swin_tiny_c10"]
BUDGETS = [0.25, 0.5, 1.0]  # top-1 points the cascade may lose on the held-out images
TEST_IMAGES = 10000  # the whole test set: the drop measured on it is the one the budgets judge
TARGETS = ["x86-onnxruntime", "x86-openvino"]
LARGE_MODEL, ESTIMATE_FROM = "deit_small_patch16_224", "vit_tiny_c10"
THREADS = 1  # one image at a time on one thread: the least noisy latency this shared machine gives
EXITS = {"count": 4, "rule": "auto", "holdout_images": 8000,  # 2000 left a 0.5 pt noise on sub-point budgets
         "train": {"epochs": 20, "lr": 3e-3, "batch_size": 128, "max_images": 40000, "max_minutes": 8}}
VAL_IMAGES = 2000  # the --val-data table: test images that calibrate (seeded draw); the other 8000 report
SOURCES = {"train": "--train-data", "val": VAL_SOURCE}  # what compress would be given, per calibration
CALIBRATIONS = {  # how the thresholds were calibrated -> the table that reports it
    "train": "held-out train images",
    "val": f"{VAL_IMAGES} test images (compress --val-data)",
}


def _model_rows(ctx: BenchContext, name: str, results: dict[str, Any], notes: list[str]) -> dict[str, list[list[Any]]]:
    """Rows per calibration: the thresholds from images held out of CIFAR-10 train (what
    compress does without --val-data), and from 2000 test images (--val-data; the cascade
    then reported on the other 8000, which nothing calibrated on). The heads are trained once."""
    folder = ctx.shared / "models" / name
    if not folder.is_dir():
        notes.append(f"{name} not found: skipped")
        return {}
    base = load_model(str(folder))
    cfg = base.data_config()
    pctx = PassContext(seed=0, input_size=base.input_size, data_config=cfg, label_names=base.label_names,
                       train_data=ctx.shared / "data" / "cifar10" / "train")
    exits_pass = ExitsPass()
    model, record = exits_pass.apply(copy.deepcopy(base.model), ExitsConfig(**EXITS), pctx)
    t = record.training
    test = scan_image_folder(ctx.shared / "data" / "cifar10" / "test")
    mapping, _ = label_map(test.classes, base.label_names)
    samples = [(p, mapping[y]) for p, y in test.subset(TEST_IMAGES, 0)]
    test_set = _image_set(samples, cfg)  # decoded once: the --val-data and report sets are slices of it
    order = np.random.default_rng(0).permutation(len(samples))  # seeded: which test images calibrate
    val_index, report_index = order[:VAL_IMAGES], order[VAL_IMAGES:]
    val_cache = cache_features(model, [samples[i] for i in val_index], exits_pass.holdout["blocks"], pctx,
                               f"caching features of {VAL_IMAGES} --val-data (test) images")
    # the pass's speed gate decides on its calibration images, never on the images reported
    gate_samples = holdout_samples(record.model_dump(mode="json"), pctx.train_data, base.label_names)[:GATE_IMAGES]
    sources = {"train": (exits_pass.holdout, _image_set(gate_samples, cfg), test_set),
               "val": (val_cache, _subset(test_set, val_index[:GATE_IMAGES]), _subset(test_set, report_index))}
    rows: dict[str, list[list[Any]]] = {c: [] for c in CALIBRATIONS}
    runs, paths = [], []
    for calibration, (calib, gate_set, eval_set) in sources.items():
        for budget in BUDGETS:
            if ctx.over_cap():
                notes.append(f"{name} budget {budget} ({CALIBRATIONS[calibration]}): skipped (time cap)")
                continue
            run, row, path = _budget_run(ctx, name, model, exits_pass, base.input_size, (calib, gate_set, eval_set), budget,
                                         calibration)
            if not run:
                notes.append(f"{name} budget {budget} ({CALIBRATIONS[calibration]}): no exit pays; nothing to run as a cascade")
            runs += run
            rows[calibration] += row
            paths += path
    results[name] = {"exit_blocks_1based": record.metrics["exit_blocks_1based"], "head_kinds": record.metrics["head_kinds"],
                     "head_params": record.metrics["head_params"], "training": t, "runs": runs, "paths": paths,
                     "val_images": VAL_IMAGES, "report_images": len(report_index)}
    notes.append(f"{name}: exits after blocks {record.metrics['exit_blocks_1based']} ({', '.join(record.metrics['head_kinds'])} heads, "
                 f"{record.metrics['head_params'] / 1e6:.2f} M params); feature cache {t['feature_cache_mb']:.0f} MB built in "
                 f"{t['feature_cache_s']:.0f} s; head training {t['epochs']:.1f} epochs x {t['images_per_epoch']} images at lr {t['lr']:g} in "
                 f"{t['wall_s']:.0f} s (stopped by {t['stopped_by']}); per-exit top-1 on the held-out images "
                 + ", ".join(f"{a:.3f}" for a in record.metrics["holdout_top1_per_exit"]))
    return rows


def _image_set(samples, data_config) -> dict[str, np.ndarray]:
    return {"images": load_images(samples, data_config).numpy(), "labels": np.array([y for _, y in samples])}


def _subset(image_set: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in image_set.items()}


def _budget_run(ctx: BenchContext, name: str, model, exits_pass: ExitsPass, input_size, source: tuple[dict[str, Any], dict, dict],
                budget: float, calibration: str) -> tuple[list[dict], list[list[Any]], list[dict]]:
    """One budget on both runtimes: the exits that pay at it (re-selected per budget from
    every trained head), calibrated on ``calib``, exported, chosen on the target as compress
    does, then measured on ``eval_set`` interleaved with the same network without exits.
    ``source``: (calibration features, speed-gate images, evaluation images)."""
    calib, gate_set, eval_set = source
    heads, specs = exits_pass.trained
    model.edgevit_exits, model.edgevit_exit_specs = torch.nn.ModuleList(heads), list(specs)
    accuracy = accuracy_budget(ExitsConfig(**EXITS, max_accuracy_drop=budget), SOURCES[calibration])  # as compress decides
    keep, thresholds, metrics = calibrate_exits(model, calib, EXITS["rule"], accuracy, input_size, exits_pass.costs)
    keep_exits(model, keep)
    if not keep:
        return [], [], []
    # a fresh context per budget: its graph cache is keyed by lowering, not by the exits kept
    export_ctx = ExportContext(example_input=torch.from_numpy(eval_set["images"][:2]))
    plan = LoweringPlan(cascade={"rule": metrics["rule"], "thresholds": thresholds},
                        pass_records=[{"kind": "exits", "structure": {}}])  # the profile's export form (if_graph)
    exit_logits = holdout_exit_logits(model, calib)
    final_logits, labels = calib["logits"].numpy(), calib["labels"].numpy()
    runs, rows, paths = [], [], []
    for target in TARGETS:
        profile = load_profile(target)
        exporter = runtime(profile.runtime).exporter_class()()
        bundle = exporter.export(model, plan, profile, export_ctx, ctx.work / f"{name}-{budget}-{calibration}-{target}")
        transport = LocalTransport()
        time_gate = lambda: transport.run(bundle.path, runs=0, warmup=0, threads=THREADS, batch=1,  # noqa: E731
                                          eval_set=gate_set).data["cascade"]
        # as compress does after export: the exits that pay in this runtime, in the faster single-image form
        run_stages = lambda x: runtime_stage_logits(transport, bundle.path, THREADS, 1, x)  # noqa: E731
        check_images = gate_set["images"][:CHAIN_CHECK_IMAGES]  # the exported stages' outputs, as compress checks
        chosen = select_exits_on_target(bundle.path, export_ctx.cache[cascade_forms_key(bundle.path)], time_gate,
                                        chain_check(run_stages, check_images, *run_stages(check_images)),
                                        exit_logits, final_logits, labels, metrics["rule"], accuracy,
                                        deployed_cumulative_costs(metrics))
        shipped_cascade = chosen["chosen"]  # its calibration figures: at the thresholds shipped (confirmed where confirming)
        gate, deployed = shipped_cascade["measured"], [keep[e] for e in shipped_cascade["exits"]]
        form = chosen["chosen"]["form"]
        tried = [{"blocks": [specs[keep[e]].block + 1 for e in t["exits"]], "gate_speedup": t["speedup_mean"],
                  "by_form": t["speedup_by_form"]} for t in chosen["tried"]]
        shipped = "cascade" if gate_passes(gate) else "plain model (speed gate)"
        measured = transport.run(bundle.path, runs=0, warmup=0, threads=THREADS, batch=1, eval_set=eval_set).data["cascade"]
        lat, full = measured["latency"], measured["full_model_latency"]
        rows.append([name, profile.runtime, f"{budget:g} pt",
                     f"{(shipped_cascade['holdout_top1'] - shipped_cascade['holdout_top1_full']) * 100:+.2f} "
                     f"+- {shipped_cascade['holdout_drop_se'] * 100:.2f}",
                     f"{measured['accuracy']:.4f}", f"{measured['full_model_accuracy']:.4f}",
                     f"{(measured['accuracy'] - measured['full_model_accuracy']) * 100:+.2f}",
                     "blocks " + ",".join(str(specs[k].block + 1) for k in deployed) + f" ({metrics['rule']}): "
                     + " / ".join(f"{r:.0%}" for r in _taken(measured["exit_rates"], keep, deployed)),
                     _form_label(form),
                     "; ".join(f"{','.join(map(str, t['blocks']))}: " + " / ".join(
                         f"{FORM_SHORT[f]} {v:.2f}x" for f, v in t["by_form"].items()) for t in tried) or "-",
                     f"{lat['cpu_time_ms']:.2f}", f"{lat['p90_ms']:.2f}", f"{full['cpu_time_ms']:.2f}", f"{full['p90_ms']:.2f}",
                     speedup_text(measured), f"{metrics['expected_flops_reduction']:.1%}", f"{speedup_text(gate)}: {shipped}"])
        if budget == PATH_BUDGET:
            paths.append({**_path_costs(name, profile.runtime, bundle.path, eval_set["images"][:1], measured),
                          "calibration": calibration})
        runs.append({"budget_points": budget, "target": target, "calibration": calibration, "exits_kept": deployed,
                     "exits_calibrated": keep, "form": form, "exits_tried_on_target": tried, "thresholds": thresholds,
                     "calibration_metrics": metrics, "measured": measured,
                     "shipped_calibration": {k: shipped_cascade[k] for k in ("holdout_top1", "holdout_top1_full", "holdout_drop_se",
                                                                             "holdout_exit_rates", "confirmation", "thresholds_searched")},
                     "gate": {**{k: gate.get(k) for k in ("speedup_mean", "speedup_se", "exit_rates")},
                              **{k: shipped_cascade[k] for k in ("speedup_when_chosen", "form_when_chosen")}},
                     "shipped": shipped})
    return runs, rows, paths


def _form_label(form: str) -> str:
    return {"graph": "one graph (If)", "chain": "chained stages"}[form]


def _taken(rates: list[float], keep: list[int], deployed: list[int]) -> list[float]:
    """The runner's exit rates for the deployed exits: one per stage of the bundle, which in
    the one-graph form still lists the exits left out of its graph (never taken), in the
    chained form only the deployed ones."""
    if len(rates) == len(deployed) + 1:
        return list(rates)
    return [r for k, r in zip([*keep, None], rates) if k is None or k in deployed]


PATH_BUDGET = 0.5  # the budget whose cascades get the per-path table
PATH_RUNS, PATH_ROUNDS = 300, 10


def _path_costs(name: str, runtime_name: str, bundle_dir, image: np.ndarray, measured: dict[str, Any]) -> dict[str, Any]:
    """CPU ms of every way through one exported cascade (the runner's sessions, one image,
    interleaved), and the mean they predict at the exit rates measured on the test images:
    where the runtime spends an exit's time, apart from how often it is taken."""
    from edgevit.profiling.runner_module import runner_module

    runner = runner_module()
    session = runner.open_artifact(str(bundle_dir), THREADS)
    costs = runner.cascade_path_costs(session, image, PATH_RUNS, PATH_ROUNDS)
    by_path = {c["path"]: c["cpu_time_ms"] for c in costs}
    rates = measured["exit_rates"]
    if session.graph is not None:
        n_exits = len(session.graph_exits)
        predicted = sum(r * by_path[f"one graph, exit {k} taken"] for k, r in enumerate(rates[:-1]) if k in session.graph_exits) \
            + rates[-1] * by_path["one graph, nobody exits"]
        through = by_path["one graph, nobody exits"]
    else:  # chained stages: leaving at stage k costs stages 0..k
        n_exits = len(rates) - 1
        predicted = sum(r * by_path[f"stages 0-{k} chained"] for k, r in enumerate(rates))
        through = by_path[f"stages 0-{n_exits} chained"]
    return {"model": name, "runtime": runtime_name, "costs": costs, "exit_rates": rates,
            "predicted_mean_ms": predicted, "measured_mean_cpu_ms": measured["latency"]["cpu_time_ms"],
            "overhead_per_exit_ms": (through - by_path["reference (no exits)"]) / max(n_exits, 1)}


def _calibration_of(entry: dict[str, Any]) -> str:
    """Which images a run's thresholds came from. Runs before the --val-data table used held-out
    train images only, and their "calibration" key held the calibration metrics."""
    named = entry.get("calibration")
    return named if isinstance(named, str) else "train"


def _path_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, r in results.items():
        for p in r.get("paths", []):
            calibrated = CALIBRATIONS[_calibration_of(p)]
            reference = next(c["cpu_time_ms"] for c in p["costs"] if c["path"].startswith("reference"))
            for c in p["costs"]:
                rows.append([name, p["runtime"], calibrated, c["path"] + (f" (took exit {c['exit_index']})" if "exit_index" in c else ""),
                             f"{c['cpu_time_ms']:.3f}", f"{c['cpu_time_ms'] / reference:.2f}"])
            rows.append([name, p["runtime"], calibrated, "mean at the measured exit rates "
                         + " / ".join(f"{x:.0%}" for x in p["exit_rates"]) + ": from these paths vs measured on the test images",
                         f"{p['predicted_mean_ms']:.3f} vs {p['measured_mean_cpu_ms']:.3f}",
                         f"{p['predicted_mean_ms'] / reference:.2f}"])
            rows.append([name, p["runtime"], calibrated, "(nobody exits - reference) per exit", f"{p['overhead_per_exit_ms']:.3f}", "-"])
    return rows


def _large_model_estimate(results: dict[str, Any], notes: list[str]) -> list[list[Any]]:
    """DeiT-S 224 (random weights): what each stage and exit head costs, and the mean latency
    its cascade would reach at the exit rates the reference model measured (an estimate: a
    random-weight model has no exit rates of its own). Exits at the same relative depths."""
    import timm

    model = timm.create_model(LARGE_MODEL, pretrained=False).eval()
    input_size = (3, 224, 224)
    cfg = ExitsConfig(**EXITS)
    blocks = exit_blocks(len(model.blocks), cfg)
    attach_exits(model, head_specs(model, blocks, cfg, input_size))
    costs = exit_costs(model, input_size)
    stage, head = np.array(costs["stage_ms"]), np.array(costs["head_ms"])
    full = float(stage.sum())
    rows = [[LARGE_MODEL, f"stage {k + 1} (blocks up to {blocks[k] + 1 if k < len(blocks) else len(model.blocks)})",
             f"{stage[k]:.2f}", f"{head[k]:.2f}" if k < len(head) else "- (final classifier in the stage)", "-", "-"]
            for k in range(len(stage))]
    for run in results.get(ESTIMATE_FROM, {}).get("runs", []):
        if run["target"] != TARGETS[0]:
            continue
        rates = _taken(run["measured"]["exit_rates"], run["exits_calibrated"], run["exits_kept"])
        expected = float(np.dot(rates, cumulative_costs(stage, head, run["exits_kept"])))
        rows.append([LARGE_MODEL, f"cascade at {ESTIMATE_FROM}'s exit rates, budget {run['budget_points']:g} pt, thresholds from "
                                  f"{CALIBRATIONS[_calibration_of(run)]} (estimate)",
                     "-", "-", f"{expected:.2f} vs {full:.2f}", f"{full / expected:.2f}x"])
    notes.append(f"{LARGE_MODEL}: stage and head costs {costs['measured']}; exits after blocks {[b + 1 for b in blocks]}")
    results[LARGE_MODEL] = {"costs": costs, "exit_blocks_1based": [b + 1 for b in blocks]}
    return rows


@section("exits", "Early exits: LGViT cascades in ONNX Runtime and OpenVINO",
         f"Reference models, exit heads trained on a frozen backbone (self-distillation on up to {EXITS['train']['max_images']} "
         f"seeded CIFAR-10 train images, up to {EXITS['train']['epochs']:g} epochs at lr {EXITS['train']['lr']:g} within "
         f"{EXITS['train']['max_minutes']:g} minutes, the cosine schedule fitted to that cap; the notes give the epochs run), thresholds calibrated for three top-1 budgets "
         f"(drop + a reserve of paired standard errors within the budget, compress's default calibration_margin: "
         f"{ExitsConfig().calibration_margin}, i.e. {MARGIN_HELD_OUT_TRAIN:g} s.e. on held-out train images and "
         f"{MARGIN_CONFIRMING:g} on a confirming half; the calibration drop column "
         "gives drop +- s.e. at the thresholds shipped, for --val-data rows on the confirming half; "
         f"rule {EXITS['rule']}: entropy or top softmax probability, whichever gives the lower expected latency there; the "
         f"exits column names it) on {EXITS['holdout_images']} other train images (first table: what compress does without "
         f"--val-data) and, in the second table, on {VAL_IMAGES} seeded CIFAR-10 test images (compress --val-data, so with "
         "confirmation: auto the thresholds are searched and every choice (rule, exits, form) made on one half of them, "
         "and only the chosen cascade's thresholds confirmed on the other), the "
         "exported cascade then reported on the other test images, which nothing calibrated on. Each cascade is run by the "
         f"device runner at batch 1, {THREADS} thread, image by image interleaved with the same network without exits (its "
         "export). Speed-up = full-model mean / cascade mean process CPU time per image, measured (p90 is wall time), "
         "+- its standard error over the images (paired, delta method); the speed gate ships the cascade when its "
         f"speed-up minus {GATE_MARGIN_SE:g} standard errors is >= 1.0x, on a reading of the chosen cascade timed afresh "
         "as it ships (the tried column gives the readings the choice was made on). "
         "--models NAME,... runs those reference models only; the others' rows are carried from the last run.",
         cap_s=6000)
def exits_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    notes: list[str] = []
    rows: dict[str, list] = {c: [] for c in CALIBRATIONS}
    wanted = [m.split("=", 1)[0] for m in ctx.models] if ctx.models else MODELS
    for name in [m for m in MODELS if m in wanted]:
        if ctx.over_cap():
            notes.append(f"{name}: skipped (time cap)")
            continue
        for calibration, got in _model_rows(ctx, name, results, notes).items():
            rows[calibration] += got
    carried = _carry_earlier(ctx.previous, [m for m in MODELS if m not in results], results, notes)
    estimate = _large_model_estimate(results, notes)  # about a minute: worth it even past the cap
    header = ["model", "runtime", "budget", "calibration drop (pt)", "top-1 cascade", "top-1 full", "drop (pt)",
              "exits taken (per exit, last = final)", "single-image form shipped", "exits tried on the target: gate speed-up per form",
              "mean CPU ms", "p90 wall ms", "full mean CPU ms", "full p90 wall ms", "speed-up (mean CPU time)",
              "FLOPs saved (calibration estimate)"]
    tables = [{"title": TRAIN_TABLE, "header": header + [f"speed gate ({GATE_IMAGES} held-out train images): what compress ships"],
               "rows": rows["train"] + carried.get(TRAIN_TABLE, [])},
              {"title": VAL_TABLE, "header": header + [f"speed gate ({GATE_IMAGES} of the --val-data images): what compress ships"],
               "rows": rows["val"] + carried.get(VAL_TABLE, [])},
              {"title": f"{LARGE_MODEL} 224 (random weights): ms per image of each stage and exit head, and the cascade's "
                        f"mean latency at {ESTIMATE_FROM}'s measured exit rates (an estimate)",
               "header": ["model", "stage", "blocks ms", "head ms", "mean ms (cascade vs full)", "speed-up"],
               "rows": estimate},
              {"title": f"Where an exit's time goes: process CPU ms per way through the {PATH_BUDGET:g} pt cascades (one test "
                        f"image, {THREADS} thread, {PATH_RUNS} calls each in {PATH_ROUNDS} interleaved rounds, the runner's "
                        "sessions; exits forced through the thresholds input)",
               "header": ["model", "runtime", "thresholds from", "path", "CPU ms", "vs reference"],
               "rows": _path_rows(results)}]
    return {"tables": tables, "results": results, "notes": notes}


TRAIN_TABLE = f"Cascade vs full model, batch 1, {THREADS} thread ({TEST_IMAGES} CIFAR-10 test images)"
VAL_TABLE = (f"Cascade vs full model, thresholds from {VAL_IMAGES} test images (--val-data), batch 1, {THREADS} thread "
             f"(the other {TEST_IMAGES - VAL_IMAGES} CIFAR-10 test images)")


def _carry_earlier(previous: dict[str, Any] | None, left_out: list[str], results: dict[str, Any],
                   notes: list[str]) -> dict[str, list]:
    """A model this run leaves out (--models) keeps the rows and results its last published
    run measured, and the notes say when: a run of one model must not erase the other."""
    if not previous or not left_out:
        return {}
    carried: dict[str, list] = {}
    for table in previous.get("tables", []):
        if table["title"] in (TRAIN_TABLE, VAL_TABLE):
            carried[table["title"]] = [r for r in table["rows"] if r[0] in left_out]
    had_val_table = VAL_TABLE in carried
    kept = [m for m in left_out if m in previous.get("results", {})]
    results.update({m: previous["results"][m] for m in kept})
    notes.extend(n for n in previous.get("notes", []) if n.startswith(tuple(f"{m}:" for m in kept)))
    if kept:
        trained = [f"{m} (heads trained at lr {previous['results'][m].get('training', {}).get('lr', '?')})" for m in kept]
        notes.append(f"carried from the run of {previous.get('finished_utc', 'an earlier run')}, not re-run this time: "
                     f"{', '.join(trained)}" + ("" if had_val_table else " (that run had no --val-data table)"))
    return carried
