"""Where inference time goes, by kind of layer, from a runtime's own per-op counters.

The runner's ``op_times`` returns mean ms per inference for each executed op type as
"OpType@precision" (ONNX Runtime's profiler, OpenVINO's PERF_COUNT). This sums them into
kinds a person reads: linear layers, attention matmuls, softmax, norms, (de)quantization,
token glue (gathers, scatters, sorts: what token reduction adds), layout (transposes,
reshapes, slices, concats: every ViT has them) and the rest.
Profilers add overhead, so the sums are shares, not latency.
"""
from __future__ import annotations

from typing import Any

# Op types of ONNX Runtime and OpenVINO's CPU plugin. ONNX Runtime keeps weight and
# attention matmuls both as MatMul in float graphs (kind "matmul"); OpenVINO turns weight
# matmuls into FullyConnected, so its MatMul is attention.
KINDS: dict[str, tuple[str, ...]] = {
    "linear": ("FullyConnected", "FullyConnectedQuantizedLegacy", "FullyConnectedCompressed", "Gemm", "FusedGemm",
               "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm", "MatMulNBits",
               "Conv", "FusedConv", "ConvInteger", "QLinearConv", "Convolution", "GroupConvolution"),
    "matmul": ("MatMul", "FusedMatMul"),
    "attention": ("Attention", "MultiHeadAttention", "QAttention", "ScaledAttn", "ScaledDotProductAttention"),
    "softmax": ("Softmax", "SoftMax", "LogSoftmax"),
    "norm": ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "MVN", "NormalizeL2",
             "ReduceL2", "LpNormalization"),
    "quantize": ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize", "Reorder", "Convert"),
    "token glue": ("Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterElementsUpdate", "ScatterND",
                   "ScatterNDUpdate", "ScatterUpdate", "TopK", "Sort", "ArgMax", "ArgMin", "ReduceMax", "Broadcast",
                   "Expand", "Tile", "OneHot", "Where", "Select", "Range"),
    "layout": ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "ShapeOf", "Shape", "Cast", "Concat", "Split",
               "VariadicSplit", "Slice", "StridedSlice"),
}
KIND_OF = {op: kind for kind, ops in KINDS.items() for op in ops}
INTEGER = ("int8", "int4")


def split_key(key: str) -> tuple[str, str]:
    op, _, precision = key.rpartition("@")
    return (op, precision) if op else (key, "unknown")


def by_kind(op_times: dict[str, float]) -> dict[str, Any]:
    """{kind: {"ms", "share", "integer_share"}} plus "total_ms" and the share of linear +
    matmul + attention time that ran in an integer precision."""
    total = sum(op_times.values()) or 1.0
    kinds: dict[str, dict[str, float]] = {}
    compute = integer = 0.0
    for key, ms in op_times.items():
        op, precision = split_key(key)
        kind = KIND_OF.get(op, "elementwise / other")
        row = kinds.setdefault(kind, {"ms": 0.0, "integer_ms": 0.0})
        row["ms"] += ms
        if precision in INTEGER:
            row["integer_ms"] += ms
        if kind in ("linear", "matmul", "attention"):
            compute += ms
            integer += ms if precision in INTEGER else 0.0
    out = {kind: {"ms": r["ms"], "share": r["ms"] / total, "integer_share": r["integer_ms"] / r["ms"] if r["ms"] else 0.0}
           for kind, r in sorted(kinds.items(), key=lambda kv: -kv[1]["ms"])}
    return {"kinds": out, "total_ms": sum(op_times.values()), "compute_integer_share": integer / compute if compute else 0.0}


def kind_cells(summary: dict[str, Any], order: tuple[str, ...]) -> list[str]:
    """One table row's cells: each kind's share of the profiled time, in ``order``."""
    return [f"{summary['kinds'][k]['share']:.0%}" if k in summary["kinds"] else "-" for k in order]
