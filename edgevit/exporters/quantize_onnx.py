"""Lowering a per-layer precision plan onto an fp32 ONNX graph with ONNX Runtime's tools.

int8 layers: QDQ placed where OpenVINO's low-precision transformations and ONNX Runtime's
QDQ fusions turn it into integer kernels (the placement NNCF's transformer preset gives
OpenVINO, checked node by node against it):
- Q/DQ on the *inputs* of each planned Linear (MatMul) and of the stem convolution (the
  patch embedding: a Linear over patches), never on their outputs. An output Q/DQ would
  re-quantize the fp32 accumulator before the bias Add: OpenVINO then runs the layer with
  an int8 output plus a dequantizing step and ORT a QLinearMatMul + DequantizeLinear
  (slower in both, and one more rounding). Without it ORT fuses MatMulIntegerToFloat (+
  bias) and OpenVINO folds bias, GELU and the next layer's quantization into the layer.
- weights: int8 initializers, symmetric (zero point 0), one scale per output channel.
- activations: static, per tensor, calibrated on the run's calibration images; uint8
  asymmetric (ORT's fastest u8s8 kernels on x86) or int8 symmetric where the profile asks
  for it (``int8_activations: symmetric``: TensorRT needs zero points of 0), or ``mixed``:
  uint8 with a zero point of 128 where the calibrated range is centred on zero (LayerNorm
  and attention outputs), asymmetric elsewhere (GELU outputs), as NNCF's preset places
  them. OpenVINO runs a zero point of 128 as signed int8 without zero-point compensation,
  a faster kernel on AVX2 (Swin-T: 42 of 52 layers, ~4 % end to end), and the centred
  ranges lose at most ``CENTRED_MAX_STEP_GROWTH`` of their step.
- LayerNorm, softmax, GELU and the classifier stay float: quantizing them costs accuracy
  for no speed. ``attention_scores=True`` also quantizes both inputs of the attention score
  matmul (QK^T); measured slower or equal on AVX2 in both runtimes (OpenVINO keeps its
  float MHA kernel around the Q/DQ), so no shipped profile asks for it.
int4 layers: opset-21 blocked int4 DequantizeLinear -> MatMul, which ONNX Runtime fuses
into MatMulNBits and OpenVINO runs as an i4 FullyConnected.

Layers are found through the module path the dynamo exporter stores on each node
(pkg.torch.onnx.name_scopes), so the plan's PyTorch names address the graph exactly; a
planned layer missing from the graph is an error.
"""
from __future__ import annotations

import ast
import contextlib
import re
import logging
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgevit.errors import ExportError

# MatMul weights are [in, out]: one scale per output channel is axis 1 (Conv: axis 0, ORT's default)
INT8_AXIS = {"MatMul": 1}
INT8_OPS = ["MatMul", "Conv"]
# ops between QK^T and its Softmax (scale, Swin's relative-position bias and window mask)
_SCORE_PATH_OPS = {"Mul", "Div", "Add", "Reshape", "Unsqueeze", "Squeeze", "Cast", "Where"}
_SCORE_PATH_HOPS = 8
# mixed activations: a range made symmetric may widen its step by at most this factor. The
# calibrated ranges of ViTs fall in two groups (Swin-T: <= 1.07 around LayerNorm and
# attention outputs, >= 1.69 after GELU), so the split does not hinge on the value.
CENTRED_MAX_STEP_GROWTH = 1.25
_U8_MID = 128


def _module_path(node) -> list[str] | None:
    scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
    return ast.literal_eval(scopes) if scopes else None


def _weight_owner(scope: str, node) -> str:
    """The module whose weight the node multiplies: its innermost module scope, or a child of
    it when that module applies the child's weight with F.linear (Swin v2 and Eva qkv, with a
    concatenated q/v bias), read from the exporter's FX node text, whose weight placeholder is
    ``p_`` + the weight's path with dots as underscores."""
    fx = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.fx_node"), "")
    match = re.search(r"aten\.linear\.default\]\(args = \(%\w+, %p_(\w+)_weight\b", fx)
    own = scope.replace(".", "_")
    if match and match.group(1).startswith(own + "_"):
        return f"{scope}.{match.group(1)[len(own) + 1:]}"
    return scope


