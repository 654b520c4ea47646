"""OpenVINO IR (.xml + .bin), converted from the run's ONNX graph."""
from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from edgevit.errors import ExportError
from edgevit.exporters.base import Bundle, ExportContext, LoweringPlan, TargetProfile, bundle_data, check_plan_supported
from edgevit.exporters.onnx import lowered_onnx_graph, onnx_io

# OpenVINO's CPU plugin runs "fp32" models in bf16 on AVX-512 BF16 machines unless told
# otherwise; the hint follows the precision the plan asked for.
INFERENCE_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class OpenvinoExporter:
    format = "openvino"
    reproducible = True  # same model + plan + calibration -> same bytes (tests/test_cli.py)

    def export(self, model: nn.Module, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        check_plan_supported(plan, profile)
        plan = plan.for_profile(profile)
        if plan.cascade is not None:
            return self._export_cascade(model, plan, profile, ctx, out_dir)
        graph = lowered_onnx_graph(model, plan, ctx)
        out_dir.mkdir(parents=True, exist_ok=True)
        _convert(graph, out_dir / "model.xml", plan)
        inputs, outputs = onnx_io(graph)
        return Bundle(out_dir, bundle_data(profile, ctx, plan.summary_precision, "model.xml", ["model.xml", "model.bin"], inputs, outputs,
                                           _options(profile, plan))).write()

    @staticmethod
    def _export_cascade(model, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        from edgevit.exporters.cascade_graphs import write_cascade_bundle

        def convert(graph: Path, folder: Path, stem: str) -> list[str]:
            _convert(graph, folder / f"{stem}.xml", plan)
            return [f"{stem}.xml", f"{stem}.bin"]

        return write_cascade_bundle(model, plan, profile, ctx, out_dir, convert, _options(profile, plan))


def _convert(graph: Path, xml: Path, plan: LoweringPlan) -> None:
    import openvino as ov

    try:
        ov_model = ov.convert_model(str(graph))
        _stable_names(ov_model)
        # compress_to_fp16 defaults to True and would silently make an "fp32" IR fp16.
        ov.save_model(ov_model, str(xml), compress_to_fp16=plan.summary_precision == "fp16")
    except Exception as exc:
        raise ExportError(f"OpenVINO conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                          "check the OpenVINO version in requirements.lock; if it persists, report it with the recipe") from None


def _options(profile: TargetProfile, plan: LoweringPlan) -> dict:
    config = dict(profile.session_options.get("config", {}))
    # quantized plans keep their float parts at f32 too: only the planned layers change
    config["INFERENCE_PRECISION_HINT"] = INFERENCE_HINT.get(plan.summary_precision, "f32")
    return {**profile.session_options, "config": config}


_AUTO_NAME = re.compile(r"^[A-Za-z]+_\d+$")


def _stable_names(ov_model) -> None:
    """OpenVINO names the nodes it creates from a process-wide counter (ShapeOf_5594), so
    the same model converted twice in one process gives different .xml bytes. Renumber
    those in graph order; names carried over from the ONNX graph are kept."""
    for index, op in enumerate(ov_model.get_ordered_ops()):
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")
