"""Compress runs for the bench, reused across sections and re-runs when nothing changed."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from edgevit import resources
from edgevit.bench.context import BenchContext
import yaml

from edgevit.errors import CheckFailed, EdgevitError
from edgevit.pipeline import CompressOptions, compress
from edgevit.recipe import resolve_recipe_path
from edgevit.yamlfile import load_yaml

RECIPE = ("name: bench_quant\nexports: [x86-onnxruntime, x86-openvino]\nevaluation: {{n: {n}, batch_size: 250}}\n"
          "profile: {{runs: 3, warmup: 1}}\npasses: {passes}\n")


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """Hash of edgevit's own source and the device runner: a reused run must come from this code."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(root.rglob("*.py")) + [resources.runner_script()]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:8]


def compress_run(ctx: BenchContext, label: str, model: str, passes: str | None, data: Path | None, calib: Path | None, n: int,
         recipe_text: str | None = None, train: Path | None = None) -> tuple[Path, str | None]:
    """A compress run of one variant; returns (run folder, check failure or None).

    A published run with the same recipe hash, model, data and edgevit source is reused:
    its accuracy and size do not depend on when it ran (latency is always timed afresh,
    side by side)."""
    text = recipe_text or RECIPE.format(passes=passes, n=n)
    recipe = ctx.work / "recipe.yaml"
    recipe.write_text(text)
    slug = "".join(c if c.isalnum() else "_" for c in f"{Path(model).name}-{label}") + f"-{_code_fingerprint()}"
    out = ctx.work / slug
    if (out / "report.json").is_file():
        old = json.loads((out / "report.json").read_text())
        same_data = (old["accuracy"] or {}).get("dataset") == (str(data) if data else None)
        if old["recipe"]["sha256"] == hashlib.sha256(text.encode()).hexdigest() and old["model"]["source"] == model and same_data:
            return out, None
    try:
        return compress(CompressOptions(recipe=str(recipe), out=out, model=model, data=data, calib_data=calib,
                                        train_data=train, force=True, keep_failed=True)), None
    except CheckFailed as exc:  # published as <out>.failed: timed and labelled, never hidden
        return out.with_name(out.name + ".failed"), exc.message




def shipped_recipe_text(name: str, exports: list[str], n: int, latency_run: bool = True) -> str:
    """A shipped recipe as shipped, with the evaluation subset, cascade images and export
    targets fixed so every recipe is measured alike (timing is done by the section, interleaved).
    A recipe's ``profile.float_form`` decision is made by the latency run (the 224 model,
    at the sections' 1 thread, 20 interleaved runs); the accuracy run on the small reference
    model keeps the quantized artifacts (``published_top1`` reads the float form's top-1)."""
    recipe = load_yaml(resolve_recipe_path(name))
    float_form = (recipe.get("profile") or {}).get("float_form", "skip") if latency_run else "skip"
    recipe["evaluation"] = {**recipe.get("evaluation", {}), "n": n, "batch_size": 250, "cascade_n": n}
    recipe["exports"] = exports
    recipe["profile"] = ({"runs": 3, "warmup": 1, "threads": 2, "batch": 1, "baseline": False} if float_form == "skip" else
                         {"runs": 20, "warmup": 3, "threads": 1, "batch": 1, "baseline": False, "float_form": float_form})
    return yaml.safe_dump(recipe, sort_keys=False)


def published_top1(acc_report: dict[str, Any], lat_artifact: dict[str, Any]) -> float:
    """top-1 of what the latency run published for this target: where that is the float form
    (``profile.float_form``), the accuracy run's PyTorch top-1 (the compressed model in fp32,
    which the float form matches at fp32 check tolerances); else the artifact's own top-1."""
    top1 = acc_report["accuracy"]["top1"]
    if (lat_artifact.get("float_form") or {}).get("published") == "float":
        return top1["pytorch"]
    return top1[lat_artifact["name"]]


def shipped_recipe_run(ctx: BenchContext, recipe: str, model: str, data: Path | None, train: Path | None, notes: list[str],
                       exports: list[str], n: int) -> dict | None:
    """``compress_run`` of a shipped recipe; None (with a note) where it does not apply."""
    try:
        run, failed = compress_run(ctx, recipe, model, None, data, train, n,
                                   recipe_text=shipped_recipe_text(recipe, exports, n, latency_run=data is None),
                                   train=train)
    except EdgevitError as exc:  # e.g. token reduction on Swin, exits without training images
        notes.append(f"{recipe} on {Path(model).name}: not applicable ({exc.message})")
        return None
    if failed:
        notes.append(f"{recipe} on {Path(model).name}: numerical check failed, published as .failed: {failed}")
    return {"dir": run, "report": json.loads((run / "report.json").read_text())}
