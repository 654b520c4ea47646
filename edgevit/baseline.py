"""The uncompressed model on the same target, in the same run: what every compressed
artifact is compared with.

Users meet "optimised" artifacts that are slower than the float model and find out late.
So every `compress` run with passes exports the model as it was loaded (fp32, no pass) for
each target that is timed, and the device runner times it interleaved with the artifact
in one process (``--baseline``): the speed-up is measured side by side on the target, not
read from two runs. The baseline bundles live in the staging work folder and are not
published (their size is recorded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.profiles import TargetProfile


class Baselines:
    """Baseline bundles of one run, exported on demand (one per target, graphs shared
    through their own export context so they never mix with the compressed model's)."""

    def __init__(self, original: nn.Module, template: ExportContext):
        self.original = original
        self.ctx = ExportContext(example_input=template.example_input, preprocessing=template.preprocessing,
                                 label_names=template.label_names, calibration=None, workdir=template.workdir)
        self.bundles: dict[str, Path] = {}

    def bundle_for(self, profile: TargetProfile) -> Path:
        if profile.name not in self.bundles:
            from edgevit import progress
            from edgevit.capabilities import runtime

            progress.step(f"exporting the uncompressed model for {profile.name} (the baseline it is timed against)")
            exporter = runtime(profile.runtime).exporter_class()
            bundle = exporter().export(self.original, LoweringPlan(), profile, self.ctx,
                                       self.ctx.scratch(f"baseline-{profile.name}"))
            self.bundles[profile.name] = bundle.path
        return self.bundles[profile.name]


def comparison(timing: dict[str, Any], artifact_size: int, baseline_dir: Path) -> dict[str, Any]:
    """Speed-up and size ratio of an artifact against its baseline (timed interleaved by
    the runner); ``faster`` is False when the artifact did not beat the float model."""
    import json

    base = timing.get("baseline") or {}
    files = json.loads((baseline_dir / "bundle.json").read_text())["files"]
    base_size = sum((baseline_dir / f).stat().st_size for f in files)
    if "cpu_time_ms" not in base:
        return {"timed": False, "reason": base.get("error", "the runner returned no baseline timing"),
                "size_bytes": base_size, "size_ratio": base_size / artifact_size if artifact_size else None}
    speedup = timing.get("speedup_cpu")
    return {
        "timed": True,
        "what": "the loaded model without any pass, fp32, same runtime and target, timed interleaved with the artifact",
        "cpu_time_ms": base["cpu_time_ms"], "p50_ms": base["p50_ms"], "rounds": base.get("rounds"),
        "speedup_cpu": speedup, "speedup_p50": timing.get("speedup_p50"),
        "size_bytes": base_size, "size_ratio": base_size / artifact_size if artifact_size else None,
        "faster": bool(speedup is not None and speedup > 1.0),
    }
