"""One trial: the generated recipe -> training-free pre-check -> `edgevit compress` -> the
measured record. A plain function of picklable data, so the same code runs in this
process, in a storage worker on another host, or as a Ray task.

Everything measured comes from the compress run's report.json: top-1 of the exported
artifact on the validation split (drawn from the training images), p50 latency from the
device runner on the target, size of the artifact's files. The pre-check prunes hopeless
trials before the expensive part (fine-tuning, export, timing):
- accuracy: the passes applied training-free (no fine-tune), top-1 on the same split. With
  nothing to fine-tune that is the accuracy the trial would reach; with fine-tuning, it may
  recover at most ``recovery_pt`` points (a stated assumption, --recovery-pt).
- latency: fp32 latency x the FLOPs ratio x the lowest latency-per-FLOP factor measured so
  far on trials of the same precisions — an optimistic estimate from this study's data.
- size: parameters x the fewest bits any layer can get: a lower bound of the artifact.
"""
from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.tune.locks import LockSpec

HEAVY = ("model", "artifacts")  # what a trial's run folder sheds unless --keep-artifacts


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares."""

    train_split: str
    val_split: str
    export: str  # the export profile whose artifact is measured
    target: str  # the device's URL (recipe profile.target)
    lock: LockSpec
    calib_data: str | None = None
    keep_artifacts: bool = False
    verbose: bool = False
    # latency and size measured on this model instead (same family, e.g. the 224 x 224 timm
    # model of a network trained at 32 x 32): the same passes, training-free, random weights
    latency_model: str | None = None


@dataclass(frozen=True)
class Gates:
    """What the pre-check compares a trial with (all measured earlier in this study)."""

    baseline: dict[str, float]  # fp32: top1, latency_ms, size_mb, flops, params
    limits: dict[str, float]  # absolute budget
    max_drop: float
    recovery_pt: float
    latency_factors: dict[str, float] = field(default_factory=dict)  # precision signature -> min measured factor


@dataclass(frozen=True)
class TrialSpec:
    number: int
    values: dict[str, Any]
    recipe_text: str
    folder: str
    gates: Gates


def run_trial(spec: TrialSpec, ctx: TrialContext) -> dict[str, Any]:
    """-> {"state": complete | pruned | fail, "reason", "record", "number", "seconds"}."""
    t0 = time.monotonic()
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(spec.recipe_text)
    state, reason, record = "complete", None, {}
    try:
        with _quiet(not ctx.verbose):
            pre = precheck(recipe_path, ctx)
            record["precheck"] = pre
            reason = hopeless(pre, spec.gates)
            if reason:
                state = "pruned"
            else:
                record.update(compress_and_measure(recipe_path, folder / "run", ctx))
    except EdgevitError as exc:  # compress, check or device failed: recorded, the study goes on
        state, reason = "fail", exc.message
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a bug or a library error in one configuration must not end the study
        state = "fail"
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        (folder / "traceback.txt").write_text(traceback.format_exc())
    outcome = {"number": spec.number, "state": state, "reason": reason, "record": record, "values": spec.values,
               "seconds": time.monotonic() - t0}
    (folder / "record.json").write_text(json.dumps(outcome, indent=2, sort_keys=True, default=str) + "\n")
    return outcome


def compress_and_measure(recipe_path: Path, out: Path, ctx: TrialContext) -> dict[str, Any]:
    """`edgevit compress` of one recipe (timing under the device lock) -> measured record."""
    from edgevit.pipeline import CompressOptions, compress
    from edgevit.profiling import transport_for
    from edgevit.tune.locks import LockedTransport

    transport = LockedTransport(transport_for(ctx.target, "--target"), ctx.lock)
    published = compress(CompressOptions(recipe=str(recipe_path), out=out, data=Path(ctx.val_split),
                                         train_data=Path(ctx.train_split),
                                         calib_data=Path(ctx.calib_data) if ctx.calib_data else None,
                                         force=True, transport=transport))
    record = _published_record(published, ctx)
    if ctx.latency_model:
        from edgevit.tune.workers import recipe_yaml
        from edgevit.yamlfile import load_yaml

        raw = latency_recipe(load_yaml(recipe_path), ctx.latency_model)
        path = recipe_path.with_name("recipe-latency.yaml")
        path.write_text(recipe_yaml(raw, f"latency and size of {recipe_path.name} on {ctx.latency_model} (training-free)"))
        published = compress(CompressOptions(recipe=str(path), out=out.with_name(out.name + "-latency"),
                                             calib_data=Path(ctx.calib_data or ctx.train_split), force=True,
                                             transport=transport))
        timed = _published_record(published, ctx, with_accuracy=False)
        record.update({k: timed[k] for k in LATENCY_KEYS}, latency_model=ctx.latency_model)
    return {**record, "device_wait_s": round(transport.waited_s, 3), "device_holds": transport.holds}


LATENCY_KEYS = ("latency_ms", "latency_p90_ms", "cpu_time_ms", "latency_ms_vs_fp32", "size_mb", "executed_precision", "where_run",
                "device")


def latency_recipe(raw: dict[str, Any], model: str) -> dict[str, Any]:
    """The same passes on the latency model: no fine-tuning (it changes weights, not
    speed), the model's own defaults (model_args belong to the accuracy model)."""
    out = {k: v for k, v in raw.items() if k != "finetune"}  # a recipe-level fine-tune too
    out.update(name=f"{raw['name']}-latency", model={"name": model})
    out["passes"] = [{k: v for k, v in p.items() if k != "finetune"} for p in raw.get("passes") or []]
    return out


