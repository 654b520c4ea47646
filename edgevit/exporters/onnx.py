"""ONNX export (torch dynamo exporter) for ONNX Runtime, and the shared fp32 ONNX graph
that other exporters (OpenVINO) convert from."""
from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from edgevit.capabilities import runtime
from edgevit.errors import ExportError
from edgevit.exporters.base import Bundle, ExportContext, LoweringPlan, TargetProfile, bundle_data, check_plan_supported, export_forms_applied

INPUT_NAME, OUTPUT_NAME = "input", "logits"
SINGLE_FILE_LIMIT = 1_800_000_000  # protobuf's 2 GB cap, with margin: above it, external data


def export_onnx_graph(model: nn.Module, ctx: ExportContext, plan: LoweringPlan) -> Path:
    """fp32 ONNX with a dynamic batch axis, exported once per (opset, export forms) per run:
    the graph every ONNX-based runtime of the run converts from.

    The plan's export forms (e.g. ToMe's one-hot merge for TensorRT, which lacks
    ScatterElements with reduction before version 10) are set only while tracing."""
    key = f"onnx-fp32-{plan.graph_key()}"
    if key in ctx.cache:
        return ctx.cache[key]
    out = ctx.scratch("onnx") / "model.onnx"
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = ctx.example_input[:1].expand(2, *ctx.example_input.shape[1:]).contiguous()
    with export_forms_applied(model, plan):
        export_module(model, (example,), [INPUT_NAME], [OUTPUT_NAME], out, plan.opset)
    ctx.cache[key] = out
    return out


def export_module(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str],
                  out: Path, opset: int, varargs: bool = False) -> None:
    """One module to a checked ONNX file; every input's first axis is the (shared) batch.
    ``varargs``: the module's forward takes ``*inputs`` (torch.export wants one nested spec)."""
    external = sum(p.numel() * p.element_size() for p in module.parameters()) > SINGLE_FILE_LIMIT
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example, dynamo=True, opset_version=opset, verbose=False,
                input_names=input_names, output_names=output_names,
                dynamic_shapes=(tuple({0: batch} for _ in example),) if varargs else tuple({0: batch} for _ in example),
            )
            _drop_stack_traces(program.model)
            program.save(str(out), external_data=external)
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                          "this model or pass is not exportable at this opset") from None
    import onnx

    try:
        onnx.checker.check_model(str(out), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0]}",
                          "try another opset in the export profile; if it persists, report it with the recipe") from None


def _drop_stack_traces(model) -> None:
    """The exporter records each node's Python stack trace, with absolute paths of edgevit,
    timm and torch: the same model would give other bytes from another install folder.
    Scopes and fx nodes (which name the modules, and the lowering reads) stay."""
    from onnx_ir.traversal import RecursiveGraphIterator

    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in RecursiveGraphIterator(graph):
            node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The exporter's passes log every rewrite at INFO, which shows as soon as anything
    (onnxruntime's MatMulNBits quantizer does, on import) configures the root logger at INFO."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def lowered_onnx_graph(model: nn.Module, plan: LoweringPlan, ctx: ExportContext) -> Path:
    """The fp32 graph with the plan's quantized layers lowered (QDQ int8, blocked int4);
    ``plan`` is resolved for the target (``LoweringPlan.for_profile``)."""
    graph = export_onnx_graph(model, ctx, plan)
    if not plan.quantized:
        return graph
    key = f"{graph}-lowered-{plan.lowering_key()}"
    if key in ctx.cache:
        return ctx.cache[key]
    from edgevit.exporters.quantize_onnx import quantize_graph

    out = ctx.scratch("lowered") / "model.onnx"
    calibration = None
    if any(p == "int8" for p in plan.layer_precision.values()):
        calibration = ctx.calibration.images(ctx.preprocessing).numpy()
    quantize_graph(graph, out, plan.layer_precision, plan.int4_block, calibration, INPUT_NAME,
                   plan.activation_clip_percentile, activation_symmetry=plan.activation_symmetry,
                   reduce_weight_range=plan.reduced_weight_range)
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


class OnnxExporter:
    format = "onnx"
    reproducible = True  # same model + plan + calibration -> same bytes (tests/test_cli.py)

    def export(self, model: nn.Module, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        check_plan_supported(plan, profile)
        plan = plan.for_profile(profile)
        if plan.cascade is not None:
            return self._export_cascade(model, plan, profile, ctx, out_dir)
        graph = lowered_onnx_graph(model, plan, ctx)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for src in sorted(graph.parent.iterdir()):  # model.onnx (+ external data if any)
            shutil.copy2(src, out_dir / src.name)
            files.append(src.name)
        inputs, outputs = onnx_io(out_dir / "model.onnx")
        data = bundle_data(profile, ctx, plan.summary_precision, "model.onnx", files, inputs, outputs, _options(profile))
        data.update(runtime(profile.runtime).device_build_fields(profile, plan, inputs))
        return Bundle(out_dir, data).write()

    @staticmethod
    def _export_cascade(model, plan: LoweringPlan, profile: TargetProfile, ctx: ExportContext, out_dir: Path) -> Bundle:
        from edgevit.exporters.cascade_graphs import write_cascade_bundle

        def copy(graph: Path, folder: Path, stem: str) -> list[str]:
            shutil.copy2(graph, folder / f"{stem}.onnx")
            return [f"{stem}.onnx"]

        return write_cascade_bundle(model, plan, profile, ctx, out_dir, copy, _options(profile))


def _options(profile: TargetProfile) -> dict:
    return {"graph_optimization_level": "ORT_ENABLE_ALL", **profile.session_options}


def engine_build_spec(profile: TargetProfile, plan: LoweringPlan, inputs: list[dict]) -> dict:
    """The device-build hook runtimes/tensorrt.yaml declares: bundle.json's ``tensorrt`` block."""
    return {"tensorrt": _trtexec_fields(profile, plan, inputs)}


def _trtexec_fields(profile: TargetProfile, plan: LoweringPlan, inputs: list[dict]) -> dict:
    """How the device builds the engine (engines are device- and version-specific: built
    where they run, never here). Structured fields only, no command line: the runner builds
    trtexec's arguments from them through an allow-list (runtimes/runner.py,
    ``trtexec_build_args``), so a bundle cannot hand trtexec a plugin library or an output path."""
    options = profile.session_options
    # fp32 parity needs TF32 off on Ampere+; int8 comes from the graph's explicit Q/DQ nodes
    flags = {"fp32": ["noTF32"], "fp16": ["fp16"], "int8": ["int8"]}.get(plan.summary_precision, ["int8", "fp16"])
    batch = int(options.get("batch", 1))
    shapes = {i["name"]: [batch if not isinstance(d, int) else d for d in i["shape"]] for i in inputs}
    return {"version": profile.runtime_version, "precision_flags": flags, "shapes": shapes,
            "workspace_mib": int(options.get("workspace_mib", 1024)), "timing_cache": "timing.cache",
            "dla_core": options.get("dla_core"), "engine_reproducible": False}
