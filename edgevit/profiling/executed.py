"""Which precision an artifact really ran in, from what the runner read back."""
from __future__ import annotations

from typing import Any

_ORT_INT8 = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm", "QLinearConv", "ConvInteger", "QAttention"}
_ORT_INT4 = {"MatMulNBits"}
_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8", "i4": "int4", "u4": "int4"}


def executed_precision(fmt: str, executed: dict[str, Any] | None) -> str:
    if not executed or not executed.get("compute_ops"):
        return "unknown"
    ops = executed["compute_ops"]
    if fmt == "onnx":
        found = set()
        for op in ops:
            found.add("int4" if op in _ORT_INT4 else "int8" if op in _ORT_INT8 else "fp32")
    elif fmt == "litert":  # the runner already names each op's precision: FULLY_CONNECTED@int8
        found = {key.rsplit("@", 1)[-1] for key in ops}
    else:
        found = {_OV_PRECISION.get(key.rsplit("@", 1)[-1], key.rsplit("@", 1)[-1]) for key in ops}
    return found.pop() if len(found) == 1 else "mixed(" + ",".join(sorted(found)) + ")"
