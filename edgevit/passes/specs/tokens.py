"""`kind: evit` and `kind: tome` declared: token reduction with static token counts.
ToMe has two export forms: scatter (ScatterElements with a reduction) and onehot (a
MatMul, for runtimes without the scatter). Implementation: `edgevit.passes.tokens`."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from edgevit.passes.base import PassConfig
from edgevit.passes.specs import PassSpec
from edgevit.schema import StrictModel
from edgevit.training_config import FinetuneConfig

BlockIndex = Annotated[int, Field(ge=1, le=10_000)]  # 1-based, as users count blocks


TokenCount = Annotated[int, Field(ge=0, le=100_000)]  # a negative r would add tokens


class EvitConfig(PassConfig):
    kind: Literal["evit"] = "evit"
    keep_rate: float = Field(0.7, gt=0, le=1, description="share of patch tokens kept at each location")
    locations: list[BlockIndex] | None = Field(None, description="1-based block indices; default 4, 7, 10 scaled to the depth")
    fuse: bool = True
    finetune: FinetuneConfig | None = None


class RampSpec(StrictModel):
    r: int = Field(ge=0)
    inflection: float = Field(0.0, ge=-1, le=1, description="r ramps linearly from r(1-i) to r(1+i) over the blocks")


class TomeConfig(PassConfig):
    kind: Literal["tome"] = "tome"
    r: TokenCount | list[TokenCount] | RampSpec | None = Field(None, description="tokens merged per block: int, per-block list, or {r, inflection}")
    flops_reduction: float | None = Field(None, gt=0, lt=0.95, description="pick the constant r that removes this FLOPs share")
    blocks: list[BlockIndex] | Literal["evit"] | None = Field(
        None, description='1-based blocks that merge (default: all); "evit": EViT\'s 4/7/10 of 12, scaled to the depth')
    proportional_attention: bool = True
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _one_strength(self) -> "TomeConfig":
        if (self.r is None) == (self.flops_reduction is None):
            raise ValueError("give exactly one of r, flops_reduction")
        return self


class EvitSpec(PassSpec):
    kind = "evit"
    config_type = EvitConfig
    implementation = "edgevit.passes.tokens:EvitPass"

    def adapter_needs(self, cfg: Any) -> set[str]:
        return {"token_hook"}


class TomeSpec(PassSpec):
    kind = "tome"
    config_type = TomeConfig
    implementation = "edgevit.passes.tokens:TomePass"
    export_forms: ClassVar[dict[str, frozenset[str]]] = {"scatter": frozenset({"scatter_reduce"}), "onehot": frozenset()}

    def adapter_needs(self, cfg: Any) -> set[str]:
        return {"token_hook"}
