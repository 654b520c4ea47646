"""`kind: exits` declared: LGViT early-exit heads, exported as a cascade of stage graphs.
Needs a runtime that runs cascades, training images, and nothing after it but quantize.
Implementation: `edgevit.passes.exits`."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edgevit.passes.base import PassConfig
from edgevit.passes.specs import PassSpec
from edgevit.training_config import FinetuneConfig

class ExitTrainConfig(FinetuneConfig):
    """Head training on cached features: more epochs and a larger rate than a fine-tune.
    ``loss: distill`` (default) matches each head to the final classifier's softened output;
    ``loss: ce`` trains each head on the labels instead (on vit_tiny_c10 an even mix of the
    two gave the same per-exit top-1 and fewer exits at a 0.5 pt budget: one-off, 2026-12-01)."""

    # 20 epochs at 3e-3, the cosine fitted to max_minutes (train_loop): swin_tiny_c10's block-5
    # head on 40000 images reached 0.738 held-out top-1 at 10 epochs x 1e-3, 0.753 at 10 x 3e-3,
    # 0.763 at 20 x 3e-3 (0.750 at 10 x 1e-2), and 42 -> 50 % of images left there at 0.5 pt;
    # vit_tiny_c10's block-1 head 0.718 -> 0.728 and 50 -> 54 % at 10 x 3e-3 (probe of 2026-12-02)
    epochs: float = Field(20.0, gt=0, le=1000)
    lr: float = Field(3e-3, gt=0, le=1)
    batch_size: int = Field(128, ge=1, le=4096)
    # 40000: on swin_tiny_c10 the heads gained 3-7 points of top-1 over 20000 (one-off, 2026-12-01)
    max_images: int | None = Field(40000, ge=1, le=100_000_000, description="seeded subset of --train-data whose features are cached (cache_gb caps it)")
    max_minutes: float | None = Field(8.0, gt=0, le=10_080)
    feature_weight: float = Field(0.0, ge=0, le=1000, description="weight of the MSE between a head's embedding and the final pre-logits")


# calibration_margin: auto. On images held out of --train-data the backbone fits its own
# training images, so the drop measured there is already pessimistic (bench exits 2026-12-03,
# vit 0.5 pt: -0.32 pt there, +0.11 on the test set) and one s.e. suffices. On a confirming half of
# --val-data the drop is an unbiased reading of a small sample: with one s.e., 12 % of
# synthetic draws overspent a 0.5 pt budget, with 1.645 3 %, at 0.93x the expected speed-up
# (README, calibration_margin), and bench exits met such a draw (vit: +0.30 +- 0.79 pt on the
# confirming half, -0.96 pt on the test set).
MARGIN_HELD_OUT_TRAIN = 1.0
MARGIN_CONFIRMING = 1.645


class ExitsConfig(PassConfig):
    kind: Literal["exits"] = "exits"
    after_blocks: list[Annotated[int, Field(ge=1, le=10_000)]] | None = Field(None, description="1-based blocks followed by an exit (not the last block)")
    count: int | None = Field(None, ge=1, le=10_000, description="number of exits spread evenly over the blocks")
    head: Literal["auto", "local", "global", "linear"] = Field(
        "auto", description="auto: local perception in the first half of the blocks, global aggregation after")
    rule: Literal["auto", "entropy", "confidence"] = Field(
        "auto", description="exit when the head is sure enough, by its entropy or its top softmax probability; auto: "
                            "calibrate both on the held-out images and keep the one with the lower expected latency")
    max_accuracy_drop: float = Field(0.5, ge=0, le=100, description="top-1 points the cascade may lose on held-out images")
    # budgets are fractions of a point: the held-out drop's standard error is about
    # sqrt(disagreement / n) (0.5 pt at 2000 images and 5 % of predictions changed)
    calibration_margin: float | Literal["auto"] = Field(  # bounds: _auto_or_a_reserve, one message for both forms
        "auto", description="paired standard errors of the held-out drop kept in reserve: the thresholds keep "
                            "drop + margin x s.e. within max_accuracy_drop (0: the drop alone, which the threshold "
                            f"search overfits to the held-out images); auto: {MARGIN_HELD_OUT_TRAIN:g} on images held out "
                            f"of --train-data (already pessimistic there), {MARGIN_CONFIRMING:g} on a confirming half "
                            "(one-sided 95 %: there the drop is unbiased and its noise is the risk)")
    confirmation: Literal["auto", "half", "none"] = Field(
        "auto", description="half: search the thresholds on one half of the held-out images and confirm them on the other "
                            "(the drop reported is the confirming half's; costs speed); auto: half "
                            "when they come from --val-data (there the search's own choices overspend the budget), none "
                            "on images held out of --train-data (there the drop is already pessimistic)")
    holdout_images: int = Field(5000, ge=100, le=10_000_000, description="held out from --train-data to calibrate the thresholds")
    cache_gb: float = Field(4.0, gt=0, le=100_000, description="cap on the cached features (the training subset shrinks to fit)")
    train: ExitTrainConfig = Field(default_factory=ExitTrainConfig)
    if_slower: Literal["fallback", "keep"] = Field(
        "fallback", description="when the exported cascade is not measurably faster than the same network without exits "
                                "on the target (speed-up less than 2 standard errors of its measurement above 1.0x): "
                                "publish that network instead (fallback) or the cascade anyway (keep); the run warns either way")

    @field_validator("calibration_margin", mode="before")
    @classmethod
    def _auto_or_a_reserve(cls, value: Any) -> Any:
        # the bounds live here, not in Field(ge, le): the union's two branches would each report
        if value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 5):
            return value
        raise ValueError("give auto or a number of standard errors from 0 to 5")

    @model_validator(mode="after")
    def _one_placement(self) -> "ExitsConfig":
        if self.after_blocks is not None and self.count is not None:
            raise ValueError("give after_blocks or count, not both")
        return self


class ExitsSpec(PassSpec):
    kind = "exits"
    config_type = ExitsConfig
    implementation = "edgevit.passes.exits:ExitsPass"
    requires = frozenset({"train_data"})
    unique = True
    followers = frozenset({"quantize"})  # heads are trained on the final backbone
    not_after = frozenset({"quantize"})
    # if_graph: the stages plus the whole cascade as one graph with If (batch 1 pays one
    # session call, not one per stage); stages: one graph per stage only
    export_forms = {"if_graph": frozenset({"cascade", "conditional_graph"}), "stages": frozenset({"cascade"})}
    needs_final_weights = True  # heads train on the frozen backbone  # quantize after exits: thresholds re-calibrated on the quantized stages

    def features(self, cfg: Any) -> set[str]:
        return {"cascade"}

    def adapter_needs(self, cfg: Any) -> set[str]:
        return {"stages", "exit_tokens"}
