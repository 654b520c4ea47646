"""`edgevit compress`: recipe -> model -> passes -> export per target -> check -> evaluate
-> profile -> report, published atomically."""
from __future__ import annotations

import copy
import shutil
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit import float_form, progress
from edgevit.adapters import adapter_for, check_passes_supported
from edgevit.artifacts import Staging, sha256_file
from edgevit.calibration import CalibrationSet, resolve_calibration
from edgevit.accuracy import artifact_predictor, measure_top1, torch_predictor
from edgevit.data import (ImageFolder, check_label_count, jsonable_config, label_map, load_images, refuse_shared_images,
                          require_same_classes, scan_image_folder, synthetic_images)
from edgevit.errors import CheckFailed, EdgevitError, ModelError
from edgevit.cascade import exit_specs, forward_all_exits
from edgevit.evaluation import CHECK_THRESHOLDS, check_all_outputs
from edgevit.baseline import Baselines, comparison
from edgevit.capabilities import runtime
from edgevit.exporters import ExportContext, LoweringPlan, TargetProfile
from edgevit.exporters.base import Bundle
from edgevit.exporters.cascade_graphs import cascade_forms_key
from edgevit.exporters.onnx import OUTPUT_NAME
from edgevit.flops import model_stats
from edgevit.layer_kinds import by_kind
from edgevit.models import LoadedModel, load_model, save_model_folder
from edgevit.passes.base import ExportedArtifact, PassContext
from edgevit.passes.specs import pass_impl, pass_spec
from edgevit.profiling import runner_module, transport_for
from edgevit.profiling.executed import executed_precision
from edgevit.recipe import LoadedRecipe, Recipe, load_recipe, recipe_targets
from edgevit.report import REPORT_SCHEMA_VERSION, speedup_text, write_report_files
from edgevit.outdir import refuse_out_over_inputs, removing_new_parents_on_failure
from edgevit.textfile import write_text
from edgevit.versions import library_versions


@dataclass
class CompressOptions:
    recipe: str
    out: Path
    model: str | None = None
    checkpoint: Path | None = None
    data: Path | None = None
    train_data: Path | None = None
    calib_data: Path | None = None
    val_data: Path | None = None  # validation images the exits pass calibrates on (default: held out of train_data)
    force: bool = False
    keep_failed: bool = False
    allow_synthetic_calibration: bool = False
    # used instead of transport_for(recipe.profile.target) when set: `edgevit tune` wraps the
    # target's transport so one trial at a time times on a device
    transport: Any = None


@dataclass
class _Inputs:
    """Everything validated before any heavy work or any file is written."""

    loaded_recipe: LoadedRecipe
    model_name: str
    checkpoint: Path | None
    profiles: list[TargetProfile]
    eval_folder: ImageFolder | None

    @property
    def recipe(self) -> Recipe:
        return self.loaded_recipe.recipe


def compress(opts: CompressOptions) -> Path:
    inputs = _validate(opts)
    with removing_new_parents_on_failure(opts.out):
        return _stage_and_publish(opts, inputs)


def _stage_and_publish(opts: CompressOptions, inputs: _Inputs) -> Path:
    staging = Staging(opts.out, force=opts.force)
    try:
        report, failed = _run(opts, inputs, staging.path)
        manifest = {
            "recipe_sha256": inputs.loaded_recipe.sha256, "recipe": inputs.recipe.name, "seed": inputs.recipe.seed,
            "versions": library_versions(), "status": "failed-check" if failed else "ok",
        }
        if failed:
            message = "; ".join(f"{a['name']}: {a['check']['reason']}" for a in failed)
            if opts.keep_failed:
                where = staging.publish(manifest, opts.out.with_name(opts.out.name + ".failed"))
                raise CheckFailed(f"numerical check failed: {message}", f"kept for inspection in {where}")
            raise CheckFailed(f"numerical check failed: {message}", "nothing was published; --keep-failed keeps the run")
        return staging.publish(manifest)
    except BaseException:
        staging.discard()
        raise


