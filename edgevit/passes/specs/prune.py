"""`kind: prune` declared: DIMAP / L1 structural pruning of heads and MLP channels.
Runs on any target (the result is a smaller fp32 model); needs per-head surgery from the
model family. Implementation: `edgevit.passes.prune`."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edgevit.passes.base import PassConfig
from edgevit.passes.specs import PassSpec
from edgevit.training_config import FinetuneConfig

Module = Literal["attention", "mlp"]


class PruneConfig(PassConfig):
    kind: Literal["prune"] = "prune"
    method: Literal["dimap", "l1"] = Field("dimap", description="dimap: DIMAP scores per structure; l1: naive L1 norm, one global ranking")
    allocation: Literal["cost_aware", "per_module"] = Field(
        "cost_aware", description="dimap only. cost_aware: rank by score per removed FLOP (or param) across modules; "
        "per_module: remove the same fraction of every module, each ranked on its own")
    structure: Literal["heads_channels", "unstructured", "2:4"] = "heads_channels"
    flops_reduction: float | None = Field(None, gt=0, lt=0.95, description="fraction of the model's FLOPs to remove")
    param_reduction: float | None = Field(None, gt=0, lt=0.95, description="fraction of the model's parameters to remove")
    per_module: dict[Module, Annotated[float, Field(gt=0, lt=0.95)]] | None = Field(
        None, description="fraction of each module's prunable FLOPs/params to remove")
    modules: list[Module] = Field(default_factory=lambda: ["attention", "mlp"])
    min_heads: int = Field(1, ge=1, le=1024, description="heads every block keeps")
    min_mlp_ratio: float = Field(0.05, gt=0, le=1, description="share of MLP channels every block keeps")
    channel_multiple: int = Field(16, ge=1, le=4096, description="kept MLP channels rounded to a multiple (int4 blocks, SIMD widths)")
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "PruneConfig":
        given = [t for t in (self.flops_reduction, self.param_reduction, self.per_module) if t is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of flops_reduction, param_reduction, per_module")
        if self.per_module and self.method == "l1":
            raise ValueError("per_module targets need method: dimap (l1 ranks globally)")
        if self.structure != "heads_channels" and self.flops_reduction is not None:
            raise ValueError("unstructured/2:4 pruning removes no FLOPs at runtime; use param_reduction")
        return self


class PruneSpec(PassSpec):
    kind = "prune"
    config_type = PruneConfig
    implementation = "edgevit.passes.prune:PrunePass"

    def recipe_finetune_conflict(self, cfg: Any) -> str | None:
        if cfg.structure != "heads_channels":
            return f"{cfg.structure} pruning zeroes weights that a recipe-level fine-tune would grow back"
        return None

    def adapter_needs(self, cfg: Any) -> set[str]:
        if cfg.structure != "heads_channels":
            return {"block_linears"}  # weight-level: the blocks' attention and MLP Linear layers
        # heads of a family without head surgery are kept with a note (Swin v2) when MLP
        # channels can go; only a family that can do neither of what was asked is refused
        return {"mlp_surgery"} if "mlp" in cfg.modules else {"head_surgery"}
