"""A model with exit heads as one ONNX graph per stage, plus the cascade manifest.

Stage k's graph takes the previous stage's features (stage 0: the image) and returns the
features for stage k+1 and exit k's logits; the last stage returns the final logits. The
manifest in bundle.json names each stage's files, inputs and outputs, the exit rule and
the thresholds, so the device runner can execute the cascade without edgevit.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgevit.errors import ExportError

from edgevit.cascade import EXIT_OUTPUT, FINAL_OUTPUT, INPUT, cascade_stages, exit_output_name, feature_names, stage_example_inputs
from edgevit.exporters.base import Bundle, ExportContext, LoweringPlan, bundle_data, export_forms_applied, reference_model_entry
from edgevit.exporters.onnx import export_module

STAGE_PREFIX = "model."  # CascadeStage keeps the model as its ``model`` attribute


def cascade_onnx_graphs(model: nn.Module, plan: LoweringPlan, ctx: ExportContext) -> tuple[list[Path], dict[str, Any]]:
    """fp32 stage graphs (exported once per opset and export forms per run) and the
    manifest; ``plan`` is resolved for the target (``LoweringPlan.for_profile``)."""
    key = f"cascade-{plan.graph_key()}"
    if key not in ctx.cache:
        ctx.cache[key] = _export_stages(model, ctx, plan)
    paths, described = ctx.cache[key]
    if plan.quantized:
        paths = _lowered_stages(model, paths, described, plan, ctx)
    # thresholds live in the manifest only (not in the graphs): set per plan
    stages = [{**stage, "threshold": None if stage["exit_output"] is None else plan.cascade["thresholds"][k]}
              for k, stage in enumerate(described)]
    manifest = {"rule": plan.cascade["rule"], "stages": stages,
                "rule_meaning": "confidence: exit if max softmax >= threshold; entropy: exit if softmax entropy <= threshold; "
                                "threshold null: never exit there"}
    return paths, manifest


def _lowered_stages(model: nn.Module, paths: list[Path], described: list[dict], plan: LoweringPlan,
                    ctx: ExportContext) -> list[Path]:
    """Each stage graph with the plan's layers lowered (QDQ int8 / blocked int4); int8
    activations are calibrated on what each stage really receives: the calibration images
    run through the stages before it."""
    symmetric = plan.symmetric_activations
    key = f"{paths[0]}-lowered-{json.dumps(plan.layer_precision, sort_keys=True)}-{plan.activation_clip_percentile}-{symmetric}"
    if key in ctx.cache:
        return ctx.cache[key]
    import onnx

    from edgevit.exporters.quantize_onnx import linear_nodes, quantize_graph

    feeds: list[dict[str, Any] | None] = [None] * len(paths)
    if any(p == "int8" for p in plan.layer_precision.values()):
        images = ctx.calibration.images(ctx.preprocessing)
        chunks = [stage_example_inputs(cascade_stages(model), c) for c in images.split(16)]
        feeds = [{name: torch.cat([c[k][i] for c in chunks]).numpy() for i, name in enumerate(stage["inputs"])}
                 for k, stage in enumerate(described)]
    lowered, covered = [], set()
    for k, path in enumerate(paths):
        present = linear_nodes(onnx.load(str(path), load_external_data=False), STAGE_PREFIX)
        precision = {m: p for m, p in plan.layer_precision.items() if m in present}
        covered |= set(precision)
        out = path.parent / f"lowered-{len(ctx.cache)}" / path.name
        out.parent.mkdir(exist_ok=True)
        quantize_graph(path, out, precision, {m: b for m, b in plan.int4_block.items() if m in precision}, feeds[k],
                       clip_percentile=plan.activation_clip_percentile, symmetric_activations=symmetric, module_prefix=STAGE_PREFIX)
        lowered.append(out)
    missing = [m for m, p in plan.layer_precision.items() if p in ("int8", "int4") and m not in covered]
    if missing:
        raise ExportError(f"quantized layers found in no cascade stage: {', '.join(missing[:3])}",
                          "a bug in stage splitting: report it with the recipe; meanwhile keep these layers fp32 (keep_fp32)")
    ctx.cache[key] = lowered
    return lowered


def _export_stages(model: nn.Module, ctx: ExportContext, plan: LoweringPlan) -> tuple[list[Path], list[dict]]:
    stages = cascade_stages(model)
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = ctx.example_input[:1].expand(2, *ctx.example_input.shape[1:]).contiguous()
    inputs = stage_example_inputs(stages, example)
    folder = ctx.scratch("cascade")
    paths, described = [], []
    for k, (stage, x) in enumerate(zip(stages, inputs)):
        last = stage.head is None
        in_names = [INPUT] if k == 0 else feature_names(len(x), k)
        out_names = [FINAL_OUTPUT] if last else [*feature_names(len(inputs[k + 1]), k + 1), EXIT_OUTPUT]
        path = folder / f"stage{k}.onnx"
        with export_forms_applied(model, plan):
            export_module(stage, x, in_names, out_names, path, plan.opset, varargs=True)
        paths.append(path)
        described.append({"inputs": in_names, "outputs": out_names, "exit_output": None if last else EXIT_OUTPUT,
                          "blocks": [stage.start + 1, stage.end], "name": FINAL_OUTPUT if last else exit_output_name(k)})
    return paths, described


def write_cascade_bundle(model: nn.Module, plan: LoweringPlan, profile: Any, ctx: ExportContext, out_dir: Path,
                         convert: Callable[[Path, str], list[str]], options: dict[str, Any]) -> Bundle:
    """A cascade bundle for any runtime that loads ONNX-derived graphs: the stage graphs and
    the reference model (the same network without exits, same precision) are produced once
    per run; ``convert(graph, stem)`` writes one into ``out_dir`` in the runtime's format and
    returns its file names (the model file first)."""
    from edgevit.exporters.onnx import lowered_onnx_graph, onnx_io

    paths, manifest = cascade_onnx_graphs(model, plan, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for path, stage in zip(paths, manifest["stages"]):
        written = convert(path, path.stem)
        stage["file"] = written[0]
        files += written
    reference = convert(lowered_onnx_graph(model, plan, ctx), "reference")
    inputs, _ = onnx_io(paths[0])
    outputs = [{"name": s["name"]} for s in manifest["stages"]]
    data = bundle_data(profile, ctx, plan.summary_precision, files[0], files + reference, inputs, outputs, options)
    data["cascade"] = manifest
    data["reference_model"] = reference_model_entry(reference)
    return Bundle(out_dir, data).write()