def _validate(opts: CompressOptions) -> _Inputs:
    loaded = load_recipe(opts.recipe)
    recipe = loaded.recipe
    model_name = opts.model or recipe.model.name
    if not model_name:
        raise EdgevitError(f"{loaded.path}: model.name is not set and no --model was given", "pass --model NAME_OR_FOLDER")
    checkpoint = opts.checkpoint or (Path(recipe.model.checkpoint) if recipe.model.checkpoint and not opts.model else None)
    needs = set(recipe.requires) | {r for p in recipe.passes for r in pass_spec(p.kind).requires}
    if "train_data" in needs and opts.train_data is None:
        raise EdgevitError(f"{loaded.path}: this recipe needs training images", "pass --train-data DIR (class/xxx.jpg)")
    if "calib_data" in needs and opts.calib_data is None and recipe.calibration.manifest is None:
        raise EdgevitError(f"{loaded.path}: this recipe needs calibration images", "pass --calib-data DIR")
    profiles = recipe_targets(loaded)  # the capability model: what no target can run fails here, in a second
    transport_for(recipe.profile.target, f"{loaded.path}: profile.target")  # fail now on a bad target, not after exporting
    eval_folder = scan_image_folder(opts.data, "--data") if opts.data else None
    scanned = {flag: scan_image_folder(folder, flag) for flag, folder in (
        ("--train-data", opts.train_data), ("--calib-data", opts.calib_data), ("--val-data", opts.val_data)) if folder is not None}
    if eval_folder is not None:
        scanned["--data"] = eval_folder
    _check_val_data(loaded, scanned)
    model_folder = model_name if Path(model_name).expanduser().exists() else None
    refuse_out_over_inputs(opts.out, {"recipe file": loaded.path, "model folder": model_folder, "checkpoint": checkpoint,
                                      "--data": opts.data, "--train-data": opts.train_data, "--calib-data": opts.calib_data,
                                      "--val-data": opts.val_data},
                           scanned=frozenset({"--data", "--train-data", "--calib-data", "--val-data"}))
    return _Inputs(loaded, model_name, checkpoint, profiles, eval_folder)


def _check_val_data(loaded: LoadedRecipe, scanned: dict[str, ImageFolder]) -> None:
    """--val-data calibrates what the exits pass decides (thresholds, speed gate): it shares
    no image with the images that judge the result (--data) or train the heads."""
    if "--val-data" not in scanned:
        return
    if not any(p.kind == "exits" for p in loaded.recipe.passes):
        raise EdgevitError(f"{loaded.path}: no exits pass reads --val-data", "drop --val-data, or add kind: exits to the recipe")
    if "--train-data" in scanned:
        require_same_classes(scanned["--val-data"], scanned["--train-data"])
    refuse_shared_images(scanned, "--val-data", {"--data": "the exit thresholds would be calibrated on the evaluation images",
                                                 "--train-data": "the thresholds would be calibrated on images the heads "
                                                                 "trained on"},
                         "give validation images held out of both (or leave --val-data out: a split of --train-data)")


