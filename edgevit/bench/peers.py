"""Peer baselines a user would otherwise reach for, as runner-loadable artifact folders
made from an fp32 compress run: ONNX Runtime's quantize_static (defaults), NNCF's
post-training int8 quantization (transformer preset) and NNCF's mixed int4/int8 weight
compression. Same calibration images as edgevit's own runs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgevit.accuracy import artifact_predictor, measure_top1
from edgevit.calibration import resolve_calibration
from edgevit.data import scan_image_folder
from edgevit.profiling import runner_module
from edgevit.recipe import CalibrationSpec

CALIBRATION_IMAGES = 64


def data_config(fp32_run: Path) -> dict:
    report = json.loads((fp32_run / "report.json").read_text())
    return {k: tuple(v) if isinstance(v, list) else v for k, v in report["model"]["data_config"].items()}


def calibration_images(fp32_run: Path, calib: Path | None):
    """64 seeded images of ``calib`` in the run's preprocessing (seeded noise without a folder:
    random-weight latency models, where only speed and size are measured)."""
    spec = CalibrationSpec(n=CALIBRATION_IMAGES, seed=0)
    return resolve_calibration(spec, calib, None, None).images(data_config(fp32_run)).numpy() if calib else _noise(fp32_run)


def _noise(fp32_run: Path):
    import numpy as np

    size = json.loads((fp32_run / "report.json").read_text())["model"]["input_size"]
    return np.random.default_rng(0).standard_normal((CALIBRATION_IMAGES, *size)).astype(np.float32)


def ort_quantize_static(fp32_run: Path, out: Path, images) -> Path:
    from onnxruntime.quantization import quantize_static

    from edgevit.exporters.quantize_onnx import _Calibration, _quiet_root_logger

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(fp32_run / "artifacts" / "x86-onnxruntime", out)
    with _quiet_root_logger():
        quantize_static(str(fp32_run / "artifacts/x86-onnxruntime/model.onnx"), str(out / "model.onnx"), _Calibration(images, "input"))
    return out


def _openvino_copy(fp32_run: Path, out: Path, compressed) -> Path:
    import openvino as ov

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(fp32_run / "artifacts/x86-openvino", out)
    ov.save_model(compressed, str(out / "model.xml"), compress_to_fp16=False)
    return out


def nncf_int8(fp32_run: Path, out: Path, images) -> Path:
    """nncf.quantize with the transformer preset: int8 weights and activations."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_run / "artifacts/x86-openvino/model.xml"))
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(images))
    return _openvino_copy(fp32_run, out, quantized)


def nncf_weight_compression(fp32_run: Path, out: Path, images, ratio: float) -> Path:
    """nncf.compress_weights INT4_SYM, group 32 (ADJUST fallback to 16), ``ratio`` of weights at int4, rest int8."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

    model = ov.Core().read_model(str(fp32_run / "artifacts/x86-openvino/model.xml"))
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    compressed = nncf.compress_weights(
        model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=ratio, group_size=32, dataset=dataset, subset_size=len(images),
        advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST,
                                                          min_adjusted_group_size=16))
    return _openvino_copy(fp32_run, out, compressed)


def artifact_size(folder: Path) -> int:
    bundle = json.loads((folder / "bundle.json").read_text())
    return sum((folder / f).stat().st_size for f in bundle["files"])


def artifact_top1(folder: Path, fp32_run: Path, test: Path, n: int) -> float:
    """Top-1 of a peer artifact on the same seeded subset the compress runs evaluate."""
    report = json.loads((fp32_run / "report.json").read_text())
    labels = json.loads((fp32_run / "model" / "config.json").read_text()).get("label_names")
    session = runner_module().open_artifact(str(folder), 2)
    acc = measure_top1({"peer": artifact_predictor(session, "logits")}, scan_image_folder(test), n, report["recipe"]["seed"],
                       data_config(fp32_run), 250, labels)
    return acc["top1"]["peer"]
