"""LiteRT (TFLite) export with litert-torch: PyTorch -> ``model.tflite``, no TensorFlow.

Precisions (what XNNPACK, LiteRT's CPU delegate, executes):
- fp32: the converted graph as is.
- fp16: weights stored in fp16 (ai-edge-quantizer's float-cast recipe); XNNPACK unpacks
  them to fp32 on x86 and may run fp16 arithmetic on ARMv8.2+ phones. Chosen by the
  profile (``float_precision: fp16``), since a plan never asks for fp16 itself.
- int8: PT2E static quantization (symmetric, per-channel weights, per-tensor activations
  calibrated on the run's calibration images). One quantized graph, so XNNPACK runs it in
  few partitions; ai-edge-quantizer's static recipe splits it into ~120 (slow, lossy).
  Layers the plan keeps in fp32 (the classifier, keep_fp32) are left unquantized.

TFLite graphs have static shapes: the graph is exported at batch ``session_options.batch``
(default 1, what a phone runs); the runner feeds a larger --input batch in slices.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn

from edgevit.errors import ExportError, RecipeError
from edgevit.exporters.base import (Bundle, ExportContext, LoweringPlan, TargetProfile, bundle_data, check_plan_supported,
                                    export_forms_applied)

MODEL_FILE = "model.tflite"
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # names the bundle gives; the .tflite keeps its own signature names


def litert_precision(plan: LoweringPlan, profile: TargetProfile) -> str:
    """fp32 / fp16 / int8: the plan's low precision, else the profile's float precision."""
    precision = plan.summary_precision
    if precision == "fp32":
        return profile.float_precision
    if precision != "int8":  # int4 / mixed never get here (check_plan_supported) unless a profile lists them
        raise RecipeError(f"export profile '{profile.name}': litert-torch cannot lower a {precision} plan",
                          "use int8 or fp32 layers for LiteRT targets")
    if profile.float_precision != "fp32":
        raise RecipeError(f"export profile '{profile.name}': float_precision {profile.float_precision} cannot be combined "
                          "with an int8 plan (litert-torch applies one quantization recipe per model)",
                          "export int8 plans to a profile with float_precision: fp32 (e.g. android-litert)")
    return "int8"


def _quiet():
    """litert-torch prints progress on stdout (ours carries the report): silence it."""
    from litert_torch import progress

    stack = contextlib.ExitStack()
    old = progress.console.quiet
    progress.console.quiet = True
    stack.callback(setattr, progress.console, "quiet", old)
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # ai-edge-quantizer's size summary
    return stack


def _int8_quantized(model: nn.Module, plan: LoweringPlan, example: torch.Tensor, calibration: torch.Tensor):
    """PT2E static int8: export, annotate, calibrate, convert; returns (graph module, quant_config)."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    int8_layers = {n for n, p in plan.layer_precision.items() if p == "int8"}
    keep_fp32 = {name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in int8_layers}

    class PlanQuantizer(pq.PT2EQuantizer):
        """The global symmetric config, minus the Linear layers the plan keeps in fp32.
        (PT2EQuantizer has no per-module "no quantization" setting.) Non-Linear ops
        (patch-embedding conv, adds, concat) follow the global config, so the graph stays
        int8 between layers instead of re-quantizing around each one."""

        def annotate(self, gm):
            gm = super().annotate(gm)
            for node in gm.graph.nodes:
                stack = node.meta.get("nn_module_stack")
                if stack and list(stack.values())[-1][0] in keep_fp32:
                    node.meta.pop("quantization_annotation", None)
            return gm

    dynamic = plan.activations != "int8"  # int8 weights + fp32 activations: dynamic-range int8
    quantizer = PlanQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    graph = torch.export.export(model, (example,)).module()
    graph = move_exported_model_to_eval(quantize_pt2e.prepare_pt2e(graph, quantizer))
    with torch.no_grad():
        for x in calibration.split(1):
            graph(x.expand_as(example) if example.shape[0] != 1 else x)
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))  # exported modules ignore .eval()
    return graph, QuantConfig(pt2e_quantizer=quantizer)


def convert_tflite(model: nn.Module, precision: str, example: torch.Tensor, out: Path,
                   calibration: torch.Tensor | None = None, plan: LoweringPlan | None = None) -> Path:
    """Write ``out`` (.tflite) for ``model`` at ``precision``; shared by the exporter and the bench."""
    try:
        import litert_torch
    except ImportError as exc:
        raise ExportError(f"LiteRT export needs litert-torch: {exc}", "install the extra: pip install -e '.[litert]' (make install does)") from None
    model = model.eval()
    try:
        with _quiet(), torch.no_grad():
            if precision == "int8":
                if calibration is None:
                    raise ExportError("int8 LiteRT export needs calibration images",
                                      "pass --calib-data DIR (or --allow-synthetic-calibration for a latency-only run)")
                graph, quant = _int8_quantized(model, plan or LoweringPlan(), example, calibration)
                edge = litert_torch.convert(graph, (example,), quant_config=quant)
            elif precision == "fp16":
                from litert_torch.generative.quantize.quant_recipes import full_fp16_recipe

                edge = litert_torch.convert(model, (example,), quant_config=full_fp16_recipe())
            else:
                edge = litert_torch.convert(model, (example,))
            edge.export(str(out))
    except ExportError:
        raise
    except Exception as exc:  # torch.export / MLIR lowering raise many types; all mean "cannot convert"
        raise ExportError(f"LiteRT conversion failed ({precision}): {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                          "this model or pass is not convertible by litert-torch; drop the LiteRT target") from None
    return out


def _io_spec(path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs/outputs as the interpreter sees them (names, static shapes, dtypes)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:  # converted, but an op the interpreter has no kernel for
        raise ExportError(f"LiteRT cannot load the converted {path.name}: {str(exc).splitlines()[0][:300]}",
                          "this model or pass converts to ops the LiteRT interpreter lacks (e.g. ToMe's sort); "
                          "drop the LiteRT target for it") from None

    def describe(details) -> list[dict]:
        return [{"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__} for d in details]

    return describe(it.get_input_details()), describe(it.get_output_details())


class LiteRtExporter:
    format = "litert"
    reproducible = True  # same model + plan + calibration -> same .tflite bytes (tests/test_litert.py)

    def export(self, model: nn.Module, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        check_plan_supported(plan, profile)
        plan = plan.for_profile(profile)
        if plan.cascade is not None:  # one .tflite would silently drop the exits
            raise ExportError(f"{profile.name}: early-exit cascades are exported for ONNX Runtime and OpenVINO only",
                              "drop the LiteRT target from a recipe with an exits pass")
        precision = litert_precision(plan, profile)
        batch = int(profile.session_options.get("batch", 1))
        example = ctx.example_input[:1].expand(batch, *ctx.example_input.shape[1:]).contiguous()
        calibration = ctx.calibration.images(ctx.preprocessing) if precision == "int8" else None
        out_dir.mkdir(parents=True, exist_ok=True)
        with export_forms_applied(model, plan):
            convert_tflite(model, precision, example, out_dir / MODEL_FILE, calibration, plan)
        inputs, outputs = _io_spec(out_dir / MODEL_FILE)
        options = {"batch": batch, "delegate": "xnnpack", **profile.session_options}
        data = bundle_data(profile, ctx, precision, MODEL_FILE, [MODEL_FILE], inputs, outputs, options)
        return Bundle(out_dir, data).write()