def _run(opts: CompressOptions, inputs: _Inputs, stage: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    recipe = inputs.recipe
    torch.manual_seed(recipe.seed)
    progress.step(f"loading model {inputs.model_name}")
    loaded = load_model(inputs.model_name, inputs.checkpoint, recipe.model.pretrained, recipe.model.model_args)
    check_passes_supported(loaded.model, recipe.passes)  # a pass the model's family cannot take fails now, before any pass
    if inputs.eval_folder is not None:  # before any pass or export, not after them
        check_label_count(inputs.eval_folder, "--data", getattr(loaded.model, "num_classes", None), loaded.label_names)
    warnings: list[str] = []
    if loaded.random_weights:
        warnings.append(f"{inputs.model_name} has random weights: latency and size are real, accuracy is meaningless")
        progress.warn(warnings[-1])
    data_config = loaded.data_config()
    input_size = tuple(data_config["input_size"])

    calibration = resolve_calibration(recipe.calibration, opts.calib_data, opts.train_data, opts.data)
    if opts.train_data and opts.data and Path(opts.train_data).resolve() == Path(opts.data).resolve() and recipe.passes:
        warnings.append("--train-data is the evaluation set --data: fine-tuning / exit thresholds saw the test images")
        progress.warn(warnings[-1])
    if calibration.overlaps_eval and recipe.passes:
        warnings.append(f"calibration images ({calibration.source}) overlap the evaluation set --data")
        progress.warn(warnings[-1])

    original_stats = model_stats(loaded.model, input_size)
    # the model as loaded, for the float baseline every artifact is timed against (and its accuracy)
    original = copy.deepcopy(loaded.model).eval() if recipe.passes else None
    model, records, training = apply_passes(loaded, recipe, calibration, opts, input_size, original)
    final_stats = model_stats(model, input_size)
    save_model_folder(loaded, model, records, stage / "model")

    check_x = _check_batch(inputs.eval_folder, recipe, data_config, input_size)
    with torch.no_grad():  # a cascade is checked on every exit's logits, not only the last
        reference = ({k: v.numpy() for k, v in forward_all_exits(model, check_x).items()} if exit_specs(model)
                     else {OUTPUT_NAME: model(check_x).numpy()})
    plan = LoweringPlan.from_records(records)
    # intermediate graphs live in the staging folder (removed before publishing, and with
    # the whole staging folder on any failure)
    ectx = ExportContext(example_input=check_x, preprocessing=jsonable_config(data_config), label_names=loaded.label_names,
                         calibration=calibration, workdir=stage / ".work")
    transport = opts.transport or transport_for(recipe.profile.target)
    baselines = Baselines(original, ectx) if original is not None and recipe.profile.baseline else None
    artifacts, profiles, run_cache = [], {}, {}
    try:
        for profile in inputs.profiles:
            artifact, timing = _export_check_profile(model, plan, profile, ectx, stage, check_x, reference, transport, recipe,
                                                     loaded.random_weights, baselines)
            artifact, timing, published_plan = _against_float_form(model, plan, profile, ectx, stage, check_x, reference,
                                                                   transport, recipe, loaded.random_weights, baselines,
                                                                   artifact, timing, warnings)
            if artifact.get("baseline", {}).get("faster") is False:
                warnings.append(f"{artifact['name']}: not faster than the uncompressed model on {artifact['where_run']} "
                                f"({artifact['baseline']['speedup_cpu']:.2f}x CPU time, interleaved)")
                progress.warn(warnings[-1])
            if artifact["check"]["passed"] and artifact["checked_in"] == profile.runtime:
                exported = ExportedArtifact(stage / artifact["path"], published_plan.quantized, transport, recipe.profile.threads,
                                            recipe.profile.batch, opts.train_data, data_config, loaded.label_names, run_cache,
                                            ectx.cache.get(cascade_forms_key(stage / artifact["path"])), opts.val_data)
                warnings += _after_export(records, exported, artifact)
            artifacts.append(artifact)
            profiles[profile.name] = timing
    finally:
        shutil.rmtree(stage / ".work", ignore_errors=True)

    accuracy = None
    if inputs.eval_folder is not None:
        accuracy = _evaluate(model, original, loaded, inputs.eval_folder, data_config, recipe, stage, artifacts)
    cascade = None
    if exit_specs(model):
        cascade = _evaluate_cascades(loaded, inputs.eval_folder, data_config, recipe, stage, artifacts, transport)
        for name, measured in cascade.get("artifacts", {}).items():
            if measured.get("speedup_mean", 1.0) < 1.0:
                warnings.append(f"{name}: the cascade is slower than the same network without exits on the evaluation images "
                                f"({speedup_text(measured)} mean latency, report.cascade)")
                progress.warn(warnings[-1])

    calib_text = calibration.manifest_text()
    write_text(stage / "calibration.yaml", calib_text)
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": _model_section(loaded, model, data_config),
        "recipe": {"name": recipe.name, "path": inputs.loaded_recipe.path, "sha256": inputs.loaded_recipe.sha256, "seed": recipe.seed},
        "flops": {"before": original_stats["flops"], "after": final_stats["flops"], "input_size": list(input_size)},
        "params": {"before": original_stats["params"], "after": final_stats["params"]},
        "passes": records,
        "calibration": calibration.report(sha256_file(stage / "calibration.yaml")),
        "training": training,
        "thresholds": {k: {kk: vv for kk, vv in vars(v).items() if vv is not None} for k, v in CHECK_THRESHOLDS.items()},
        "artifacts": artifacts,
        "accuracy": accuracy,
        "profile": profiles,
        "cascade": cascade,
        "warnings": warnings,
        "versions": library_versions(),
    }
    write_report_files(stage, report)
    failed = [a for a in artifacts if not a["check"]["passed"]]
    return report, failed


