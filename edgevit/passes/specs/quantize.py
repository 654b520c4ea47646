"""`kind: quantize` declared: per-layer weight precision (LRP / uniform / error) and int8
static activations. A target must execute every precision the config can plan;
simulated precisions (int2/int3/int6) run as fp32 weights. Must come after exits (the
thresholds are re-calibrated on the quantized stages). Implementation:
`edgevit.passes.quantize`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgevit.passes.base import PassConfig
from edgevit.passes.specs import SIMULATED_PRECISIONS, PassSpec
from edgevit.schema import StrictModel

Precision = Literal["int2", "int3", "int4", "int6", "int8", "fp32"]


class Budget(StrictModel):
    avg_weight_bits: float | None = Field(None, gt=0, le=32, description="mean nominal bits per governed weight (4 = all int4)")
    size_mb: float | None = Field(None, gt=0, le=1e6, description="size of the governed weights in MB (1e6 bytes, nominal bits)")

    @model_validator(mode="after")
    def _one(self) -> "Budget":
        if (self.avg_weight_bits is None) == (self.size_mb is None):
            raise ValueError("give exactly one of avg_weight_bits, size_mb")
        return self


class QuantizeConfig(PassConfig):
    kind: Literal["quantize"] = "quantize"
    method: Literal["lrp", "uniform", "error"] = Field(
        "lrp", description="lrp: relevance-weighted allocation; uniform: one precision; error: allocation by quantization "
        "error alone (every layer weighted equally; the ablation that shows what LRP adds)")
    weights: Precision = Field("int8", description="uniform: the precision of every governed layer")
    candidates: list[Precision] = Field(default_factory=lambda: ["int4", "int8"], description="lrp: precisions to choose from")
    budget: Budget | None = Field(None, description="lrp: the bit budget")
    activations: Literal["int8", "fp32"] = Field("int8", description="int8: static per-tensor (layers at int8 weights)")
    activation_clip_percentile: float | None = Field(
        None, gt=90, lt=100, description="clip activation outliers at this percentile when calibrating (None: min/max)")
    int4_block: int = Field(32, ge=8, le=4096, description="int4 block along the input; smaller where the width needs it")
    repq: bool = Field(True, description="RepQ-style post-LayerNorm channel reparameterisation")
    repq_strength: float = Field(0.5, ge=0, le=1)
    keep_fp32: list[str] = Field(default_factory=list, description="module names kept fp32 (the classifier always is)")
    relevance_images: int = Field(32, ge=1, le=1024)

    @model_validator(mode="after")
    def _method_needs(self) -> "QuantizeConfig":
        if self.method in ("lrp", "error") and self.budget is None:
            raise ValueError(f"method {self.method} needs a budget ({{avg_weight_bits: ...}} or {{size_mb: ...}})")
        return self


class QuantizeSpec(PassSpec):
    kind = "quantize"
    config_type = QuantizeConfig
    implementation = "edgevit.passes.quantize:QuantizePass"
    needs_final_weights = True  # relevance, ranges and RepQ are computed on the weights as they are

    def precisions(self, cfg: Any) -> set[str]:
        planned = {cfg.weights} if cfg.method == "uniform" else set(cfg.candidates)
        return {"fp32" if p in SIMULATED_PRECISIONS else p for p in planned} - {"fp32"}

    def precision_fix(self, cfg: Any, available: set[str]) -> str:
        runnable = sorted(p for p in ("int4", "int8") if p in available)
        if cfg.method == "uniform":
            return f"set weights to one of {', '.join(runnable) or 'fp32'}"
        return f"set candidates to [{', '.join(runnable)}]" if runnable else "remove the quantize pass"

    def int4_blocks(self, cfg: Any) -> set[int]:
        return {cfg.int4_block}
