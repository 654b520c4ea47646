"""`edgevit tune`: everything checked before any trial runs, then the study.

Order (each a one-line error, exit 2, nothing measured yet): budget grammar, recipe + its
search space, the export profile (it must be timed: a stand-in runtime has no latency),
target (URL or fleet file), model, image folders, --out (one study per folder), storage,
Ray; then the fp32 baseline on the target (an unreachable target fails here, exit 2).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevit import progress
from edgevit.errors import EdgevitError, RunnerError
from edgevit.tune import study as studies
from edgevit.tune.budget import parse_budget
from edgevit.tune.locks import LockSpec
from edgevit.yamlfile import load_yaml

SAMPLERS = ("tpe", "nsga2", "random", "grid")
_FLEET = re.compile(r"^(.+\.ya?ml)(?::([^/]+))?$")


@dataclass
class TuneOptions:
    recipe: str
    budget: str
    train_data: Path
    out: Path
    model: str | None = None
    checkpoint: Path | None = None
    target: str = "local"
    max_drop: float = 1.0
    trials: int = 20
    data: Path | None = None
    val_data: Path | None = None  # validation images the model never saw (default: a split of train_data)
    calib_data: Path | None = None
    resume: bool = False
    storage: str | None = None
    workers: int = 1
    ray_address: str | None = None
    sampler: str = "tpe"
    export: str | None = None
    val_images: int = 500
    recovery_pt: float = 5.0
    stop_on_budget: bool = False
    keep_artifacts: bool = False
    verbose: bool = False
    latency_model: str | None = None
    max_minutes: float | None = None  # no trial starts after this (a running one finishes)


def trial_profile(profile: dict[str, Any], device: "Device", budget: Any) -> dict[str, Any]:
    """The recipe's profile section for every trial: timed on the study's device."""
    out = {**profile, "target": device.url, **({"threads": device.threads} if device.threads else {}),
           **({"batch": device.batch} if device.batch else {})}
    if "size_mb" in budget.metrics and out.get("float_form") == "publish_faster":
        out["float_form"] = "skip"  # a size budget measures the quantized file: a faster float form must not replace it
    return out


@dataclass(frozen=True)
class Device:
    name: str  # what the lock is named after
    url: str
    threads: int | None = None
    batch: int | None = None


def resolve_device(target: str) -> Device:
    """A target URL, or FLEET.yaml[:DEVICE] (a fleet file of `edgevit profile --targets`)."""
    from edgevit.profiling import transport_for

    m = _FLEET.match(target)
    if m and Path(m.group(1)).is_file():
        from edgevit.profiling.fleet import load_fleet

        fleet = load_fleet(Path(m.group(1)))
        names = [d.name for d in fleet.devices]
        wanted = m.group(2) or (names[0] if len(names) == 1 else None)
        if wanted not in names:
            raise EdgevitError(f"--target {target}: " + (f"no device '{wanted}'" if wanted else "several devices"),
                               f"write --target {m.group(1)}:NAME with NAME one of {', '.join(names)}")
        d = fleet.devices[names.index(wanted)]
        return Device(d.name, d.target, d.threads, d.batch)
    transport_for(target, "--target")  # a malformed URL fails now
    return Device(target.split("?", 1)[0], target)


def tune(opts: TuneOptions) -> dict[str, Any]:
    from edgevit.capabilities import runtime
    from edgevit.data import scan_image_folder
    from edgevit.profiles import load_profile
    from edgevit.recipe import load_recipe

    budget = parse_budget(opts.budget)
    if opts.sampler not in SAMPLERS:
        raise EdgevitError(f"--sampler {opts.sampler}: unknown", f"one of {', '.join(SAMPLERS)}")
    if opts.trials < 1 or opts.workers < 1 or opts.val_images < 1 or opts.max_drop < 0 or opts.recovery_pt < 0:
        raise EdgevitError("--trials, --workers and --val-images must be >= 1; --max-drop and --recovery-pt >= 0",
                           "fix the number")
    loaded = load_recipe(opts.recipe)
    recipe = loaded.recipe
    if not recipe.search:
        raise EdgevitError(f"{loaded.path}: no search: block, nothing to tune",
                           "add search: {passes[0].flops_reduction: {low: 0.1, high: 0.5}} (see README 'edgevit tune')")
    if opts.sampler == "grid":
        for key, rng in recipe.search.items():
            rng.grid(f"{loaded.path}: search.{key}")
    export = opts.export or (recipe.exports[0] if recipe.exports else None)
    if export is None:
        raise EdgevitError(f"{loaded.path}: exports is empty: tune measures an exported artifact", "give --export PROFILE")
    profile = load_profile(export)
    if not runtime(profile.runtime).runs_here:
        raise EdgevitError(f"--export {export}: {profile.runtime} is not timed by edgevit, so it has no latency to tune on",
                           "choose an export profile whose runtime runs here or on the target (ONNX Runtime, OpenVINO, LiteRT)")
    device = resolve_device(opts.target)
    if opts.latency_model:
        from edgevit.passes.specs import pass_spec

        needs = [p.kind for p in recipe.passes if pass_spec(p.kind).requires]
        if needs:
            raise EdgevitError(f"--latency-model: the {needs[0]} pass needs training images, so it cannot be timed "
                               "training-free on another model", "drop --latency-model and tune on one model")
    if opts.ray_address:
        from edgevit.tune.cluster import probe

        probe(opts.ray_address)  # before --out or any storage is touched
    model = opts.model or recipe.model.name
    if not model:
        raise EdgevitError(f"{loaded.path}: model.name is not set and no --model was given", "pass --model NAME_OR_FOLDER")
    if Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())  # the chosen recipes run from any folder
    checkpoint = opts.checkpoint or (Path(recipe.model.checkpoint) if recipe.model.checkpoint and not opts.model else None)
    scanned = {flag: scan_image_folder(folder, flag) for flag, folder in (
        ("--train-data", opts.train_data), ("--data", opts.data), ("--calib-data", opts.calib_data),
        ("--val-data", opts.val_data)) if folder is not None}
    if opts.val_data is not None:
        _refuse_overlap(scanned)

    raw = load_yaml(Path(loaded.path))
    raw.pop("search", None)
    raw["model"] = {**(raw.get("model") or {}), "name": model,
                    "checkpoint": str(checkpoint.resolve()) if checkpoint else None}
    raw["exports"] = [export]
    raw["profile"] = trial_profile(raw.get("profile") or {}, device, budget)
    raw.setdefault("passes", [])
    _check_trial_recipes(raw, recipe.search)

    fields = {"recipe_name": recipe.name, "recipe_sha256": loaded.sha256, "model": model,
              "checkpoint": str(checkpoint) if checkpoint else None, "target": device.url, "device": device.name,
              "export": export, "budget": str(budget), "max_drop": opts.max_drop, "val_images": opts.val_images,
              "train_data": str(Path(opts.train_data).resolve()), "sampler": opts.sampler, "recovery_pt": opts.recovery_pt,
              "latency_model": opts.latency_model,
              **({"val_data": str(Path(opts.val_data).resolve())} if opts.val_data else {})}  # older studies keep their name
    name = studies.study_identity(fields)
    shared = opts.storage is not None
    storage_url = opts.storage or f"sqlite:///{(opts.out / 'study.db').resolve()}"
    if shared:
        storage = studies.open_storage(storage_url)  # unreachable: fails before --out is touched
    studies.claim_out(opts.out, name, {**fields, "storage": studies.mask_url(storage_url)}, opts.resume, shared)
    if not shared:
        storage = studies.open_storage(storage_url)

    use_ray = opts.workers > 1 or opts.ray_address is not None
    lock = LockSpec("ray" if use_ray else "file", device.name, str((opts.out / "locks").resolve()))
    with _ray(use_ray, opts) as ray_address:
        summary = _study(opts, storage, name, raw, recipe, budget, device, export, lock, shared, scanned)
    summary["ray"] = ray_address
    return summary


def _check_trial_recipes(raw: dict[str, Any], search: dict[str, Any]) -> None:
    """A trial recipe at the first value of every range, validated in full (schema,
    composition, capability of the export target) before anything runs."""
    from edgevit.recipe import load_recipe, recipe_targets
    from edgevit.tune.space import apply_values
    from edgevit.tune.workers import recipe_yaml

    probe = apply_values(raw, {key: rng.candidates()[0] for key, rng in search.items()})
    with tempfile.TemporaryDirectory(prefix="edgevit-tune-") as tmp:
        path = Path(tmp) / "trial-recipe.yaml"
        path.write_text(recipe_yaml(probe, "probe"))
        recipe_targets(load_recipe(path))


@contextlib.contextmanager
def _ray(use: bool, opts: TuneOptions):
    if not use:
        yield None
        return
    from edgevit.tune.cluster import ray_session

    with ray_session(opts.workers, opts.ray_address, opts.verbose) as address:
        yield address


def _sampler(kind: str, seed: int, trials: int, search: dict[str, Any]) -> Any:
    import optuna

    # constraints (budget, drop) reach TPE / NSGA-II through Trial.set_constraint (workers.Session.tell)
    if kind == "grid":
        class AskTellGrid(optuna.samplers.GridSampler):
            """GridSampler calls study.stop() once the grid is covered, which Optuna allows
            only inside study.optimize; tune's loop stops by itself when every point is measured."""

            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                return None

        return AskTellGrid({k: rng.grid(k) for k, rng in search.items()}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        # a generation of a third of the trials (4..50): NSGA-II with one generation is random search
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, trials // 3)), seed=seed)
    # TPE's random start-up: a quarter of the trials, 2..10 (Optuna's default 10 would be all of a short study)
    return optuna.samplers.TPESampler(n_startup_trials=max(2, min(10, trials // 4)), seed=seed, multivariate=True)


def _study(opts: TuneOptions, storage: Any, name: str, raw: dict[str, Any], recipe: Any, budget: Any, device: Device,
           export: str, lock: LockSpec, shared: bool, scanned: dict[str, Any]) -> dict[str, Any]:
    """``scanned``: the image folders read at start, by flag (not listed again here)."""
    import optuna

    from edgevit.tune.output import write_outputs
    from edgevit.tune.space import short_name
    from edgevit.tune.split import make_split
    from edgevit.tune.trial import TrialContext
    from edgevit.tune.workers import Session, run_here, run_on_ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    val, train, split = make_split(scanned["--train-data"], opts.out, opts.val_images, recipe.seed, scanned.get("--val-data"))
    ctx = TrialContext(train_split=str(train), val_split=str(val), export=export, target=device.url,
                       lock=lock, calib_data=str(Path(opts.calib_data).resolve()) if opts.calib_data else None,
                       keep_artifacts=opts.keep_artifacts, verbose=opts.verbose, latency_model=opts.latency_model)
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=["maximize"] + ["minimize"] * len(budget.metrics))
    # seeded, but never replaying a sequence: a resumed study would re-draw its first values,
    # and workers sharing a storage would draw the same start-up values
    seed = recipe.seed + len(study.get_trials(deepcopy=False)) + (os.getpid() if shared else 0)
    study.sampler = _sampler(opts.sampler, seed, opts.trials, recipe.search)
    reaped = studies.reap_interrupted(study, single_host=not shared)
    if reaped:
        progress.warn(f"trial(s) {', '.join(map(str, reaped))} were interrupted (worker died): failed with that reason, "
                      "their values queued to run again")
    if "baseline" not in study.user_attrs:
        measured = _baseline(raw, opts.out / "baseline", ctx, device)
        if "baseline" not in study.user_attrs:  # another worker measured it meanwhile: the study keeps the first
            study.set_user_attr("baseline", measured)
    session = Session(study=study, name=name, out=opts.out, raw=raw, space=dict(recipe.search), ctx=ctx, budget=budget,
                      max_drop=opts.max_drop, recovery_pt=opts.recovery_pt, trials=opts.trials,
                      stop_on_budget=opts.stop_on_budget,
                      deadline=time.monotonic() + 60 * opts.max_minutes if opts.max_minutes else None)
    b = session.baseline
    c = studies.counts(study)
    scored_on = "--val-data images" if opts.val_data else "held-out training images"
    if not opts.val_data and not c["finished"]:
        progress.warn("trials are scored on images held out of --train-data: if the model was trained on them, every "
                      "compression's top-1 loss reads larger there than on new images (README 'edgevit tune'); "
                      "--val-data DIR scores on held-out validation images instead")
    progress.say("tune:", "bold cyan", f"study {name} ({'resumed, ' if c['finished'] else ''}{c['finished']}/{opts.trials} "
                 f"trials done); fp32 on {device.name}: top-1 {b['top1']:.4f} on {split['val_images']} {scored_on}, "
                 f"{b['latency_ms']:.3f} ms, {b['size_mb']:.3f} MB; budget {budget} -> "
                 + ", ".join(f"{m} <= {v:.4g}" for m, v in session.limits.items()) + f", max drop {opts.max_drop:g} pt",
                 soft_wrap=True)
    if opts.workers > 1 or opts.ray_address:
        run_on_ray(session, opts.workers)
    else:
        run_here(session)
    rows = studies.rows(study)
    summary = write_outputs(opts.out, name, rows, b, str(budget), session.limits, opts.max_drop,
                            lambda key: short_name(key, raw["passes"]))
    if opts.data is not None and summary["chosen"]:
        summary["final"] = _final_reports(opts, summary["chosen"], ctx)
        (opts.out / "final.json").write_text(json.dumps(summary["final"], indent=2, sort_keys=True) + "\n")
    summary["wall_s"] = time.monotonic() - session.started
    summary["ran_here"] = session.ran_here
    return summary


def _refuse_overlap(scanned: dict[str, Any]) -> None:
    """--val-data shares no image with the test set, the training or the calibration images."""
    from edgevit.data import refuse_shared_images

    refuse_shared_images(scanned, "--val-data", {"--data": "the test set must never score trials",
                                                 "--train-data": "trials would be scored on images they are fine-tuned on",
                                                 "--calib-data": "trials would be scored on their calibration images"},
                         "give held-out validation images (or leave --val-data out: a split of --train-data)")


def baseline_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """The study's recipe without its passes, and without a recipe-level fine-tune (there is
    nothing to recover from; compress refuses one without passes)."""
    return {**{k: v for k, v in raw.items() if k != "finetune"}, "name": f"{raw['name']}-fp32", "passes": []}


def _baseline(raw: dict[str, Any], folder: Path, ctx: Any, device: Device) -> dict[str, Any]:
    """The fp32 model (no pass) through the same export, target and split: what top-1
    drops and relative budgets are measured against. Also the target's reachability test."""
    from edgevit.tune.trial import compress_and_measure
    from edgevit.tune.workers import recipe_yaml

    base = baseline_recipe(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(recipe_yaml(base, "edgevit tune: the fp32 baseline of the study"))
    progress.step(f"measuring the fp32 baseline on {device.name}")
    try:
        return compress_and_measure(folder / "recipe.yaml", folder / "run", ctx)
    except RunnerError as exc:
        raise EdgevitError(f"--target {device.url}: the fp32 baseline could not be run there: {exc.message}",
                           "check that the target is reachable and has python3 + the runtime (`edgevit profile --target`)") from None


def _final_reports(opts: TuneOptions, chosen: dict[str, int], ctx: Any) -> dict[str, Any]:
    """The chosen recipes once more on --data (the test set: used only here), with the whole
    --train-data for fine-tuning, as a user would run them."""
    from edgevit.pipeline import CompressOptions, compress

    out: dict[str, Any] = {}
    labels = {number: label for label, number in reversed(list(chosen.items()))}  # one run per trial, first label
    for number, label in labels.items():
        progress.step(f"final report of the chosen recipe {label} (trial {number}) on --data {opts.data}")
        published = compress(CompressOptions(recipe=str(opts.out / "chosen" / f"{label}.yaml"), out=opts.out / "final" / label,
                                             data=opts.data, train_data=opts.train_data, calib_data=opts.calib_data, force=True))
        report = json.loads((published / "report.json").read_text())
        out[label] = {"trial": number, "also": [k for k, v in chosen.items() if v == number and k != label],
                      "run": str(published), "top1": report["accuracy"]["top1"],
                      "profile": {k: v.get("p50_ms") for k, v in report["profile"].items()}}
    return out