def apply_passes(loaded: LoadedModel, recipe: Recipe, calibration: CalibrationSet, opts: CompressOptions, input_size,
                  teacher):
    """The recipe's passes in order; the recipe-level fine-tune (the whole stack distilled
    from ``teacher``, the model as loaded) runs once, right before the first pass that
    needs final weights (quantize calibrates on them, exits trains heads on them), or last."""
    model = loaded.model
    records: list[dict[str, Any]] = []
    training = None
    if not recipe.passes:
        return model, records, training
    ctx = PassContext(seed=recipe.seed, input_size=input_size, data_config=loaded.data_config(), label_names=loaded.label_names,
                      teacher=teacher, calibration=calibration,
                      train_data=opts.train_data, val_data=opts.val_data,
                      # random weights: a latency/size-only run (said in the report), so noise is as good as images
                      allow_synthetic_calibration=opts.allow_synthetic_calibration or loaded.random_weights)
    tuned = recipe.finetune is None
    for i, cfg in enumerate(recipe.passes):
        if not tuned and pass_spec(cfg.kind).needs_final_weights:
            training, tuned = _recipe_finetune(model, recipe, ctx, training), True
        progress.step(f"pass {i + 1}/{len(recipe.passes)}: {cfg.kind}")
        model, record = pass_impl(cfg.kind)().apply(model, cfg, ctx)
        model.eval()
        records.append(record.model_dump())
        if record.training:
            training = (training or []) + [{"pass": cfg.kind, **record.training}]
    if not tuned:
        training = _recipe_finetune(model, recipe, ctx, training)
    return model, records, training


def _recipe_finetune(model, recipe: Recipe, ctx: PassContext, training):
    from edgevit.training import finetune_if_asked

    progress.step("fine-tuning the whole stack (recipe finetune: distillation from the model as loaded)")
    record, why_not = finetune_if_asked(model, recipe.finetune, ctx)
    model.eval()
    if record is None:
        progress.warn(f"recipe finetune: {why_not}")
        return training
    return (training or []) + [{"pass": "recipe (whole stack)", **record}]


def _check_batch(folder: ImageFolder | None, recipe: Recipe, data_config, input_size) -> torch.Tensor:
    n = recipe.evaluation.check_batch
    if folder is not None:
        return load_images(folder.subset(n, recipe.seed + 1), data_config)
    return synthetic_images(n, input_size, recipe.seed + 1)


def _against_float_form(model, plan, profile: TargetProfile, ectx, stage: Path, check_x, reference, transport, recipe: Recipe,
                        random_weights: bool, baselines: Baselines | None, artifact: dict[str, Any], timing: dict[str, Any],
                        warnings: list[str]):
    """``profile.float_form``: the quantized artifact timed against the same compressed
    model in float (``edgevit.float_form``); where that is faster and the recipe says
    publish_faster, the float form replaces it and is checked and profiled like any
    artifact. Returns the artifact entry, its timing and the plan it was lowered from."""
    bundle_dir = stage / artifact["path"]
    if not float_form.wanted(recipe.profile.float_form, plan, artifact, json.loads((bundle_dir / "bundle.json").read_text())):
        return artifact, timing, plan
    exporter = runtime(profile.runtime).exporter_class()
    float_plan = plan.float_form()

    def export_float():
        progress.step(f"exporting the float form of the compressed model for {profile.name}")
        return exporter().export(model, float_plan, profile, ectx, ectx.scratch(f"float-{profile.name}"))

    comparison, bundle = float_form.measure(export_float, bundle_dir, transport, recipe.profile, check_x, reference,
                                            random_weights)
    if comparison["published"] == "float":
        shutil.rmtree(bundle_dir)
        bundle.path.rename(bundle_dir)  # both inside the staging folder: one file system
        artifact, timing = _export_check_profile(model, float_plan, profile, ectx, stage, check_x, reference, transport,
                                                 recipe, random_weights, baselines, Bundle(bundle_dir, bundle.data))
        plan = float_plan
    artifact["float_form"] = comparison
    line = float_form.warning(profile.name, comparison)
    if line:
        warnings.append(line)
        progress.warn(line)
    return artifact, timing, plan


