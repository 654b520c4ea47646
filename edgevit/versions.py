"""Versions of the libraries a run depended on (for the manifest and the report)."""
from __future__ import annotations

import platform
from importlib import metadata

import edgevit

TRACKED = ("torch", "timm", "onnx", "onnxscript", "onnxruntime", "openvino", "numpy", "safetensors", "pydantic")


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"edgevit": edgevit.__version__, "python": platform.python_version()}
    from edgevit.capabilities import runtimes

    packages = [*TRACKED, *sorted(c.package for c in runtimes().values() if c.package and c.package not in TRACKED)]
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
