"""Recipes: what to do to a model, as strict, validated data.

A recipe is YAML read with the strict loader (no duplicate keys, no aliases) and
validated by pydantic with unknown keys rejected. Each entry of ``passes`` is validated
by the config type its ``kind`` registered (see ``edgevit.passes.base``), so a new pass
plugs in without touching this file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from edgevit import resources
from edgevit.errors import RecipeError
from edgevit.passes.base import PASS_REGISTRY, PassConfig
from edgevit.schema import StrictModel, did_you_mean, first_error
from edgevit.yamlfile import load_yaml

Requirement = Literal["train_data", "calib_data"]


class ModelSpec(StrictModel):
    name: str | None = Field(None, description="timm model name or a local timm model folder")
    pretrained: bool = Field(False, description="ask timm for pretrained weights (needs a local cache offline)")
    checkpoint: str | None = Field(None, description=".safetensors or .pth state dict to load")
    model_args: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model kwargs")


class CalibrationSpec(StrictModel):
    manifest: str | None = Field(None, description="name in calibration/ or a path to a manifest YAML")
    n: int = Field(64, ge=1, le=100_000)
    seed: int = 0


class EvaluationSpec(StrictModel):
    n: int | None = Field(None, ge=1, description="seeded random subset of --data; all images if omitted")
    batch_size: int = Field(64, ge=1, le=4096)
    check_batch: int = Field(8, ge=1, le=256, description="images in the fixed batch of the numerical check")
    cascade_n: int = Field(1000, ge=1, description="images of --data the early-exit cascade is run on (latency + exits)")


class ProfileSpec(StrictModel):
    target: str = "local"
    runs: int = Field(100, ge=1, le=100_000)
    warmup: int = Field(10, ge=0, le=10_000)
    threads: int = Field(2, ge=1, le=1024)
    batch: int = Field(1, ge=1, le=4096)


class Recipe(StrictModel):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    seed: int = 0
    model: ModelSpec = ModelSpec()
    requires: list[Requirement] = []
    passes: list[PassConfig] = []
    exports: list[str] = Field(default_factory=list, description="export profile names from exporters/")
    calibration: CalibrationSpec = CalibrationSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    profile: ProfileSpec = ProfileSpec()


class LoadedRecipe(StrictModel):
    recipe: Recipe
    path: str
    sha256: str


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path that exists, else the name of a shipped recipe (with or without .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.shipped("recipes")
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    candidate = shipped / f"{stem}.yaml"
    if path.parent == Path(".") and candidate.is_file():
        return candidate
    names = [p.stem for p in sorted(shipped.glob("*.yaml"))]
    raise RecipeError(
        f"{name_or_path}: no such recipe file or shipped recipe" + did_you_mean(stem, names),
        f"shipped recipes: {', '.join(names) or 'none'}; `edgevit recipes` lists them",
    )


def load_recipe(name_or_path: str | Path) -> LoadedRecipe:
    path = resolve_recipe_path(name_or_path)
    data = load_yaml(path)
    raw_passes = data.pop("passes", []) or []
    if not isinstance(raw_passes, list):
        raise RecipeError(f"{path}: passes: must be a list of pass blocks, got {type(raw_passes).__name__}")
    passes = [_validate_pass(path, i, block) for i, block in enumerate(raw_passes)]
    try:
        recipe = Recipe.model_validate({**data, "passes": passes})
    except ValidationError as exc:
        raise RecipeError(f"{path}: {first_error(exc, Recipe)}", "see README 'Recipes' for the schema") from None
    _check_exports_exist(path, recipe.exports)
    _check_composition(path, [p.kind for p in recipe.passes])
    return LoadedRecipe(recipe=recipe, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _validate_pass(path: Path, index: int, block: Any) -> PassConfig:
    where = f"{path}: passes[{index}]"
    if not isinstance(block, dict) or "kind" not in block:
        raise RecipeError(f"{where}: each pass is a mapping with a 'kind' key", "e.g. `- kind: prune`")
    kind = block["kind"]
    if kind not in PASS_REGISTRY:
        known = sorted(PASS_REGISTRY)
        raise RecipeError(
            f"{where}.kind: unknown '{kind}'; expected one of {', '.join(known) or '(no passes registered)'}"
            + did_you_mean(str(kind), known),
            "fix the kind or remove the pass",
        )
    config_type = PASS_REGISTRY[kind].config_type
    try:
        return config_type.model_validate(block)
    except ValidationError as exc:
        raise RecipeError(f"{where}.{first_error(exc, config_type)}", f"see the '{kind}' pass in the README") from None


def _check_composition(path: Path, kinds: list[str]) -> None:
    """Orders and combinations the passes cannot honour, refused before any work."""
    if "exits" in kinds and kinds.count("exits") > 1:
        raise RecipeError(f"{path}: passes: more than one exits pass", "give one exits pass with all its exits")
    if "exits" in kinds and any(k != "quantize" for k in kinds[kinds.index("exits") + 1:]):
        raise RecipeError(f"{path}: passes: only quantize may follow exits (heads are trained on the final backbone)",
                          "move the exits block after prune / evit / tome")
    if "exits" in kinds and "quantize" in kinds and kinds.index("quantize") < kinds.index("exits"):
        raise RecipeError(f"{path}: passes: quantize before exits would train the heads on the fp32 backbone",
                          "put quantize after exits: the thresholds are then re-calibrated on the quantized stages")


def _check_exports_exist(path: Path, names: list[str]) -> None:
    available = resources.names("exporters")
    for i, name in enumerate(names):
        if name not in available and not Path(name).is_file():
            raise RecipeError(
                f"{path}: exports[{i}]: unknown export profile '{name}'" + did_you_mean(name, available),
                f"available: {', '.join(available)}",
            )
