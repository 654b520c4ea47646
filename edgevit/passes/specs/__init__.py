"""Pass declarations: what each pass kind is, as data, without torch.

A declaration (``PassSpec`` subclass in a module of this package) names the pass kind,
its recipe config type, where its implementation lives, what it needs from the command
line, from a target runtime (precisions, features, export forms) and from the model
family (adapter capabilities), and which passes may come before / after it. Recipes,
`edgevit validate` and the capability check read only these, so they answer in well under
a second; the implementation (torch, timm) is imported when the pass runs.

A new pass kind is one declaration module here plus its implementation module: every
module of this package that defines a ``PassSpec`` subclass registers itself.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any, ClassVar

from edgevit.passes.base import PassConfig

SIMULATED_PRECISIONS = frozenset({"int2", "int3", "int6"})  # fake-quant weights, executed by fp32 kernels


class PassSpec:
    kind: ClassVar[str]
    config_type: ClassVar[type[PassConfig]]
    implementation: ClassVar[str]  # "module:Class", imported only to run or rebuild the pass
    requires: ClassVar[frozenset[str]] = frozenset()  # command-line inputs: train_data, calib_data
    followers: ClassVar[frozenset[str] | None] = None  # kinds that may come after this pass (None: any)
    not_after: ClassVar[frozenset[str]] = frozenset()  # kinds that may not come before it
    unique: ClassVar[bool] = False  # at most once per recipe
    # the pass calibrates on / trains beside the weights as they are (quantize, exits): a
    # recipe-level fine-tune runs before it
    needs_final_weights: ClassVar[bool] = False
    # export form -> runtime features it needs; with no choice in the profile, the first
    # form the runtime can execute is taken
    export_forms: ClassVar[dict[str, frozenset[str]]] = {}

    def precisions(self, cfg: Any) -> set[str]:
        """Precisions the target must execute for this pass (fp32 is always there)."""
        return set()

    def precision_fix(self, cfg: Any, available: set[str]) -> str:
        return f"change the {self.kind} pass's precisions to ones the target runs"

    def int4_blocks(self, cfg: Any) -> set[int]:
        return set()

    def features(self, cfg: Any) -> set[str]:
        """Runtime features the pass needs whatever its export form (e.g. cascade)."""
        return set()

    def adapter_needs(self, cfg: Any) -> set[str]:
        """Model-family capabilities (adapter) the pass needs; checked right after the model loads."""
        return set()

    def recipe_finetune_conflict(self, cfg: Any) -> str | None:
        """Why a recipe-level fine-tune would undo this pass (None: it would not)."""
        return None


@functools.cache
def _discovered() -> dict[str, PassSpec]:
    specs: dict[str, PassSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, PassSpec) and value is not PassSpec \
                    and value.__module__ == module.__name__:
                register_spec(value, specs)
    return specs


_EXTRA: dict[str, PassSpec] = {}  # registered at run time (plugins, tests)


def register_spec(cls: type[PassSpec], into: dict[str, PassSpec] | None = None) -> type[PassSpec]:
    target = _EXTRA if into is None else into
    if cls.kind in target or (into is None and cls.kind in _discovered()):
        raise ValueError(f"pass kind '{cls.kind}' declared twice")
    target[cls.kind] = cls()
    return cls


def unregister_spec(kind: str) -> None:
    _EXTRA.pop(kind, None)


def pass_specs() -> dict[str, PassSpec]:
    return {**_discovered(), **_EXTRA}


def pass_spec(kind: str) -> PassSpec:
    return pass_specs()[kind]


def pass_impl(kind: str) -> Any:
    """The implementation class of a pass kind (imports torch/timm on first use)."""
    module_name, _, cls_name = pass_spec(kind).implementation.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)
