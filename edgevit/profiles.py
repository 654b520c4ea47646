"""Export target profiles (exporters/*.yaml): one runtime on one kind of device, what it
executes and how edgevit lowers for it. Read and checked against the runtime's declared
capabilities (``edgevit.capabilities``) without importing torch or any runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from edgevit import resources
from edgevit.capabilities import Precision, runtime
from edgevit.errors import RecipeError
from edgevit.schema import StrictModel, did_you_mean, first_error
from edgevit.yamlfile import load_yaml


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
        raise RecipeError(f"{path}: {first_error(exc, TargetProfile)}", "see README 'Export profiles' for the fields") from None
    caps = runtime(profile.runtime, f"{path}: ")
    if profile.format not in caps.formats:
        raise RecipeError(f"{path}: format: {caps.name} does not load '{profile.format}'" + did_you_mean(profile.format, caps.formats),
                          f"{caps.name} loads {', '.join(caps.formats)}")
    beyond = sorted(set(profile.precisions) - set(caps.precisions))
    if beyond:
        raise RecipeError(f"{path}: precisions: {caps.name} does not execute {', '.join(beyond)}",
                          f"it executes {', '.join(caps.precisions)} (runtimes/{caps.name}.yaml)")
    _check_export_forms(path, profile)
    if not caps.runs_here and profile.local_standin is None:
        raise RecipeError(f"{path}: runtime '{profile.runtime}' cannot run here and no local_standin is set",
                          "set local_standin: onnxruntime so the exported graph is at least checked")
    return profile


def _check_export_forms(path: Path, profile: TargetProfile) -> None:
    """export_forms keys are lowering choices or pass kinds that have export forms."""
    from edgevit.lowering import LOWERING_CHOICES
    from edgevit.passes.specs import pass_specs

    choices = {**LOWERING_CHOICES, **{k: tuple(s.export_forms) for k, s in pass_specs().items() if s.export_forms}}
    for key, value in profile.export_forms.items():
        if key not in choices:
            raise RecipeError(f"{path}: export_forms: unknown key '{key}'" + did_you_mean(key, choices),
                              f"known: {', '.join(sorted(choices))}")
        if value not in choices[key]:
            raise RecipeError(f"{path}: export_forms.{key}: unknown '{value}'" + did_you_mean(value, choices[key]),
                              f"one of {', '.join(choices[key])}")
