"""`edgevit compress`: recipe -> model -> passes -> export per target -> check -> evaluate
-> profile -> report, published atomically."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit import progress
from edgevit.adapters import adapter_for
from edgevit.artifacts import Staging, sha256_file
from edgevit.calibration import CalibrationSet, resolve_calibration
from edgevit.accuracy import artifact_predictor, measure_top1, torch_predictor
from edgevit.data import ImageFolder, jsonable_config, label_map, load_images, scan_image_folder, synthetic_images
from edgevit.errors import CheckFailed, EdgevitError, ModelError
from edgevit.cascade import exit_specs, forward_all_exits
from edgevit.evaluation import CHECK_THRESHOLDS, check_all_outputs
from edgevit.exporters import EXPORTERS, ExportContext, LoweringPlan, TargetProfile, load_profile
from edgevit.exporters.onnx import OUTPUT_NAME
from edgevit.flops import model_stats
from edgevit.models import LoadedModel, load_model, save_model_folder
from edgevit.passes.base import PASS_REGISTRY, PassContext
from edgevit.profiling import LOCAL_RUNTIMES, runner_module, transport_for
from edgevit.profiling.executed import executed_precision
from edgevit.recipe import LoadedRecipe, Recipe, load_recipe
from edgevit.report import REPORT_SCHEMA_VERSION, render_markdown
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
    force: bool = False
    keep_failed: bool = False
    allow_synthetic_calibration: bool = False


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
    needs = set(recipe.requires) | {r for p in recipe.passes for r in PASS_REGISTRY[p.kind].requires}
    if "train_data" in needs and opts.train_data is None:
        raise EdgevitError(f"{loaded.path}: this recipe needs training images", "pass --train-data DIR (class/xxx.jpg)")
    if "calib_data" in needs and opts.calib_data is None and recipe.calibration.manifest is None:
        raise EdgevitError(f"{loaded.path}: this recipe needs calibration images", "pass --calib-data DIR")
    profiles = [load_profile(name) for name in recipe.exports]
    transport_for(recipe.profile.target)  # fail now on an unknown target, not after exporting
    eval_folder = scan_image_folder(opts.data, "--data") if opts.data else None
    for flag, folder in (("--train-data", opts.train_data), ("--calib-data", opts.calib_data)):
        if folder is not None:
            scan_image_folder(folder, flag)
    return _Inputs(loaded, model_name, checkpoint, profiles, eval_folder)


def _run(opts: CompressOptions, inputs: _Inputs, stage: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    recipe = inputs.recipe
    torch.manual_seed(recipe.seed)
    progress.step(f"loading model {inputs.model_name}")
    loaded = load_model(inputs.model_name, inputs.checkpoint, recipe.model.pretrained, recipe.model.model_args)
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
    model, records, training = _apply_passes(loaded, recipe, calibration, opts, input_size)
    final_stats = model_stats(model, input_size)
    save_model_folder(loaded, model, records, stage / "model")

    check_x = _check_batch(inputs.eval_folder, recipe, data_config, input_size)
    with torch.no_grad():  # a cascade is checked on every exit's logits, not only the last
        reference = ({k: v.numpy() for k, v in forward_all_exits(model, check_x).items()} if exit_specs(model)
                     else {OUTPUT_NAME: model(check_x).numpy()})
    plan = LoweringPlan.from_records(records)
    ectx = ExportContext(example_input=check_x, preprocessing=jsonable_config(data_config), label_names=loaded.label_names, calibration=calibration)
    transport = transport_for(recipe.profile.target)
    artifacts, profiles, holdout = [], {}, None
    for profile in inputs.profiles:
        artifact, timing = _export_check_profile(model, plan, profile, ectx, stage, check_x, reference, transport, recipe,
                                                 loaded.random_weights)
        if plan.cascade is not None and plan.quantized and artifact["check"]["passed"] and artifact["checked_in"] == profile.runtime:
            holdout = holdout or _exits_holdout(records, opts.train_data, data_config, loaded.label_names)  # read once per run
            artifact["cascade_calibration"] = _recalibrate_cascade(stage / artifact["path"], records, holdout, transport, recipe)
            artifact["files"] = _file_entries(stage / artifact["path"])
        artifacts.append(artifact)
        profiles[profile.name] = timing

    accuracy = None
    if inputs.eval_folder is not None:
        accuracy = _evaluate(model, loaded, inputs.eval_folder, data_config, recipe, stage, artifacts)
    cascade = None
    if exit_specs(model):
        cascade = _evaluate_cascades(loaded, inputs.eval_folder, data_config, recipe, stage, artifacts, transport)

    calib_text = calibration.manifest_text()
    (stage / "calibration.yaml").write_text(calib_text)
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
    (stage / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (stage / "report.md").write_text(render_markdown(report))
    failed = [a for a in artifacts if not a["check"]["passed"]]
    return report, failed


def _apply_passes(loaded: LoadedModel, recipe: Recipe, calibration: CalibrationSet, opts: CompressOptions, input_size):
    model = loaded.model
    records: list[dict[str, Any]] = []
    training = None
    if not recipe.passes:
        return model, records, training
    teacher = copy.deepcopy(model).eval()
    ctx = PassContext(seed=recipe.seed, input_size=input_size, data_config=loaded.data_config(), label_names=loaded.label_names,
                      teacher=teacher, calibration=calibration,
                      train_data=opts.train_data,
                      # random weights: a latency/size-only run (said in the report), so noise is as good as images
                      allow_synthetic_calibration=opts.allow_synthetic_calibration or loaded.random_weights)
    for i, cfg in enumerate(recipe.passes):
        progress.step(f"pass {i + 1}/{len(recipe.passes)}: {cfg.kind}")
        model, record = PASS_REGISTRY[cfg.kind]().apply(model, cfg, ctx)
        model.eval()
        records.append(record.model_dump())
        if record.training:
            training = (training or []) + [{"pass": cfg.kind, **record.training}]
    return model, records, training


def _check_batch(folder: ImageFolder | None, recipe: Recipe, data_config, input_size) -> torch.Tensor:
    n = recipe.evaluation.check_batch
    if folder is not None:
        return load_images(folder.subset(n, recipe.seed + 1), data_config)
    return synthetic_images(n, input_size, recipe.seed + 1)


def _export_check_profile(model, plan, profile: TargetProfile, ectx, stage: Path, check_x, reference, transport, recipe: Recipe,
                          random_weights: bool):
    progress.step(f"exporting for {profile.name}")
    bundle = EXPORTERS[profile.format]().export(model, plan, profile, ectx, stage / "artifacts" / profile.name)
    p = recipe.profile
    standin = profile.runtime not in LOCAL_RUNTIMES
    if standin:  # e.g. TensorRT: the graph is checked in a local runtime; nothing is timed here
        progress.step(f"checking {profile.name} in {profile.local_standin} as a stand-in ({profile.runtime} is not available here)")
    else:
        progress.step(f"checking and profiling {profile.name} on {transport.name} ({p.runs} runs, {p.threads} threads, batch {p.batch})")
    result = transport.run(bundle.path, runs=0 if standin else p.runs, warmup=p.warmup, threads=p.threads, batch=p.batch,
                           inputs=check_x.numpy(), runtime=profile.local_standin if standin else None)
    check = check_all_outputs(reference, result.outputs or {}, bundle.data["precision"], random_weights)
    data = result.data
    executed = data.pop("executed", None)
    if standin:
        data["where_run"] = f"check only: {profile.local_standin} on this machine as a stand-in; {profile.runtime} not run here"
        executed = None
    lint = _tensorrt_lint(bundle, profile) if profile.runtime == "tensorrt" else None
    if lint and lint["findings"]:
        first = lint["findings"][0]
        check = {**check, "passed": False,
                 "reason": f"TensorRT {profile.runtime_version} lint: {len(lint['findings'])} finding(s), first {first['op']}: {first['message']}"}
    model_file = bundle.path / bundle.data["model_file"]
    artifact = {
        "name": profile.name,
        "target": profile.name,
        "runtime": profile.runtime,
        "format": profile.format,
        "precision": bundle.data["precision"],
        "executed_precision": "not run here" if standin else executed_precision(profile.format, executed),
        "executed": executed,
        "simulated": bool(plan.simulated_layers),
        "simulated_layers": plan.simulated_layers,
        "where_run": data["where_run"],
        "checked_in": profile.local_standin if standin else profile.runtime,
        "reproducible": True,
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
                                            "cpu_time_ms", "load_avg", "peak_rss_mb", "where_run")}
        if "cascade" in bundle.data:
            timing["path"] = "every stage, no exit taken (worst case); the cascade's measured latency is in report.cascade"
    return artifact, timing


def _file_entries(bundle_dir: Path) -> list[dict[str, Any]]:
    files = [bundle_dir / "bundle.json", *(bundle_dir / f for f in json.loads((bundle_dir / "bundle.json").read_text())["files"])]
    return [{"path": f.name, "sha256": sha256_file(f), "size_bytes": f.stat().st_size} for f in files]


def _exits_holdout(records, train_data: Path, data_config, label_names) -> tuple[np.ndarray, np.ndarray]:
    """The exits pass's held-out images (drawn again from --train-data) and labels."""
    from edgevit.passes.exits import holdout_samples

    samples = holdout_samples(next(r for r in records if r["kind"] == "exits"), train_data, label_names)
    return load_images(samples, data_config).numpy(), np.array([y for _, y in samples])