def _weighted_nodes(model, op_type: str, module_prefix: str) -> dict[str, str]:
    """Module path (minus ``module_prefix``) -> node, for ``op_type`` nodes with a constant weight."""
    initializers = {i.name for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type != op_type or node.input[1] not in initializers:
            continue
        path = _module_path(node)
        if path and len(path) >= 2 and path[-2].startswith(module_prefix):
            found[_weight_owner(path[-2], node)[len(module_prefix):]] = node.name
    return found


def linear_nodes(model, module_prefix: str = "") -> dict[str, str]:
    """Module path of each Linear (as the dynamo exporter names it, minus ``module_prefix``:
    a cascade stage wraps the model as ``model``) -> its MatMul node."""
    return _weighted_nodes(model, "MatMul", module_prefix)


def conv_nodes(model, module_prefix: str = "") -> dict[str, str]:
    """Module path of each convolution with constant weights (the patch embedding) -> its node."""
    return _weighted_nodes(model, "Conv", module_prefix)


def attention_score_nodes(model) -> list[str]:
    """MatMuls of two activations whose result reaches a Softmax through scale / bias / mask
    ops only: the attention scores QK^T (not A·V, whose input is the softmax itself)."""
    graph = model.graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    found = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[0] in constants or node.input[1] in constants:
            continue
        frontier = [node.output[0]]
        for _ in range(_SCORE_PATH_HOPS):
            nxt = [c for t in frontier for c in consumers[t]]
            if any(c.op_type == "Softmax" for c in nxt):
                found.append(node.name)
                break
            frontier = [o for c in nxt if c.op_type in _SCORE_PATH_OPS for o in c.output]
            if not frontier:
                break
    return found


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def strip_metadata(model) -> None:
    """Drop the exporter's per-node metadata (stack traces, module paths): about a fifth
    of a small model's file, and not needed once the plan is lowered."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed calibration images."""

    def __init__(self, images: np.ndarray | dict[str, np.ndarray], input_name: str, batch: int = 8):
        feeds = images if isinstance(images, dict) else {input_name: images}  # a cascade stage has named feature inputs
        n = len(next(iter(feeds.values())))
        self.batches = iter([{k: v[i:i + batch] for k, v in feeds.items()} for i in range(0, n, batch)])

    def get_next(self):
        return next(self.batches, None)


def int8_targets(model, layer_precision: dict[str, str], linear: dict[str, str], module_prefix: str = "",
                 attention_scores: bool = False) -> tuple[list[str], list[str]]:
    """Nodes whose inputs get Q/DQ: the planned int8 Linears; with any of them, the stem
    convolution too (unless the plan names it fp32) and, if asked, the QK^T matmuls.
    Returns (nodes, convolutions among them)."""
    nodes = [linear[m] for m, p in layer_precision.items() if p == "int8"]
    convs = []
    if nodes:
        convs = [n for m, n in conv_nodes(model, module_prefix).items() if layer_precision.get(m, "int8") == "int8"]
        nodes += convs + (attention_score_nodes(model) if attention_scores else [])
    return nodes, convs


def centre_activations(model, max_step_growth: float = CENTRED_MAX_STEP_GROWTH) -> int:
    """Give each uint8 activation quantizer whose calibrated range is nearly centred on zero
    the symmetric form (zero point 128, the range widened to cover both ends): what OpenVINO
    executes as signed int8. Returns how many quantizers changed. Q and DequantizeLinear of
    one tensor share their scale and zero-point initializers, so both change together."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits or len(node.input) < 3:
            continue  # weights are quantized symmetric already
        scale_init, zero_init = inits.get(node.input[1]), inits.get(node.input[2])
        if scale_init is None or zero_init is None:
            continue
        scale, zero = numpy_helper.to_array(scale_init), numpy_helper.to_array(zero_init)
        if zero.dtype != np.uint8 or zero.size != 1 or int(zero) == _U8_MID:
            continue
        low, high = -int(zero) * float(scale), (255 - int(zero)) * float(scale)
        centred = max(-low / _U8_MID, high / (255 - _U8_MID))  # the step that covers both ends around 128
        if low >= 0 or high <= 0 or centred > max_step_growth * float(scale):
            continue
        scale_init.CopyFrom(numpy_helper.from_array(np.asarray(centred, dtype=scale.dtype).reshape(scale.shape), scale_init.name))
        zero_init.CopyFrom(numpy_helper.from_array(np.full(zero.shape, _U8_MID, dtype=np.uint8), zero_init.name))
        changed += 1
    return changed


def quantize_graph(src: Path, dst: Path, layer_precision: dict[str, str], int4_blocks: dict[str, int],
                   calibration: np.ndarray | dict[str, np.ndarray] | None, input_name: str = "input",
                   clip_percentile: float | None = None, activation_symmetry: str = "asymmetric",
                   module_prefix: str = "", attention_scores: bool = False,
                   reduce_weight_range: bool = False) -> dict[str, int]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    exported = onnx.load(str(src), load_external_data=False)
    nodes = linear_nodes(exported, module_prefix)
    missing = [m for m, p in layer_precision.items() if p in ("int8", "int4") and m not in nodes]
    if missing:
        raise ExportError(f"quantized layers not found in the exported graph: {', '.join(missing[:3])}",
                          "the exporter did not keep module names for these layers")
    int8, convs = int8_targets(exported, layer_precision, nodes, module_prefix, attention_scores)
    # 7-bit convolution weights: x86 CPUs without VNNI (AVX2) multiply u8 x s8 pairs into a
    # saturating int16 (vpmaddubsw), and OpenVINO's AVX2 int8 convolution then overflows on
    # the image input (vit_tiny_c10: logit SQNR 37 -> 17 dB). Weights in [-64, 64] cannot
    # saturate; NNCF's overflow fix does the same on the first layer. Costs one bit on one layer.
    by_name = {n.name: n for n in exported.graph.node}
    overrides = {by_name[c].input[1]: [{"reduce_range": True, "axis": 0}] for c in convs}  # axis: keep per-channel
    if reduce_weight_range:  # the same 7-bit weights on every int8 layer (see the profiles' export_forms)
        constants = {i.name for i in exported.graph.initializer}
        for n in int8:
            node = by_name.get(n)
            if node is not None and node.op_type in INT8_AXIS and node.input[1] in constants:
                overrides.setdefault(node.input[1], [{"reduce_range": True, "axis": INT8_AXIS[node.op_type]}])
    symmetric_activations = activation_symmetry == "symmetric"
    stage = dst.with_suffix(".int8.onnx")
    if int8:
        if calibration is None:
            raise ExportError("int8 activations need calibration images", "pass --calib-data DIR")
        with _quiet_root_logger():  # ORT logs "consider pre-processing" on the root logger; we quantize the raw export on purpose
            quantize_static(str(src), str(stage), _Calibration(calibration, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                            op_types_to_quantize=INT8_OPS, nodes_to_quantize=int8,
                            # percentile calibration clips activation outliers; min/max keeps them
                            calibrate_method=CalibrationMethod.Percentile if clip_percentile else CalibrationMethod.MinMax,
                            # QuantizeBias off: the conv's bias stays float (an int32 bias DequantizeLinear
                            # is what TensorRT 10.3's parser refuses; the runtimes fold a float bias anyway)
                            extra_options={"QDQOpTypePerChannelSupportToAxis": INT8_AXIS, "WeightSymmetric": True,
                                           "QuantizeBias": False,
                                           "ActivationSymmetric": symmetric_activations,
                                           "OpTypesToExcludeOutputQuantization": INT8_OPS, "TensorQuantOverrides": overrides,
                                           **({"CalibPercentile": clip_percentile} if clip_percentile else {})})
    else:
        shutil.copy(src, stage)
    model = onnx.load(str(stage))
    if activation_symmetry == "mixed":
        centre_activations(model)
    by_block: dict[int, list[str]] = {}
    for module, precision in layer_precision.items():
        if precision == "int4":
            by_block.setdefault(int4_blocks[module], []).append(nodes[module])
    for block, names in sorted(by_block.items()):
        # nodes_to_include does not restrict the quantizer (it quantizes every MatMul with a
        # constant weight as well), so everything else is excluded explicitly.
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in names]
        quantizer = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=True, nodes_to_include=names,
                                         nodes_to_exclude=others, quant_format=QuantFormat.QDQ)
        quantizer.process()
        model = quantizer.model.model
    strip_metadata(model)
    onnx.save(model, str(dst))
    stage.unlink(missing_ok=True)
    for extra in dst.parent.glob("*.int8.onnx*"):
        extra.unlink()
    return {"int8_nodes": len(int8), "int4_nodes": sum(len(v) for v in by_block.values())}
