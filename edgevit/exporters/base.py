"""Target profiles, lowering plans, artifact bundles and the exporter registry.

A target profile (exporters/*.yaml) declares what one runtime can execute; the exporter
for its ``format`` gets the lowering plan (precision per layer + pass records) and the
calibration set and writes a bundle: the artifact files plus ``bundle.json``, the only
thing the device runner reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from edgevit import resources
from edgevit.errors import RecipeError
from edgevit.schema import StrictModel, did_you_mean, first_error
from edgevit.yamlfile import load_yaml

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
BUNDLE_SCHEMA_VERSION = 1


class TargetProfile(StrictModel):
    name: str
    description: str = ""
    format: str = Field(description="exporter to use: onnx | openvino | litert")
    runtime: str
    runtime_version: str | None = Field(None, description="version the profile was written for")
    device: str = "cpu"
    opset: int = Field(18, ge=13, le=23)
    precisions: list[Precision] = Field(description="what the runtime can really execute")
    session_options: dict[str, Any] = Field(default_factory=dict, description="passed to the runtime by the runner")
    avoid_ops: list[str] = []
    export_forms: dict[str, str] = Field(default_factory=dict, description="per pass kind, the export form to use")
    local_standin: Literal["onnxruntime"] | None = Field(
        None, description="for a runtime absent here (TensorRT): the local runtime that checks the same graph; nothing is timed")
    float_precision: Literal["fp32", "fp16"] = Field(
        "fp32", description="precision of the layers the plan leaves in fp32 (fp16: fp16 weights; litert exporter)")

    @model_validator(mode="after")
    def _float_precision_runs(self) -> "TargetProfile":
        if self.float_precision not in self.precisions:
            raise ValueError(f"float_precision {self.float_precision} is not in precisions {self.precisions}")
        return self


def load_profile(name_or_path: str) -> TargetProfile:
    path = Path(name_or_path)
    if not path.is_file():
        path = resources.shipped("exporters") / f"{name_or_path}.yaml"
        if not path.is_file():
            available = resources.names("exporters")
            raise RecipeError(f"export profile '{name_or_path}' not found" + did_you_mean(name_or_path, available), f"available: {', '.join(available)}")
    try:
        profile = TargetProfile.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise RecipeError(f"{path}: {first_error(exc, TargetProfile)}") from None
    from edgevit.profiling.transport import LOCAL_RUNTIMES

    if profile.runtime not in LOCAL_RUNTIMES and profile.local_standin is None:
        raise RecipeError(f"{path}: runtime '{profile.runtime}' cannot run here and no local_standin is set",
                          "set local_standin: onnxruntime so the exported graph is at least checked")
    if profile.format not in EXPORTERS:
        raise RecipeError(f"{path}: format: no exporter for '{profile.format}'" + did_you_mean(profile.format, EXPORTERS), f"known: {', '.join(sorted(EXPORTERS))}")
    return profile


@dataclass
class LoweringPlan:
    """What the passes decided, for the exporters: precision per layer and the records."""

    default_precision: str = "fp32"
    layer_precision: dict[str, str] = field(default_factory=dict)
    int4_block: dict[str, int] = field(default_factory=dict)
    activations: str = "fp32"
    activation_clip_percentile: float | None = None  # None: min/max calibration
    simulated_layers: list[str] = field(default_factory=list)  # fake-quant weights, executed by fp32 kernels
    pass_records: list[dict[str, Any]] = field(default_factory=list)
    cascade: dict[str, Any] | None = None  # exits pass structure: export one graph per stage

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> "LoweringPlan":
        plan = cls(pass_records=records)
        for record in records:
            if record["kind"] == "exits":
                plan.cascade = record["structure"]
            if record["kind"] == "quantize":
                simulated = record["structure"].get("simulated_layers", [])
                plan.simulated_layers += simulated
                # what the runtime executes: simulated layers carry grid values in fp32 weights
                plan.layer_precision.update({n: "fp32" if n in simulated else p
                                             for n, p in record["structure"]["layer_precision"].items()})
                plan.int4_block.update(record["structure"]["int4_block"])
                plan.activations = record["structure"]["activations"]
                plan.activation_clip_percentile = record["structure"].get("activation_clip_percentile")
        return plan

    @property
    def quantized(self) -> bool:
        return any(p in ("int8", "int4") for p in self.layer_precision.values())

    def precisions(self) -> set[str]:
        return {self.default_precision, *self.layer_precision.values()}

    @property
    def summary_precision(self) -> str:
        """The precision whose check thresholds apply: the planned low precision, or fp32."""
        low = {p for p in self.layer_precision.values() if p != self.default_precision}
        return low.pop() if len(low) == 1 else ("mixed" if low else self.default_precision)


@dataclass
class ExportContext:
    """Shared by the exporters of one run, so work two targets need is done once."""

    example_input: torch.Tensor
    preprocessing: dict[str, Any] = field(default_factory=dict)  # timm data config: size, mean, std, crop
    label_names: list[str] | None = None
    calibration: Any = None
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bundle:
    path: Path
    data: dict[str, Any]

    def write(self) -> "Bundle":
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

    def export(self, model: nn.Module, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        ...


EXPORTERS: dict[str, type[Exporter]] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    EXPORTERS[cls.format] = cls
    return cls


def check_plan_supported(plan: LoweringPlan, profile: TargetProfile) -> None:
    missing = plan.precisions() - set(profile.precisions)
    if missing:
        raise RecipeError(
            f"export profile '{profile.name}' cannot execute {', '.join(sorted(missing))}",
            f"it runs {', '.join(profile.precisions)}; change the recipe's precisions or drop this target",
        )
