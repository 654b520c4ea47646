"""`kind: swin_merge` declared: training-free token merging for Swin v1 / v2 (merge ->
MLP -> unmerge on the token grid, ToMe-for-Stable-Diffusion style), static token counts.
One export form: the kernels use Gather, never ScatterElements, so every runtime (TensorRT
included) runs the same graph. Implementation: `edgevit.passes.swin_merge`."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edgevit.passes.base import PassConfig
from edgevit.passes.specs import PassSpec
from edgevit.passes.specs.tokens import BlockIndex
from edgevit.training_config import FinetuneConfig

StageIndex = Annotated[int, Field(ge=1, le=16)]  # 1-based, as the Swin paper counts stages


class SwinMergeConfig(PassConfig):
    kind: Literal["swin_merge"] = "swin_merge"
    ratio: float = Field(0.5, ge=0, lt=1, description="share of a merging block's tokens merged away before its MLP")
    stride: int = Field(2, ge=2, le=4, description="cells of stride x stride tokens; one destination per cell")
    stages: list[StageIndex] | None = Field(None, description="1-based stages that merge (default: every stage whose grid the stride divides)")
    blocks: list[BlockIndex] | None = Field(None, description="1-based blocks that merge, counted over all stages (default: all in `stages`)")
    match: Literal["cell", "grid"] = Field("cell", description="a token merges into its own cell's destination, or the most similar one of the grid")
    finetune: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _fits_a_cell(self) -> "SwinMergeConfig":
        most = 1 - 1 / self.stride ** 2
        if self.ratio > most:
            raise ValueError(f"ratio {self.ratio} > {most:.4g}: a {self.stride}x{self.stride} cell keeps one token; lower ratio or raise stride")
        return self


class SwinMergeSpec(PassSpec):
    kind = "swin_merge"
    config_type = SwinMergeConfig
    implementation = "edgevit.passes.swin_merge:SwinMergePass"

    def adapter_needs(self, cfg: Any) -> set[str]:
        return {"grid_token_hook"}
