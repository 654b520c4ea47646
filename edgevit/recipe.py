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
from edgevit.passes.base import PassConfig
from edgevit.training_config import FinetuneConfig
from edgevit.passes.specs import pass_specs
from edgevit.schema import StrictModel, did_you_mean, first_error, seed_field
from edgevit.tune.space import SearchRange, check_space
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
    seed: int = seed_field()


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
    baseline: bool = Field(True, description="time the uncompressed model beside each artifact, interleaved (speed-up)")
    float_form: Literal["skip", "time", "publish_faster"] = Field(
        "skip", description="time each quantized artifact against the same compressed model in float, interleaved on the "
        "target (time), and publish the float form where it is faster (publish_faster): integer kernels do not pay on "
        "every target")


class Recipe(StrictModel):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    seed: int = seed_field(description="seeds sampling, synthetic inputs, fine-tuning")
    model: ModelSpec = ModelSpec()
    requires: list[Requirement] = []
    passes: list[PassConfig] = []
    finetune: FinetuneConfig | None = Field(
        None, description="one distillation fine-tune of the whole stack from the model as loaded (needs --train-data)")
    exports: list[str] = Field(default_factory=list, description="export profile names from exporters/")
    calibration: CalibrationSpec = CalibrationSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    profile: ProfileSpec = ProfileSpec()
    search: dict[str, SearchRange] = Field(default_factory=dict, description="edgevit tune: ranges of pass parameters")


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
        raise RecipeError(f"{path}: passes: must be a list of pass blocks, got {type(raw_passes).__name__}",
                          "write each pass as a list item: `passes: [{kind: prune, ...}]`")
    passes = [_validate_pass(path, i, block) for i, block in enumerate(raw_passes)]
    try:
        recipe = Recipe.model_validate({**data, "passes": passes})
    except ValidationError as exc:
        raise RecipeError(f"{path}: {first_error(exc, Recipe)}", "see README 'Recipes' for the schema") from None
    _check_exports_exist(path, recipe.exports)
    _check_composition(path, [p.kind for p in recipe.passes])
    _check_recipe_finetune(path, recipe)
    check_space(str(path), recipe.search, raw_passes, lambda kind: pass_specs()[kind].config_type,
                lambda i, block: _validate_pass(path, i, block))  # a search path naming no parameter fails here
    return LoadedRecipe(recipe=recipe, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _validate_pass(path: Path, index: int, block: Any) -> PassConfig:
    where = f"{path}: passes[{index}]"
    if not isinstance(block, dict) or "kind" not in block:
        raise RecipeError(f"{where}: each pass is a mapping with a 'kind' key", "e.g. `- kind: prune`")
    kind = block["kind"]
    specs = pass_specs()
    if not isinstance(kind, str) or kind not in specs:  # a list or mapping here is unhashable
        known = sorted(specs)
        raise RecipeError(
            f"{where}.kind: unknown '{kind}'; expected one of {', '.join(known) or '(no passes registered)'}"
            + did_you_mean(str(kind), known),
            "fix the kind or remove the pass",
        )
    config_type = specs[kind].config_type
    try:
        return config_type.model_validate(block)
    except ValidationError as exc:
        raise RecipeError(f"{where}.{first_error(exc, config_type)}", f"see the '{kind}' pass in the README") from None


def _check_composition(path: Path, kinds: list[str]) -> None:
    """Orders and combinations the passes cannot honour (each pass declares its own rules
    in ``edgevit.passes.specs``), refused before any work."""
    specs = pass_specs()
    for i, kind in enumerate(kinds):
        spec = specs[kind]
        if spec.unique and kinds.count(kind) > 1:
            raise RecipeError(f"{path}: passes: more than one {kind} pass", f"give one {kind} pass")
        later = [k for k in kinds[i + 1:] if spec.followers is not None and k not in spec.followers]
        if later:
            allowed = ", ".join(sorted(spec.followers or ())) or "no pass"
            raise RecipeError(f"{path}: passes: {later[0]} after {kind}: only {allowed} may follow {kind}",
                              f"move {later[0]} before {kind}")
        earlier = [k for k in kinds[:i] if k in spec.not_after]
        if earlier:
            raise RecipeError(f"{path}: passes: {earlier[0]} before {kind} is not allowed",
                              f"put {earlier[0]} after {kind}")


def _check_recipe_finetune(path: Path, recipe: Recipe) -> None:
    if recipe.finetune is None:
        return
    if not recipe.passes:
        raise RecipeError(f"{path}: finetune: there is no pass to recover from", "remove the finetune block")
    specs = pass_specs()
    for i, cfg in enumerate(recipe.passes):
        why = specs[cfg.kind].recipe_finetune_conflict(cfg)
        if why:
            raise RecipeError(f"{path}: finetune: passes[{i}] ({cfg.kind}): {why}",
                              f"fine-tune inside the {cfg.kind} pass (its finetune block) instead")


def _check_exports_exist(path: Path, names: list[str]) -> None:
    available = resources.names("exporters")
    for i, name in enumerate(names):
        if name not in available and not Path(name).is_file():
            raise RecipeError(
                f"{path}: exports[{i}]: unknown export profile '{name}'" + did_you_mean(name, available),
                f"available: {', '.join(available)}",
            )


def recipe_targets(loaded: LoadedRecipe) -> list[Any]:
    """The recipe's export profiles, crossed with its passes by the capability model:
    what no target can execute is refused here, before any model is loaded."""
    from edgevit.capabilities import check_recipe_targets
    from edgevit.profiles import load_profile

    profiles = [load_profile(name) for name in loaded.recipe.exports]
    check_recipe_targets(loaded.path, list(loaded.recipe.passes), profiles)
    return profiles
