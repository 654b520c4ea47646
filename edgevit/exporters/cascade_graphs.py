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

from torch import nn

from edgevit.cascade import EXIT_OUTPUT, FINAL_OUTPUT, INPUT, cascade_stages, exit_output_name, feature_names, stage_example_inputs
from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.exporters.onnx import export_module


def cascade_onnx_graphs(model: nn.Module, plan: LoweringPlan, ctx: ExportContext, opset: int,
                        forms: dict[str, str] | None = None) -> tuple[list[Path], dict[str, Any]]:
    """fp32 stage graphs (exported once per opset and forms per run) and the manifest."""
    forms = dict(forms or {})
    key = f"cascade-opset{opset}-{json.dumps(forms, sort_keys=True)}"
    if key not in ctx.cache:
        ctx.cache[key] = _export_stages(model, ctx, opset, forms)
    paths, described = ctx.cache[key]
    # thresholds live in the manifest only (not in the graphs): set per plan
    stages = [{**stage, "threshold": None if stage["exit_output"] is None else plan.cascade["thresholds"][k]}
              for k, stage in enumerate(described)]
    manifest = {"rule": plan.cascade["rule"], "stages": stages,
                "rule_meaning": "confidence: exit if max softmax >= threshold; entropy: exit if softmax entropy <= threshold; "
                                "threshold null: never exit there"}
    return paths, manifest


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
