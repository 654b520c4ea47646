"""Lowering a per-layer precision plan onto an fp32 ONNX graph with ONNX Runtime's tools.

int8 layers: QDQ with static per-tensor uint8 activations (calibrated on the run's
calibration images) and per-output-channel int8 weights, MatMul only (quantizing
LayerNorm as well costs accuracy for no speed). int4 layers: opset-21 blocked int4
DequantizeLinear -> MatMul, which ONNX Runtime fuses into MatMulNBits and OpenVINO runs
as an i4 FullyConnected. Linear layers are found through the module path the dynamo
exporter stores on each node (pkg.torch.onnx.name_scopes), so the plan's PyTorch names
address the graph exactly; a planned layer missing from the graph is an error.
"""
from __future__ import annotations

import ast
import contextlib
import logging
import shutil
from pathlib import Path

import numpy as np

from edgevit.errors import ExportError

INT8_AXIS = {"MatMul": 1}  # MatMul weights are [in, out]: one scale per output channel


def linear_nodes(model, module_prefix: str = "") -> dict[str, str]:
    """Module path of each Linear (as the dynamo exporter names it, minus ``module_prefix``:
    a cascade stage wraps the model as ``model``) -> its MatMul node."""
    initializers = {i.name for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes:
            path = ast.literal_eval(scopes)
            if len(path) >= 2 and path[-2].startswith(module_prefix):
                found[path[-2][len(module_prefix):]] = node.name
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


def quantize_graph(src: Path, dst: Path, layer_precision: dict[str, str], int4_blocks: dict[str, int],
                   calibration: np.ndarray | dict[str, np.ndarray] | None, input_name: str = "input",
                   clip_percentile: float | None = None, symmetric_activations: bool = False,
                   module_prefix: str = "") -> dict[str, int]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    nodes = linear_nodes(onnx.load(str(src), load_external_data=False), module_prefix)
    missing = [m for m, p in layer_precision.items() if p in ("int8", "int4") and m not in nodes]
    if missing:
        raise ExportError(f"quantized layers not found in the exported graph: {', '.join(missing[:3])}",
                          "the exporter did not keep module names for these layers")
    int8 = [nodes[m] for m, p in layer_precision.items() if p == "int8"]
    stage = dst.with_suffix(".int8.onnx")
    if int8:
        if calibration is None:
            raise ExportError("int8 activations need calibration images", "pass --calib-data DIR")
        with _quiet_root_logger():  # ORT logs "consider pre-processing" on the root logger; we quantize the raw export on purpose
                # uint8 activations are fastest in ORT on x86; TensorRT needs zero points of 0: int8, symmetric
            quantize_static(str(src), str(stage), _Calibration(calibration, input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                            op_types_to_quantize=["MatMul"], nodes_to_quantize=int8,
                            # percentile calibration clips activation outliers; min/max keeps them
                            calibrate_method=CalibrationMethod.Percentile if clip_percentile else CalibrationMethod.MinMax,
                            extra_options={"QDQOpTypePerChannelSupportToAxis": INT8_AXIS, "ActivationSymmetric": symmetric_activations,
                                           **({"CalibPercentile": clip_percentile} if clip_percentile else {})})
    else:
        shutil.copy(src, stage)
    model = onnx.load(str(stage))
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
