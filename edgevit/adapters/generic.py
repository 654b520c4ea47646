"""Any other timm model: no family knowledge, no capabilities.

What needs none still works on it: quantizing its Linear layers (RepQ skipped with a note),
export, the numerical check and profiling. Every pass that needs family knowledge is
refused by name right after the model loads."""
from __future__ import annotations

from edgevit.adapters.base import ModelAdapter


class GenericTimmAdapter(ModelAdapter):
    family = "generic"

    def summary(self) -> dict:
        return {"family": "generic", "class": type(self.model).__name__,
                "note": "no edgevit adapter for this timm class: quantize, export and profiling only"}