def _export_check_profile(model, plan, profile: TargetProfile, ectx, stage: Path, check_x, reference, transport, recipe: Recipe,
                          random_weights: bool, baselines: Baselines | None, bundle: Bundle | None = None):
    """Export (unless ``bundle`` is already exported), check against PyTorch and time one artifact."""
    exporter = runtime(profile.runtime).exporter_class()
    if bundle is None:
        progress.step(f"exporting for {profile.name}")
        bundle = exporter().export(model, plan, profile, ectx, stage / "artifacts" / profile.name)
    p = recipe.profile
    standin = not runtime(profile.runtime).runs_here
    if standin:  # e.g. TensorRT: the graph is checked in a local runtime; nothing is timed here
        progress.step(f"checking {profile.name} in {profile.local_standin} as a stand-in ({profile.runtime} is not available here)")
    else:
        progress.step(f"checking and profiling {profile.name} on {transport.name} ({p.runs} runs, {p.threads} threads, batch {p.batch})")
    baseline = baselines.bundle_for(profile) if baselines is not None and not standin else None
    result = transport.run(bundle.path, runs=0 if standin else p.runs, warmup=p.warmup, threads=p.threads, batch=p.batch,
                           inputs=check_x.numpy(), runtime=profile.local_standin if standin else None, baseline=baseline)
    check = check_all_outputs(reference, result.outputs or {}, bundle.data["precision"], random_weights)
    data = result.data
    executed = data.pop("executed", None)
    if standin:
        data["where_run"] = f"check only: {profile.local_standin} on this machine as a stand-in; {profile.runtime} not run here"
        executed = None
    lint = runtime(profile.runtime).lint_bundle(bundle.path, bundle.data["model_file"], profile.runtime_version)
    if lint and lint["findings"]:
        first = lint["findings"][0]
        check = {**check, "passed": False,
                 "reason": f"{profile.runtime} {profile.runtime_version} lint: {len(lint['findings'])} finding(s), "
                           f"first {first['op']}: {first['message']}"}
    model_file = bundle.path / bundle.data["model_file"]
    artifact = {
        "name": profile.name,
        "target": profile.name,
        "runtime": profile.runtime,
        "format": profile.format,
        "precision": bundle.data["precision"],
        "executed_precision": "not run here" if standin else executed_precision(executed),
        "executed": executed,
        "time_by_kind": by_kind(executed["op_times"]) if executed and executed.get("op_times") else None,
        "simulated": bool(plan.simulated_layers),
        "simulated_layers": plan.simulated_layers,
        "where_run": data["where_run"],
        "checked_in": profile.local_standin if standin else profile.runtime,
        "reproducible": exporter.reproducible,
        "path": str(bundle.path.relative_to(stage)),
        "sha256": sha256_file(model_file),
        "size_bytes": bundle.size_bytes,
        "files": _file_entries(bundle.path),
        "check": check,
        "lint": lint,
    }
    if standin:
        timing = {"runtime": profile.runtime, "where_run": "not run",
                  "reason": f"{profile.runtime} engines are built and timed on the target device, not here"}
    else:
        timing = {k: data.get(k) for k in ("runtime", "runtime_version", "device", "threads", "batch", "runs", "warmup",
                                            "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
                                            "cpu_time_ms", "input_shapes", "load_avg", "peak_rss_mb", "where_run")}
        if "cascade" in bundle.data:
            timing["path"] = "every stage, no exit taken (worst case); the cascade's measured latency is in report.cascade"
        if baseline is not None:
            timing["baseline"] = data.get("baseline")
            artifact["baseline"] = comparison(data, artifact["size_bytes"], baseline)
            if "cascade" in bundle.data and artifact["baseline"].get("timed"):
                # timed through every stage (no exit taken): the cascade's real speed-up is
                # measured on images in report.cascade, so this worst case flags nothing
                artifact["baseline"].update(faster=None, what=artifact["baseline"]["what"] + "; cascade timed through "
                                            "every stage (no exit taken, its worst case): see the cascade section")
    return artifact, timing


