"""Compress runs for the bench, reused across sections and re-runs when nothing changed."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from edgevit import resources
from edgevit.bench.context import BenchContext
from edgevit.errors import CheckFailed
from edgevit.pipeline import CompressOptions, compress

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


