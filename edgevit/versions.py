"""Versions of the libraries a run depended on (for the manifest and the report)."""
from __future__ import annotations

import platform
from importlib import metadata

import edgevit

TRACKED = ("torch", "timm", "onnx", "onnxscript", "onnxruntime", "openvino", "numpy", "safetensors", "pydantic")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"edgevit": edgevit.__version__, "python": platform.python_version()}
    for name in TRACKED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
