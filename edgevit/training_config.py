"""The ``finetune:`` block a pass may carry: configuration only, no torch, so recipes
validate without loading the training code (`edgevit.training` runs it)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgevit.schema import StrictModel


class FinetuneConfig(StrictModel):
    """The ``finetune:`` block of a pass."""

    epochs: float = Field(1.0, gt=0, le=1000, description="passes over the (sub-sampled) training images; fractions allowed")
    lr: float = Field(1e-4, gt=0, le=1)
    weight_decay: float = Field(0.05, ge=0, le=1)
    batch_size: int = Field(64, ge=1, le=4096)
    loss: Literal["distill", "ce"] = "distill"
    temperature: float = Field(1.0, gt=0, le=100)
    max_images: int | None = Field(None, ge=1, le=100_000_000, description="seeded subset of --train-data per epoch")
    max_minutes: float | None = Field(None, gt=0, le=10_080, description="wall-time cap; training stops there and says so")
