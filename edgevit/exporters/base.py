"""Target profiles, lowering plans, artifact bundles and the exporter registry.

A target profile (exporters/*.yaml) declares what one runtime can execute; the exporter
for its ``format`` gets the lowering plan (precision per layer + pass records) and the
calibration set and writes a bundle: the artifact files plus ``bundle.json``, the only
thing the device runner reads.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from edgevit.bundle import BUNDLE_SCHEMA_VERSION, validated_bundle
from edgevit.errors import RecipeError
from edgevit.lowering import LoweringPlan  # noqa: F401  (re-exported: exporters take plans)
from edgevit.profiles import TargetProfile, load_profile  # noqa: F401  (re-exported: exporters take profiles)



@dataclass
class ExportContext:
    """Shared by the exporters of one run, so work two targets need is done once."""

    example_input: torch.Tensor
    preprocessing: dict[str, Any] = field(default_factory=dict)  # timm data config: size, mean, std, crop
    label_names: list[str] | None = None
    calibration: Any = None
    cache: dict[str, Any] = field(default_factory=dict)
    # intermediate graphs: inside the run's staging folder, so every exit path removes them
    # (a context without one, e.g. in tests, gets a temporary folder removed at exit)
    workdir: Path | None = None

    def scratch(self, name: str) -> Path:
        """A fresh folder for intermediate files of this run."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="edgevit-export-"))
            atexit.register(shutil.rmtree, self.workdir, True)
        folder = self.workdir / f"{name}-{len(list(self.workdir.glob(name + '-*')))}"
        folder.mkdir(parents=True)
        return folder


@contextlib.contextmanager
def export_forms_applied(model: nn.Module, plan: LoweringPlan) -> Iterator[None]:
    """The plan's export form of each pass set on the model for one export, and the model's
    own forms restored afterwards, whatever happens (no exporter leaves its form behind)."""
    from edgevit.passes.specs import pass_impl

    with contextlib.ExitStack() as stack:
        for kind, form in sorted(plan.forms.items()):
            stack.enter_context(pass_impl(kind).export_form(model, form))
        yield


@dataclass
class Bundle:
    path: Path
    data: dict[str, Any]

    def write(self) -> "Bundle":
        """bundle.json, checked against the typed contract first (``edgevit.bundle``)."""
        validated_bundle(self.data, str(self.path / "bundle.json"))
        (self.path / "bundle.json").write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        return self

    @property
    def files(self) -> list[Path]:
        return [self.path / f for f in self.data["files"]]

    @property
    def size_bytes(self) -> int:
        """What is deployed: a cascade's reference model (shipped only to measure its
        speed-up on the device) does not count."""
        reference = set((self.data.get("reference_model") or {}).get("files", []))
        return sum(p.stat().st_size for p in self.files if p.name not in reference)


def reference_model_entry(files: list[str]) -> dict[str, Any]:
    return {"file": files[0], "files": files,
            "purpose": "the same network without exits, run interleaved with the cascade to measure its speed-up; not needed to deploy"}


def bundle_data(profile: TargetProfile, ctx: ExportContext, precision: str, model_file: str, files: list[str],
                inputs: list[dict], outputs: list[dict], session_options: dict[str, Any]) -> dict[str, Any]:
    return {
        "preprocessing": ctx.preprocessing,
        "label_names": ctx.label_names,
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "profile": profile.name,
        "format": profile.format,
        "runtime": profile.runtime,
        "precision": precision,
        "model_file": model_file,
        "files": files,
        "inputs": inputs,
        "outputs": outputs,
        "session_options": session_options,
    }


class Exporter(Protocol):
    format: ClassVar[str]
    reproducible: ClassVar[bool]  # what the exporter promises: same inputs, same bytes

    def export(self, model: nn.Module, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        ...



def check_plan_supported(plan: LoweringPlan, profile: TargetProfile) -> None:
    missing = plan.precisions() - set(profile.precisions)
    if missing:
        raise RecipeError(
            f"export profile '{profile.name}' cannot execute {', '.join(sorted(missing))}",
            f"it runs {', '.join(profile.precisions)}; change the recipe's precisions or drop this target",
        )
