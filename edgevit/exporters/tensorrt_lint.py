"""Lint an ONNX graph against what one TensorRT release's ONNX parser accepts.

The op table per release is onnx-tensorrt's docs/operators.md (tensorrt_ops.json, with
its source commit); on top of it, facts measured for this project (RUNTIMES.md):
ScatterElements with a reduction needs TensorRT >= 10. Engines are built on the device,
so this lint is what can be checked here: every finding is something the device's
parser would reject.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import RecipeError

TABLE = Path(__file__).with_name("tensorrt_ops.json")
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")


@functools.lru_cache(maxsize=1)
def _releases() -> dict[str, Any]:
    return json.loads(TABLE.read_text())["releases"]


def release_for(version: str | None) -> str:
    """The table for a TensorRT version: 8.5, 8.6, or 10 for any 10.x."""
    if not version:
        raise RecipeError("a TensorRT profile needs runtime_version (e.g. '10.3', '8.6', '8.5')",
                          "set runtime_version in the export profile to the TensorRT version on the device")
    major_minor = ".".join(version.split(".")[:2])
    if major_minor in _releases():
        return major_minor
    if version.split(".")[0] == "10":
        return "10"
    raise RecipeError(f"TensorRT {version}: no operator table for it", f"known: {', '.join(sorted(_releases()))} (10 = any 10.x)")


def lint(model_path: Path, trt_version: str) -> list[dict[str, str]]:
    import onnx

    release = _releases()[release_for(trt_version)]
    model = onnx.load(str(model_path), load_external_data=False)
    findings: list[dict[str, str]] = []

    def error(node: str, op: str, message: str) -> None:
        findings.append({"node": node, "op": op, "message": message})

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > release["max_opset"]:
        error("(model)", "opset", f"opset {opset} > {release['max_opset']}, the highest TensorRT {trt_version} parses")
    inits = {i.name: i for i in model.graph.initializer}
    seen_unsupported = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            error(node.name, f"{node.domain}.{node.op_type}", "custom-domain op: TensorRT parses only ONNX ops (no ORT contrib ops)")
            continue
        entry = release["ops"].get(node.op_type)
        if entry is None or not entry["supported"]:
            if node.op_type not in seen_unsupported:
                error(node.name, node.op_type, f"not supported by the TensorRT {trt_version} ONNX parser")
                seen_unsupported.add(node.op_type)
            continue
        if node.op_type == "ScatterElements" and release_for(trt_version) != "10":
            reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
            if reduction != "none":
                error(node.name, node.op_type, f"reduction='{reduction}' needs TensorRT >= 10 (use the onehot merge form)")
        if node.op_type in QUANT_OPS:
            _check_quant(node, inits, entry, trt_version, error)
    return findings


def _check_quant(node, inits, entry, trt_version, error) -> None:
    from onnx import helper, numpy_helper

    if len(node.input) > 2 and node.input[2] in inits:
        zero_point = numpy_helper.to_array(inits[node.input[2]])
        if np.any(zero_point != 0):
            error(node.name, node.op_type, "non-zero zero point: TensorRT needs symmetric quantization")
    if node.op_type == "DequantizeLinear" and node.input[0] in inits:
        dtype = helper.tensor_dtype_to_np_dtype(inits[node.input[0]].data_type)
        name = {"int4": "INT4", "uint4": "UINT4", "int8": "INT8", "uint8": "UINT8"}.get(np.dtype(dtype).name, np.dtype(dtype).name.upper())
        if name not in entry["types"]:
            error(node.name, node.op_type, f"{name} weights are not parsed by TensorRT {trt_version} (supports {', '.join(entry['types'])})")


def bundle_lint(model_path: Path, trt_version: str | None) -> dict[str, Any]:
    """The lint as the report shows it (the hook runtimes/tensorrt.yaml declares)."""
    findings = lint(model_path, trt_version)
    return {"tensorrt_version": trt_version, "findings": findings[:50], "count": len(findings), "passed": not findings}
