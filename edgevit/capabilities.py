"""The capability model: what each runtime executes, crossed with what each pass needs.

Runtimes declare themselves as data (``runtimes/<name>.yaml``: formats, precisions, int4
blocks, features such as cascades or scatter-with-reduction, the extra that installs them
and a probe). Passes declare, from their config, the precisions and features they need
and the export forms they have (``edgevit.passes.specs``). ``check_recipe_targets``
crosses a recipe with its export profiles before any model is loaded, so an impossible
combination costs a second, not a training run. Nothing here imports torch.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from edgevit import resources
from edgevit.errors import RecipeError
from edgevit.schema import StrictModel, did_you_mean, first_error
from edgevit.yamlfile import load_yaml

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
Feature = Literal["cascade", "scatter_reduce", "dynamic_batch", "conditional_graph", "int4"]


class RuntimeCapabilities(StrictModel):
    name: str
    description: str = ""
    exporter: str = Field(pattern=r"^edgevit\.[\w.]+:\w+$", description="edgevit class 'module:Class' that writes its bundles")
    formats: list[str] = Field(min_length=1, description="artifact formats this runtime loads")
    precisions: list[Precision] = Field(min_length=1, description="what it executes as real kernels")
    int4_blocks: list[int] = Field(default_factory=list, description="int4 block sizes its blocked kernels take")
    features: list[Feature] = Field(default_factory=list)
    feature_min_version: dict[Feature, str] = Field(
        default_factory=dict, description="a feature present only from this runtime version on")
    module: str | None = Field(None, description="Python module whose presence means the runtime is installed here")
    package: str | None = Field(None, description="pip distribution of the runtime, for the versions in every report")
    extra: str | None = Field(None, description="edgevit extra that installs it (pip install 'edgevit[EXTRA]')")
    runs_here: bool = Field(description="the device runner can execute it on this machine")
    lint: str | None = Field(None, pattern=r"^edgevit\.[\w.]+:\w+$",
                             description="edgevit function 'module:name' that lints an exported bundle for this runtime")
    device_build: str | None = Field(
        None, pattern=r"^edgevit\.[\w.]+:\w+$",
        description="edgevit function 'module:name' giving the bundle.json fields of a build done on the device (engines)")

    def device_build_fields(self, profile: Any, plan: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.device_build is None:
            return {}
        module, _, name = self.device_build.partition(":")
        return getattr(importlib.import_module(module), name)(profile, plan, inputs)

    def lint_bundle(self, bundle_dir: Path, model_file: str, version: str | None) -> dict[str, Any] | None:
        """The runtime's own graph lint (e.g. TensorRT's parser table), or None if it has none."""
        if self.lint is None:
            return None
        module, _, name = self.lint.partition(":")
        return getattr(importlib.import_module(module), name)(bundle_dir / model_file, version)

    def has(self, feature: str, version: str | None) -> bool:
        """``feature`` at ``version`` (a profile's pinned runtime_version; None = newest)."""
        if feature not in self.features:
            return False
        floor = self.feature_min_version.get(feature)  # type: ignore[call-overload]
        return floor is None or version is None or _version(version) >= _version(floor)

    def exporter_class(self) -> Any:
        """The exporter that writes this runtime's bundles (imported on first use)."""
        module, _, name = self.exporter.partition(":")
        return getattr(importlib.import_module(module), name)

    def available(self) -> bool:
        """Installed on this machine (the probe); a runtime that never runs here is not."""
        return self.runs_here and (self.module is None or importlib.util.find_spec(self.module) is not None)

    def install_hint(self) -> str:
        if self.extra:
            return f"install it: `make install` or pip install 'edgevit[{self.extra}]'"
        return "reinstall edgevit (`make install`)"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def runtimes() -> dict[str, RuntimeCapabilities]:
    """Every runtime declaration, by name: the shipped ones and those in the folders of
    $EDGEVIT_RUNTIME_PATH."""
    return _runtimes(tuple(resources.runtime_dirs()))


@functools.cache
def _runtimes(folders: tuple[Path, ...]) -> dict[str, RuntimeCapabilities]:
    found: dict[str, RuntimeCapabilities] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.yaml")):
            caps = load_runtime(path)
            if caps.name in found:
                raise RecipeError(f"{path}: runtime '{caps.name}' is declared twice", "remove one of the declarations")
            found[caps.name] = caps
    return found


def load_runtime(path: Path) -> RuntimeCapabilities:
    try:
        caps = RuntimeCapabilities.model_validate(load_yaml(path))
    except ValidationError as exc:
        raise RecipeError(f"{path}: {first_error(exc, RuntimeCapabilities)}", "fix the runtime declaration") from None
    if caps.name != path.stem:
        raise RecipeError(f"{path}: name '{caps.name}' differs from the file name", f"name it {path.stem}")
    return caps


def runtime(name: str, where: str = "") -> RuntimeCapabilities:
    known = runtimes()
    if name not in known:
        raise RecipeError(f"{where}runtime: unknown '{name}'" + did_you_mean(name, known),
                          f"declared runtimes: {', '.join(sorted(known))} (runtimes/*.yaml)")
    return known[name]


def check_recipe_targets(recipe_path: str, passes: list[Any], profiles: list[Any]) -> None:
    """Refuse, before any model is loaded, a pass a target cannot execute: one line naming
    the pass, the profile and the fix (raises RecipeError)."""
    from edgevit.passes.specs import pass_spec

    for profile in profiles:
        caps = runtime(profile.runtime, f"export profile '{profile.name}': ")
        for i, cfg in enumerate(passes):
            spec = pass_spec(cfg.kind)
            where = f"{recipe_path}: passes[{i}] ({cfg.kind}) x export profile '{profile.name}'"
            missing = sorted(spec.precisions(cfg) - set(profile.precisions))
            if missing:
                raise RecipeError(f"{where}: {', '.join(missing)} is not executed there "
                                  f"(it runs {', '.join(profile.precisions)})",
                                  spec.precision_fix(cfg, set(profile.precisions)) + f", or drop '{profile.name}' from exports")
            for feature in sorted(spec.features(cfg)):
                if not caps.has(feature, profile.runtime_version):
                    raise RecipeError(f"{where}: needs {feature.replace('_', ' ')}, which {caps.name}"
                                      f"{' ' + profile.runtime_version if profile.runtime_version else ''} does not support",
                                      f"drop '{profile.name}' from exports, or the {cfg.kind} pass")
            resolve_export_form(spec, cfg, profile, caps, where)
            if "int4" in spec.precisions(cfg):
                blocks = spec.int4_blocks(cfg)
                bad = sorted(b for b in blocks if b not in caps.int4_blocks)
                if bad:
                    raise RecipeError(f"{where}: int4 block {bad[0]} is not one {caps.name} executes "
                                      f"({', '.join(map(str, caps.int4_blocks)) or 'none'})",
                                      f"set int4_block to one of {', '.join(map(str, caps.int4_blocks))}")
                if not caps.has("int4", profile.runtime_version) and "int4" in caps.feature_min_version:
                    raise RecipeError(f"{where}: int4 weights need {caps.name} {caps.feature_min_version['int4']}+",
                                      f"pin a newer runtime_version in the profile, or drop '{profile.name}'")


def resolve_export_form(spec: Any, cfg: Any, profile: Any, caps: RuntimeCapabilities, where: str = "") -> str | None:
    """The export form of a pass for a target: the profile's choice if it names one, else
    the pass's first form whose features the runtime has. None: the pass has no forms."""
    forms = spec.export_forms
    if not forms:
        return None
    chosen = profile.export_forms.get(cfg.kind)
    if chosen is not None:
        if chosen not in forms:
            raise RecipeError(f"{where}: export form '{chosen}' unknown for {cfg.kind}" + did_you_mean(chosen, forms),
                              f"forms of {cfg.kind}: {', '.join(forms)}")
        lacking = [f for f in forms[chosen] if not caps.has(f, profile.runtime_version)]
        if lacking:
            raise RecipeError(f"{where}: export form '{chosen}' needs {', '.join(lacking)}, which {caps.name} lacks",
                              f"choose another form in the profile's export_forms ({', '.join(forms)})")
        return chosen
    for name, needs in forms.items():
        if all(caps.has(f, profile.runtime_version) for f in needs):
            return name
    raise RecipeError(f"{where}: no export form of {cfg.kind} runs on {caps.name}",
                      f"drop '{profile.name}' from exports, or the {cfg.kind} pass")
