"""The Pass contract: a registered, config-typed transform of a PyTorch model.

Passes run once on the PyTorch model; lowering to each runtime is the exporters' job.
A pass returns the new model and a record of what it really did. The record is data
(JSON-able): it goes into the report and into ``model/config.json`` so the compressed
structure can be rebuilt from the original architecture plus the records (``rebuild``),
without ever pickling a module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from edgevit.schema import StrictModel

if TYPE_CHECKING:  # recipes and `edgevit validate` import this module: no torch at run time
    from torch import nn


class PassConfig(StrictModel):
    """Base of every pass's recipe block; subclasses narrow ``kind`` to a Literal."""

    kind: str


class PassRecord(BaseModel):
    """What a pass did: the structural facts needed to rebuild it, and figures to report."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    config: dict[str, Any]
    structure: dict[str, Any] = {}  # replayed by Pass.rebuild (heads kept, tokens per block...)
    metrics: dict[str, Any] = {}  # reported only (FLOPs before/after, scores, bits per layer)
    training: dict[str, Any] | None = None  # epochs, wall time, data, or None = training-free
    notes: list[str] = []


@dataclass
class PassContext:
    """What a pass may use besides the model; everything optional is None when absent."""

    seed: int
    input_size: tuple[int, int, int]
    data_config: dict[str, Any] = field(default_factory=dict)  # timm preprocessing of the model
    label_names: list[str] | None = None
    teacher: nn.Module | None = None  # the uncompressed model, for distillation
    calibration: Any = None  # edgevit.calibration.CalibrationSet
    train_data: Path | None = None
    # validation images the model was not trained on (compress --val-data): what a pass
    # calibrates on when images it was trained on would flatter it (exit thresholds)
    val_data: Path | None = None
    allow_synthetic_calibration: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportedArtifact:
    """What a pass may use to finish its work on an exported, checked artifact (e.g. the exits
    pass re-calibrates thresholds on the quantized stages as the runtime runs them)."""

    bundle_dir: Path
    quantized: bool
    transport: Any  # edgevit.profiling.Transport: runs the artifact where it is profiled
    threads: int
    batch: int
    train_data: Path | None
    data_config: dict[str, Any]
    label_names: list[str] | None
    run_cache: dict[str, Any]  # shared by the artifacts of one run (e.g. images read once)
    # rewrites a cascade bundle with a subset of its exits, as one graph or chained stages
    # (edgevit.exporters.cascade_forms.CascadeForms; None: the bundle was not exported
    # with the one-graph form, or its intermediate graphs are gone)
    cascade_forms: Any = None
    val_data: Path | None = None  # compress --val-data (PassContext.val_data)


class Pass(Protocol):
    kind: ClassVar[str]
    config_type: ClassVar[type[PassConfig]]
    requires: ClassVar[frozenset[str]]  # e.g. {"train_data"}; checked before any work

    def apply(self, model: nn.Module, cfg: PassConfig, ctx: PassContext) -> tuple[nn.Module, PassRecord]:
        ...

    def rebuild(self, model: nn.Module, record: PassRecord) -> nn.Module:
        """Re-create the compressed structure (not the weights) from a saved record."""
        ...

    # optional: ``after_export(record: dict, artifact: ExportedArtifact) -> dict | None``,
    # fields added to the artifact's report entry (called for artifacts that passed their
    # check in their own runtime)


PASS_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.kind in PASS_REGISTRY:
        raise ValueError(f"pass kind '{cls.kind}' registered twice")
    PASS_REGISTRY[cls.kind] = cls
    return cls