def _file_entries(bundle_dir: Path) -> list[dict[str, Any]]:
    files = [bundle_dir / "bundle.json", *(bundle_dir / f for f in json.loads((bundle_dir / "bundle.json").read_text())["files"])]
    return [{"path": f.name, "sha256": sha256_file(f), "size_bytes": f.stat().st_size} for f in files]


def _after_export(records: list[dict[str, Any]], exported: ExportedArtifact, artifact: dict[str, Any]) -> list[str]:
    """Each pass that finishes its work on an exported artifact (``after_export``) does it
    now; what it adds goes into the artifact's report entry (its "warnings" into the
    run's), and changed files are re-hashed. Returns those warnings."""
    warnings: list[str] = []
    for record in records:
        hook = getattr(pass_impl(record["kind"])(), "after_export", None)
        added = hook(record, exported) if hook else None
        if added:
            warnings += added.pop("warnings", [])
            artifact.update(added)
            artifact["files"] = _file_entries(exported.bundle_dir)
    return warnings


def _evaluate(model, original, loaded: LoadedModel, folder: ImageFolder, data_config, recipe: Recipe, stage: Path,
              artifacts) -> dict[str, Any]:
    """top-1 of the compressed model in PyTorch, of each artifact, and of the model as
    loaded ("uncompressed": the accuracy the user had), on the same images."""
    runner = runner_module()
    predictors = {"pytorch": torch_predictor(model)}
    if original is not None:
        predictors["uncompressed"] = torch_predictor(original)
    for a in artifacts:
        session = runner.open_artifact(str(stage / a["path"]), recipe.profile.threads, runtime=a["checked_in"])
        predictors[a["name"]] = artifact_predictor(session, OUTPUT_NAME)
    return measure_top1(predictors, folder, recipe.evaluation.n, recipe.seed, data_config,
                        recipe.evaluation.batch_size, loaded.label_names,
                        change_against="uncompressed" if original is not None else None)


def _evaluate_cascades(loaded: LoadedModel, folder: ImageFolder | None, data_config, recipe: Recipe, stage: Path,
                       artifacts, transport) -> dict[str, Any]:
    """Each cascade artifact run as a cascade by the device runner on the evaluation images:
    exit histogram, latency per stage and end to end, accuracy, and the same network
    without exits interleaved for the speed-up."""
    if folder is None:
        return {"evaluated": False, "reason": "no --data given: exits and accuracy need real images"}
    samples = folder.subset(recipe.evaluation.cascade_n, recipe.seed)
    mapping, _ = label_map(folder.classes, loaded.label_names)
    images = load_images(samples, data_config).numpy()
    labels = np.array([mapping[y] for _, y in samples], dtype=np.int64)
    p = recipe.profile
    out: dict[str, Any] = {"evaluated": True, "images": len(samples), "data": str(folder.root), "artifacts": {}}
    for a in artifacts:
        if a["checked_in"] != a["runtime"]:
            out["artifacts"][a["name"]] = {"evaluated": False, "reason": f"{a['runtime']} not run here"}
            continue
        if "cascade" not in json.loads((stage / a["path"] / "bundle.json").read_text()):
            out["artifacts"][a["name"]] = {"evaluated": False, "reason": "published without exits (see the artifact's cascade_gate)"}
            continue
        progress.step(f"running the cascade {a['name']} on {len(samples)} images ({transport.name}, batch {p.batch})")
        result = transport.run(stage / a["path"], runs=0, warmup=0, threads=p.threads, batch=p.batch,
                               eval_set={"images": images, "labels": labels})
        out["artifacts"][a["name"]] = {**result.data["cascade"], "where_run": result.data.get("where_run")}
        if "exit_selection_on_target" in a:
            out["artifacts"][a["name"]]["exits_chosen_on_target"] = a["exit_selection_on_target"]
    return out


def _model_section(loaded: LoadedModel, model, data_config) -> dict[str, Any]:
    try:
        summary = adapter_for(model).summary()
    except ModelError:
        summary = {"family": "unsupported by passes (export only)"}
    return {
        "source": loaded.source, "architecture": loaded.architecture, "weights": loaded.weights,
        "random_weights": loaded.random_weights, "input_size": list(data_config["input_size"]),
        "data_config": jsonable_config(data_config),
        "structure": summary,
    }
