"""ONNX export (torch dynamo exporter) for ONNX Runtime, and the shared fp32 ONNX graph
that other exporters (OpenVINO) convert from."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from edgevit.errors import ExportError
from edgevit.exporters.base import Bundle, reference_model_entry, ExportContext, LoweringPlan, TargetProfile, bundle_data, check_plan_supported, register_exporter

INPUT_NAME, OUTPUT_NAME = "input", "logits"
SINGLE_FILE_LIMIT = 1_800_000_000  # protobuf's 2 GB cap, with margin: above it, external data


def export_onnx_graph(model: nn.Module, ctx: ExportContext, opset: int, forms: dict[str, str] | None = None) -> Path:
    """fp32 ONNX with a dynamic batch axis, exported once per (opset, export forms) per run.

    ``forms`` picks each pass's export form for the target (e.g. {"tome": "onehot"} for
    TensorRT, which lacks ScatterElements with reduction before version 10)."""
    forms = dict(forms or {})
    key = f"onnx-fp32-opset{opset}-{json.dumps(forms, sort_keys=True)}"
    if key in ctx.cache:
        return ctx.cache[key]
    import tempfile

    from edgevit.passes.token_patch import set_merge_form

    set_merge_form(model, forms.get("tome", "scatter"))

    out = Path(tempfile.mkdtemp(prefix="edgevit-onnx-")) / "model.onnx"
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = ctx.example_input[:1].expand(2, *ctx.example_input.shape[1:]).contiguous()
    export_module(model, (example,), [INPUT_NAME], [OUTPUT_NAME], out, opset)
    ctx.cache[key] = out
    return out


def export_module(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
                  out: Path, opset: int, varargs: bool = False) -> None:
    """One module to a checked ONNX file; every input's first axis is the (shared) batch.
    ``varargs``: the module's forward takes ``*inputs`` (torch.export wants one nested spec)."""
    external = sum(p.numel() * p.element_size() for p in module.parameters()) > SINGLE_FILE_LIMIT
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example, dynamo=True, opset_version=opset, verbose=False,
                input_names=input_names, output_names=output_names,
                dynamic_shapes=(tuple({0: batch} for _ in example),) if varargs else tuple({0: batch} for _ in example),
            )
            program.save(str(out), external_data=external)
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                          "this model or pass is not exportable at this opset") from None
    import onnx

    try:
        onnx.checker.check_model(str(out), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}") from None


def lowered_onnx_graph(model: nn.Module, plan: LoweringPlan, ctx: ExportContext, opset: int,
                       forms: dict[str, str] | None = None) -> Path:
    """The fp32 graph with the plan's quantized layers lowered (QDQ int8, blocked int4)."""
    if any(p == "int4" for p in plan.layer_precision.values()):
        opset = max(opset, 21)  # blocked int4 DequantizeLinear exists from opset 21
    graph = export_onnx_graph(model, ctx, opset, forms)
    if not plan.quantized:
        return graph
    symmetric = (forms or {}).get("int8_activations") == "symmetric"
    key = f"{graph}-lowered-{json.dumps(plan.layer_precision, sort_keys=True)}-{plan.activation_clip_percentile}-{symmetric}"
    if key in ctx.cache:
        return ctx.cache[key]
    from edgevit.exporters.quantize_onnx import quantize_graph

    out = graph.parent / f"lowered-{len([k for k in ctx.cache if 'lowered' in k])}" / "model.onnx"
    out.parent.mkdir()
    calibration = None
    if any(p == "int8" for p in plan.layer_precision.values()):
        calibration = ctx.calibration.images(ctx.preprocessing).numpy()
    quantize_graph(graph, out, plan.layer_precision, plan.int4_block, calibration, INPUT_NAME,
                   plan.activation_clip_percentile, symmetric_activations=symmetric)
    ctx.cache[key] = out
    return out


def onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def describe(values) -> list[dict]:
        out = []
        for v in values:
            if v.name in init:
                continue
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    return describe(graph.input), describe(graph.output)


@register_exporter
class OnnxExporter:
    format = "onnx"

    def export(self, model: nn.Module, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        check_plan_supported(plan, profile)
        if plan.cascade is not None:
            return self._export_cascade(model, plan, profile, ctx, out_dir)
        graph = lowered_onnx_graph(model, plan, ctx, profile.opset, profile.export_forms)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for src in sorted(graph.parent.iterdir()):  # model.onnx (+ external data if any)
            shutil.copy2(src, out_dir / src.name)
            files.append(src.name)
        inputs, outputs = onnx_io(out_dir / "model.onnx")
        options = {"graph_optimization_level": "ORT_ENABLE_ALL", **profile.session_options}
        data = bundle_data(profile, ctx, plan.summary_precision, "model.onnx", files, inputs, outputs, options)
        if profile.runtime == "tensorrt":
            data["tensorrt"] = engine_build_spec(profile, plan, inputs)
        return Bundle(out_dir, data).write()

    @staticmethod
    def _export_cascade(model, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        from edgevit.exporters.cascade_graphs import cascade_onnx_graphs

        if profile.runtime == "tensorrt":
            raise ExportError(f"{profile.name}: cascades are exported for ONNX Runtime and OpenVINO only",
                              "drop this export profile from a recipe with an exits pass")
        paths, manifest = cascade_onnx_graphs(model, plan, ctx, profile.opset, profile.export_forms)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, stage in zip(paths, manifest["stages"]):
            shutil.copy2(path, out_dir / path.name)
            stage["file"] = path.name
        inputs, _ = onnx_io(out_dir / paths[0].name)
        outputs = [{"name": s["name"]} for s in manifest["stages"]]
        options = {"graph_optimization_level": "ORT_ENABLE_ALL", **profile.session_options}
        reference = lowered_onnx_graph(model, plan, ctx, profile.opset, profile.export_forms)  # same precision, no exits
        shutil.copy2(reference, out_dir / "reference.onnx")
        files = [p.name for p in paths] + ["reference.onnx"]
        data = bundle_data(profile, ctx, plan.summary_precision, paths[0].name, files, inputs, outputs, options)
        data["cascade"] = manifest
        data["reference_model"] = reference_model_entry(["reference.onnx"])
        return Bundle(out_dir, data).write()


def engine_build_spec(profile: TargetProfile, plan: LoweringPlan, inputs: list[dict]) -> dict:
    """How the device builds the engine (engines are device- and version-specific: built
    where they run, never here). The runner on the device executes `trtexec` with it."""
    options = profile.session_options
    # fp32 parity needs TF32 off on Ampere+; int8 comes from the graph's explicit Q/DQ nodes
    flags = {"fp32": ["--noTF32"], "fp16": ["--fp16"], "int8": ["--int8"]}.get(plan.summary_precision, ["--int8", "--fp16"])
    batch = int(options.get("batch", 1))
    shapes = {i["name"]: [batch if not isinstance(d, int) else d for d in i["shape"]] for i in inputs}
    shape_arg = ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())
    workspace = int(options.get("workspace_mib", 1024))
    cmd = ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine", f"--shapes={shape_arg}",
           f"--memPoolSize=workspace:{workspace}M", "--timingCacheFile=timing.cache", *flags]
    if options.get("dla_core") is not None:
        cmd += [f"--useDLACore={options['dla_core']}", "--allowGPUFallback"]
    return {"version": profile.runtime_version, "precision_flags": flags, "shapes": shapes, "workspace_mib": workspace,
            "timing_cache": "timing.cache", "dla_core": options.get("dla_core"), "trtexec": " ".join(cmd),
            "engine_reproducible": False}