def _recalibrate_cascade(bundle_dir: Path, records, holdout: tuple[np.ndarray, np.ndarray], transport, recipe: Recipe):
    """Thresholds of a quantized cascade re-calibrated on what the runtime really runs: the
    exits pass's held-out images through the lowered stages (on the target), same budget."""
    from edgevit.passes.exits import thresholds_for

    record = next(r for r in records if r["kind"] == "exits")
    images, labels = holdout
    progress.step(f"re-calibrating the exit thresholds of {bundle_dir.name} on its quantized stages ({len(labels)} held-out images)")
    p = recipe.profile
    outputs = transport.run(bundle_dir, runs=0, warmup=0, threads=p.threads, batch=p.batch, inputs=images).outputs
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    stages = bundle["cascade"]["stages"]
    exit_logits = [outputs[s["name"]] for s in stages[:-1]]
    metrics = record["metrics"]
    thresholds, result = thresholds_for(exit_logits, outputs[stages[-1]["name"]], labels, record["structure"]["rule"],
                                        record["config"]["max_accuracy_drop"], metrics["flops_per_stage"], metrics["flops_full_model"])
    before = [s["threshold"] for s in stages[:-1]]
    for stage_entry, t in zip(stages, thresholds):
        stage_entry["threshold"] = t
    (bundle_dir / "bundle.json").write_text(json.dumps(bundle, indent=2, sort_keys=True) + "\n")
    return {"on": "the quantized stages in this runtime", "thresholds_from_pytorch": before, "thresholds": thresholds, **result}


