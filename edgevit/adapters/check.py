"""Refusing, right after the model loads, a pass its family cannot take.

Each pass declares the adapter capabilities it needs from its config (its spec's
``adapter_needs``); this crosses them with what the model's adapter declares, before any
pass runs, so a recipe fails in a second with the pass, the capability and the fix."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from edgevit.adapters.base import ModelAdapter, adapter_for, refusal


def _kind_and_config(item: Any) -> tuple[str, Any]:
    if isinstance(item, tuple):
        return item[0], item[1]
    return item.kind, item


def check_passes_supported(adapter_or_model: ModelAdapter | nn.Module, passes: Iterable[Any]) -> None:
    """Raise a ModelError for the first pass (a PassConfig, or (kind, config)) whose needed
    capabilities the model's adapter lacks."""
    from edgevit.passes.specs import pass_spec

    adapter = adapter_or_model if isinstance(adapter_or_model, ModelAdapter) else adapter_for(adapter_or_model)
    for i, item in enumerate(passes):
        kind, cfg = _kind_and_config(item)
        for capability in sorted(pass_spec(kind).adapter_needs(cfg)):
            if not adapter.has(capability):
                raise refusal(adapter, f"passes[{i}] ({kind})", capability)
