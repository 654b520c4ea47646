"""A model with exit heads as one ONNX graph per stage, plus the cascade manifest.

Stage k's graph takes the previous stage's features (stage 0: the image) and returns the
features for stage k+1 and exit k's logits; the last stage returns the final logits. The
manifest in bundle.json names each stage's files, inputs and outputs, the exit rule and
the thresholds, so the device runner can execute the cascade without edgevit.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevit.errors import ExportError

from edgevit.cascade import EXIT_OUTPUT, FINAL_OUTPUT, INPUT, cascade_stages, exit_output_name, feature_names, stage_example_inputs
from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.exporters.onnx import export_module

STAGE_PREFIX = "model."  # CascadeStage keeps the model as its ``model`` attribute


def cascade_onnx_graphs(model: nn.Module, plan: LoweringPlan, ctx: ExportContext, opset: int,
                        forms: dict[str, str] | None = None) -> tuple[list[Path], dict[str, Any]]:
    """fp32 stage graphs (exported once per opset and forms per run) and the manifest."""
    forms = dict(forms or {})
    if any(p == "int4" for p in plan.layer_precision.values()):
        opset = max(opset, 21)  # blocked int4 DequantizeLinear exists from opset 21
    key = f"cascade-opset{opset}-{json.dumps(forms, sort_keys=True)}"
    if key not in ctx.cache:
        ctx.cache[key] = _export_stages(model, ctx, opset, forms)
    paths, described = ctx.cache[key]
    if plan.quantized:
        paths = _lowered_stages(model, paths, described, plan, ctx, forms)
    # thresholds live in the manifest only (not in the graphs): set per plan
    stages = [{**stage, "threshold": None if stage["exit_output"] is None else plan.cascade["thresholds"][k]}
              for k, stage in enumerate(described)]
    manifest = {"rule": plan.cascade["rule"], "stages": stages,
                "rule_meaning": "confidence: exit if max softmax >= threshold; entropy: exit if softmax entropy <= threshold; "
                                "threshold null: never exit there"}
    return paths, manifest


def _lowered_stages(model: nn.Module, paths: list[Path], described: list[dict], plan: LoweringPlan, ctx: ExportContext,
                    forms: dict[str, str]) -> list[Path]:
    """Each stage graph with the plan's layers lowered (QDQ int8 / blocked int4); int8
    activations are calibrated on what each stage really receives: the calibration images
    run through the stages before it."""
    symmetric = forms.get("int8_activations") == "symmetric"
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
        raise ExportError(f"quantized layers found in no cascade stage: {', '.join(missing[:3])}")
    ctx.cache[key] = lowered
    return lowered


def _export_stages(model: nn.Module, ctx: ExportContext, opset: int, forms: dict[str, str]) -> tuple[list[Path], list[dict]]:
    from edgevit.passes.token_patch import set_merge_form

    set_merge_form(model, forms.get("tome", "scatter"))
    stages = cascade_stages(model)
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = ctx.example_input[:1].expand(2, *ctx.example_input.shape[1:]).contiguous()
    inputs = stage_example_inputs(stages, example)
    folder = Path(tempfile.mkdtemp(prefix="edgevit-cascade-"))
    paths, described = [], []
    for k, (stage, x) in enumerate(zip(stages, inputs)):
        last = stage.head is None
        in_names = [INPUT] if k == 0 else feature_names(len(x), k)
        out_names = [FINAL_OUTPUT] if last else [*feature_names(len(inputs[k + 1]), k + 1), EXIT_OUTPUT]
        path = folder / f"stage{k}.onnx"
        export_module(stage, x, in_names, out_names, path, opset, varargs=True)
        paths.append(path)
        described.append({"inputs": in_names, "outputs": out_names, "exit_output": None if last else EXIT_OUTPUT,
                          "blocks": [stage.start + 1, stage.end], "name": FINAL_OUTPUT if last else exit_output_name(k)})
    return paths, described