def _tensorrt_lint(bundle, profile: TargetProfile) -> dict[str, Any]:
    from edgevit.exporters.tensorrt_lint import lint

    findings = lint(bundle.path / bundle.data["model_file"], profile.runtime_version)
    return {"tensorrt_version": profile.runtime_version, "findings": findings[:50], "count": len(findings),
            "passed": not findings}


def _evaluate(model, loaded: LoadedModel, folder: ImageFolder, data_config, recipe: Recipe, stage: Path, artifacts) -> dict[str, Any]:
    runner = runner_module()
    predictors = {"pytorch": torch_predictor(model)}
    for a in artifacts:
        session = runner.open_artifact(str(stage / a["path"]), recipe.profile.threads, runtime=a["checked_in"])
        predictors[a["name"]] = artifact_predictor(session, OUTPUT_NAME)
    return measure_top1(predictors, folder, recipe.evaluation.n, recipe.seed, data_config,
                        recipe.evaluation.batch_size, loaded.label_names)


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
        progress.step(f"running the cascade {a['name']} on {len(samples)} images ({transport.name}, batch {p.batch})")
        result = transport.run(stage / a["path"], runs=0, warmup=0, threads=p.threads, batch=p.batch,
                               eval_set={"images": images, "labels": labels})
        out["artifacts"][a["name"]] = {**result.data["cascade"], "where_run": result.data.get("where_run")}
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