def _published_record(published: Path, ctx: TrialContext, with_accuracy: bool = True) -> dict[str, Any]:
    report = json.loads((published / "report.json").read_text())
    if not ctx.keep_artifacts:
        for name in HEAVY:
            shutil.rmtree(published / name, ignore_errors=True)
    return measure(report, ctx.export, with_accuracy)


def measure(report: dict[str, Any], export: str, with_accuracy: bool = True) -> dict[str, Any]:
    artifact = next(a for a in report["artifacts"] if a["name"] == export)
    timing = report["profile"][export]
    accuracy = report["accuracy"]
    top1 = {"top1": accuracy["top1"][export], "top1_pytorch": accuracy["top1"]["pytorch"],
            "val_images": accuracy["n"]} if with_accuracy else {}
    speedup = (artifact.get("baseline") or {}).get("speedup_p50")
    return {
        **top1, "latency_ms": timing["p50_ms"], "latency_p90_ms": timing["p90_ms"], "cpu_time_ms": timing["cpu_time_ms"],
        # the artifact's p50 over the fp32 export's, timed interleaved in this run (budget.py)
        "latency_ms_vs_fp32": 1.0 / speedup if speedup else None,
        "size_mb": artifact["size_bytes"] / 1e6, "flops": report["flops"]["after"], "params": report["params"]["after"],
        "executed_precision": artifact["executed_precision"], "where_run": timing["where_run"], "device": timing.get("device"),
        "precisions": signature_of(report["passes"]),
        "fine_tune": fine_tune_summary(report.get("training")) if with_accuracy else None,
    }


