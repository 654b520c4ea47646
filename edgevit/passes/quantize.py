"""`kind: quantize` — per-layer weight precision from LRP relevance (or uniform), int8
static activations, lowered to each runtime's real integer kernels by the exporters.

The pass itself keeps the PyTorch model in fp32 (after the function-preserving RepQ
reparameterisation); it decides and records the precision of every governed Linear. The
exporters lower that plan (ONNX: QDQ int8 + blocked int4 DequantizeLinear; OpenVINO: the
same graph imported), and the runner reads back which kernels really ran.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from edgevit.adapters import REPQ_PAIRS, adapter_for
from edgevit.adapters.probe import unlowerable_linears
from edgevit.errors import EdgevitError
from edgevit.passes.base import PassContext, PassRecord, register_pass
from edgevit.passes.lrp import linear_relevance
from edgevit.passes.quant_alloc import NOMINAL_BITS, SIMULATED, Layer, allocate, fake_quantize, int4_block, quant_error
from edgevit.passes.repq import reparameterize
from edgevit.passes.specs.quantize import QuantizeConfig  # noqa: F401  (the declaration; re-exported)

# int2/int3/int6 have no integer kernel in the runtimes here: simulated (fake-quant) only


def governed_layers(model: nn.Module, keep_fp32: list[str]) -> dict[str, nn.Linear]:
    """Every Linear except the classifier, early-exit heads (small, and outside model(x) so
    LRP cannot score them: they stay fp32) and the user's exclusions."""
    classifier = str((getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head"))
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not name.startswith(classifier) and not name.startswith("edgevit_exits.")
            and name not in keep_fp32}


def _repq_applies(model: nn.Module, cfg: QuantizeConfig, notes: list[str]) -> bool:
    """RepQ needs the family's norm->Linear pairs; without them it is skipped with a note."""
    if not (cfg.repq and cfg.activations == "int8"):
        return False
    adapter = adapter_for(model)
    if not adapter.has(REPQ_PAIRS):
        notes.append(f"RepQ skipped: the {adapter.family} adapter of {type(model).__name__} has no norm->Linear pairs")
        return False
    return True


def lowerable_layers(model: nn.Module, layers: dict[str, nn.Linear], input_size,
                     notes: list[str]) -> tuple[dict[str, nn.Linear], dict[str, str]]:
    """The layers the lowering can find in the exported graph, and why the others stay fp32:
    known from the plan, before any export."""
    unlowerable = unlowerable_linears(model, layers, input_size)
    for reason in sorted(set(unlowerable.values())):
        names = [n for n, r in unlowerable.items() if r == reason]
        notes.append(f"{len(names)} Linear layer(s) kept fp32, not addressable in the exported graph: {reason} "
                     f"(e.g. {names[0]})")
    return {n: m for n, m in layers.items() if n not in unlowerable}, unlowerable


@register_pass
class QuantizePass:
    kind = "quantize"
    config_type = QuantizeConfig
    requires: ClassVar[frozenset[str]] = frozenset()

    def apply(self, model: nn.Module, cfg: QuantizeConfig, ctx: PassContext) -> tuple[nn.Module, PassRecord]:
        notes: list[str] = []
        needs_data = cfg.method == "lrp" or cfg.activations == "int8"
        images = None
        if needs_data:
            ctx.calibration.require_real(ctx.allow_synthetic_calibration, "quantize (LRP relevance / static activations)")
            if ctx.calibration.synthetic:
                notes.append("calibrated on synthetic images (explicitly allowed): accuracy figures are not meaningful")
            images = ctx.calibration.images(ctx.data_config)
        repq = reparameterize(model, images, cfg.repq_strength) if _repq_applies(model, cfg, notes) else {}
        layers, unlowerable = lowerable_layers(model, governed_layers(model, cfg.keep_fp32), ctx.input_size, notes)
        blocks = {name: int4_block(m.in_features, cfg.int4_block) for name, m in layers.items()}
        no_int4 = [n for n, b in blocks.items() if b is None]
        if no_int4 and ("int4" in cfg.candidates or cfg.weights == "int4"):
            notes.append(f"{len(no_int4)} layer(s) have an input width no int4 block (>= 16) divides: kept at int8 "
                         f"(e.g. {no_int4[0]}, width {layers[no_int4[0]].in_features})")
        if cfg.method == "uniform":
            precision = {n: "int8" if cfg.weights == "int4" and blocks[n] is None else cfg.weights for n in layers}
            total = sum(m.weight.numel() for m in layers.values())
            scores = {}
            solution = {"avg_bits": sum(layers[n].weight.numel() * NOMINAL_BITS[p] for n, p in precision.items()) / total}
        else:
            scores = (linear_relevance(model, images[: cfg.relevance_images], layers) if cfg.method == "lrp"
                      else dict.fromkeys(layers, 1.0 / len(layers)))
            solution = self._allocate(layers, scores, blocks, cfg)
            precision = solution.pop("precision")
        simulated = sorted(n for n, p in precision.items() if p in SIMULATED)
        with torch.no_grad():
            for name in simulated:
                layers[name].weight.copy_(fake_quantize(layers[name].weight, precision[name]))
        if simulated:
            notes.append(f"SIMULATED: {len(simulated)} layer(s) at {', '.join(sorted({precision[n] for n in simulated}))} have "
                         "fake-quantized weights run by fp32 kernels; no runtime here executes that precision")
        weights = sum(m.weight.numel() for m in layers.values())
        structure = {
            "layer_precision": precision,
            "simulated_layers": simulated,
            "int4_block": {n: b for n, b in blocks.items() if precision[n] == "int4"},
            "activations": cfg.activations,
            "activation_clip_percentile": cfg.activation_clip_percentile,
        }
        metrics = {
            "method": cfg.method, "governed_layers": len(layers), "governed_weights": weights,
            "avg_weight_bits": solution["avg_bits"],
            "nominal_weight_mb": sum(layers[n].weight.numel() * NOMINAL_BITS[p] for n, p in precision.items()) / 8e6,
            "relevance": scores, "allocation": solution,
            "bits_per_layer": {n: NOMINAL_BITS[p] for n, p in precision.items()},
            "repq": repq,
        }
        if unlowerable:
            metrics["kept_fp32_not_lowerable"] = unlowerable
        notes.append("weights quantized by the runtimes' own kernels at export; the PyTorch model stays fp32")
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(mode="json"), structure=structure,
                                 metrics=metrics, notes=notes)

    @staticmethod
    def _allocate(layers: dict[str, nn.Linear], scores: dict[str, float], blocks: dict[str, int], cfg: QuantizeConfig) -> dict[str, Any]:
        items = [Layer(n, m.weight.numel(), scores[n],
                       {p: quant_error(m.weight, p, blocks[n]) for p in cfg.candidates if p != "int4" or blocks[n]})
                 for n, m in layers.items()]
        total = sum(i.numel for i in items)
        budget = cfg.budget.avg_weight_bits * total if cfg.budget.avg_weight_bits else cfg.budget.size_mb * 8e6
        try:
            return allocate(items, cfg.candidates, budget)
        except ValueError as exc:
            raise EdgevitError(f"quantize: {exc}", "raise the budget or add a cheaper candidate") from None

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        return model  # RepQ and fake-quant changed weights only (saved in the safetensors); shapes are unchanged