def fine_tune_summary(training: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """How much training a trial's fine-tunes really did. A fine-tune capped by wall time
    (``max_minutes``) sees fewer images on a loaded machine, so the same values can give
    another accuracy: the images seen say whether two trials are comparable."""
    if not training:
        return None
    return {"images_seen": sum(int(t.get("steps", 0)) * int(t.get("batch_size", 0)) for t in training),
            "epochs": [round(float(t.get("epochs", 0.0)), 3) for t in training],
            "stopped_by": sorted({str(t.get("stopped_by")) for t in training}),
            "wall_s": round(sum(float(t.get("wall_s", 0.0)) for t in training), 1)}


def signature_of(pass_records_or_configs: list[Any]) -> str:
    """The precisions a stack's passes plan ("fp32", "int8", "int4+int8"): trials with the
    same signature share a latency-per-FLOP factor."""
    from edgevit.passes.specs import pass_spec, pass_specs

    found: set[str] = set()
    for p in pass_records_or_configs:
        if isinstance(p, dict):  # a pass record: its config, revalidated
            cfg = pass_specs()[p["kind"]].config_type.model_validate(p["config"])
        else:
            cfg = p
        found |= pass_spec(cfg.kind).precisions(cfg)
    return "+".join(sorted(found)) or "fp32"


def _bits(precision: str) -> int:
    return int("".join(c for c in precision if c.isdigit()) or 32)


def precheck(recipe_path: Path, ctx: TrialContext) -> dict[str, Any]:
    """The trial's passes applied training-free (passes that need training images, and
    fine-tuning, left out): FLOPs, parameters and top-1 on the validation split."""
    import torch

    from edgevit.accuracy import measure_top1, torch_predictor
    from edgevit.calibration import resolve_calibration
    from edgevit.data import scan_image_folder
    from edgevit.flops import model_stats
    from edgevit.models import load_model
    from edgevit.passes.specs import pass_spec
    from edgevit.pipeline import CompressOptions, apply_passes
    from edgevit.recipe import load_recipe

    recipe = load_recipe(recipe_path).recipe
    free = [p.model_copy(update={"finetune": None}) if getattr(p, "finetune", None) is not None else p
            for p in recipe.passes if not pass_spec(p.kind).requires]
    # a recipe-level finetune block (the whole stack distilled) counts like a pass's own
    finetunes = (getattr(recipe, "finetune", None) is not None or len(free) < len(recipe.passes)
                 or any(getattr(p, "finetune", None) is not None for p in recipe.passes))
    torch.manual_seed(recipe.seed)
    loaded = load_model(recipe.model.name, recipe.model.checkpoint, recipe.model.pretrained, recipe.model.model_args)
    data_config = loaded.data_config()
    input_size = tuple(data_config["input_size"])
    train = Path(ctx.train_split)
    opts = CompressOptions(recipe=str(recipe_path), out=Path(ctx.val_split), train_data=train,
                           calib_data=Path(ctx.calib_data) if ctx.calib_data else None)
    calibration = resolve_calibration(recipe.calibration, opts.calib_data, train, None)
    before = model_stats(loaded.model, input_size)
    training_free = recipe.model_copy(update={"passes": free, "finetune": None})
    teacher = copy.deepcopy(loaded.model).eval()  # passes that score against the original model get it, as in compress
    model, _, _ = apply_passes(loaded, training_free, calibration, opts, input_size, teacher)
    after = model_stats(model, input_size)
    top1 = measure_top1({"pytorch": torch_predictor(model)}, scan_image_folder(ctx.val_split, "validation split"),
                        recipe.evaluation.n, recipe.seed, data_config, recipe.evaluation.batch_size,
                        loaded.label_names)["top1"]["pytorch"]
    precisions = signature_of(recipe.passes)
    min_bits = min([_bits(p) for p in precisions.split("+") if p != "fp32"] or [32])
    sized = sized_params(after["params"], before["params"], ctx.latency_model)
    return {"top1_training_free": top1, "flops": after["flops"], "flops_ratio": after["flops"] / before["flops"],
            "params": sized, "finetunes": finetunes, "precisions": precisions,
            "size_mb_lower_bound": sized * min_bits / 8 / 1e6}


# the share of parameters a pass keeps on the accuracy model, carried to the (often much
# larger) latency model, is an estimate: discounted so a trial that could fit is never cut
SIZE_ESTIMATE_MARGIN = 0.8


def sized_params(after: int, before: int, latency_model: str | None) -> int:
    """Parameters of the model whose artifact size the study measures: the trial's own, or,
    with a latency model (size and latency measured there), that model's parameter count
    scaled by the share the passes kept, times SIZE_ESTIMATE_MARGIN."""
    if not latency_model:
        return after
    from edgevit.models import load_model

    total = sum(p.numel() for p in load_model(latency_model).model.parameters())
    return int(total * after / before * SIZE_ESTIMATE_MARGIN)


def hopeless(pre: dict[str, Any], gates: Gates) -> str | None:
    """Why a trial cannot meet the budget (None: run it)."""
    from edgevit.tune.budget import drop_points

    drop = drop_points(pre["top1_training_free"], gates.baseline["top1"])
    allowed = gates.max_drop + (gates.recovery_pt if pre["finetunes"] else 0.0)
    if drop > allowed:
        how = f"--max-drop {gates.max_drop:g} + --recovery-pt {gates.recovery_pt:g} for fine-tuning" if pre["finetunes"] \
            else f"--max-drop {gates.max_drop:g}, nothing fine-tunes"
        return f"training-free top-1 {pre['top1_training_free']:.4f} is {drop:.2f} pt below fp32 (> {allowed:g}: {how})"
    limit = gates.limits.get("size_mb")
    if limit is not None and pre["size_mb_lower_bound"] > limit:
        return (f"size at least {pre['size_mb_lower_bound']:.2f} MB (about {pre['params']} parameters in the sized model at {pre['precisions']}) "
                f"> budget {limit:.2f} MB")
    limit = gates.limits.get("latency_ms")
    factor = gates.latency_factors.get(pre["precisions"])
    if limit is not None and factor is not None:
        estimate = gates.baseline["latency_ms"] * pre["flops_ratio"] * factor
        if estimate > limit:
            return (f"estimated latency {estimate:.2f} ms (fp32 {gates.baseline['latency_ms']:.2f} ms x FLOPs ratio "
                    f"{pre['flops_ratio']:.3f} x best measured factor {factor:.3f} of {pre['precisions']} trials) "
                    f"> budget {limit:.2f} ms")
    return None


def latency_factor(record: dict[str, Any], baseline: dict[str, float], side_by_side: bool = False) -> float:
    """Measured latency over (fp32 latency x FLOPs ratio): what the precisions buy beyond FLOPs.
    ``side_by_side`` (a relative latency limit): the record's own interleaved ratio to fp32
    stands for latency over fp32 latency, as the limit itself is judged (budget.py)."""
    ratio = record.get("latency_ms_vs_fp32") if side_by_side else None
    if ratio is None:
        ratio = record["latency_ms"] / baseline["latency_ms"]
    return ratio / (record["flops"] / baseline["flops"])


@contextlib.contextmanager
def _quiet(quiet: bool):
    """Compress's own step lines are silenced inside a trial (tune prints one line per trial)."""
    from edgevit import progress

    before = progress.console.quiet
    progress.console.quiet = quiet or before
    try:
        yield
    finally:
        progress.console.quiet = before
