"""report.json as read back by `edgevit report`: the fields the Markdown / HTML rendering
uses, typed, so a hand-edited or foreign file is one line naming the field, never a
KeyError deep in the renderer. Other keys pass through (the report grows by issue)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Number = float | int


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Model(_Open):
    architecture: str
    source: str
    weights: str
    input_size: list[int]


class _Recipe(_Open):
    name: str
    path: str
    sha256: str
    seed: int


class _BeforeAfter(_Open):
    before: int | None  # required, null when not counted
    after: int | None


class _Calibration(_Open):
    source: str
    n: int
    seed: int
    overlaps_eval: bool


class _Training(_Open):
    epochs: Number
    images_per_epoch: int
    wall_s: Number
    loss: str
    loss_first: Number
    loss_last: Number
    stopped_by: str


class _Pass(_Open):
    kind: str
    config: dict[str, Any] = {}
    training: _Training | None = None
    metrics: dict[str, Any] = {}
    notes: list[str] = []


class _Check(_Open):
    passed: bool
    metric: str | None = None
    value: Number | list[Number] | None = None  # a list for the shape check
    reason: str | None = None


class _Baseline(_Open):
    """The uncompressed model timed beside the artifact (ratios are divided by: > 0)."""

    timed: bool = False
    reason: str | None = None
    size_ratio: float | None = Field(None, gt=0)
    speedup_cpu: float | None = Field(None, gt=0)
    speedup_p50: float | None = Field(None, gt=0)
    cpu_time_ms: Number | None = None
    size_bytes: int | None = Field(None, ge=0)
    rounds: int | None = None
    faster: bool | None = None

    @model_validator(mode="after")
    def _timed_has_figures(self) -> "_Baseline":
        # faster is null for a cascade (timed through every stage: its worst case, not a verdict)
        figures = ("speedup_cpu", "speedup_p50", "cpu_time_ms", "size_bytes", "size_ratio", "rounds")
        missing = [k for k in figures if getattr(self, k) is None]
        if self.timed and missing:
            raise ValueError(f"a timed baseline needs {', '.join(missing)}")
        return self


class _Artifact(_Open):
    name: str
    runtime: str
    checked_in: str
    baseline: _Baseline | None = None
    format: str
    precision: str
    simulated: bool
    executed_precision: str
    size_bytes: int = Field(ge=0)
    check: _Check
    where_run: str


class _Accuracy(_Open):
    n: int
    dataset: str
    seed: int
    label_mapping: str
    top1: dict[str, Number]
    agreement_with_pytorch: dict[str, Number] = {}


class _Latency(_Open):
    mean_ms: Number | None = None
    p50_ms: Number | None = None
    p90_ms: Number | None = None


class _CascadeArtifact(_Open):
    evaluated: bool = True
    reason: str | None = None
    accuracy: Number | None = None
    full_model_accuracy: Number | None = None
    exit_histogram: list[int] | None = None
    latency: _Latency | None = None
    full_model_latency: _Latency | None = None
    speedup_mean: Number | None = None
    speedup_se: Number | None = None
    where_run: str | None = None

    @model_validator(mode="after")
    def _measured(self) -> "_CascadeArtifact":
        if self.evaluated and (self.latency is None or self.exit_histogram is None):
            raise ValueError("an evaluated cascade needs latency and exit_histogram")
        if not self.evaluated and self.reason is None:
            raise ValueError("a cascade not evaluated needs a reason")
        return self


class _Cascade(_Open):
    evaluated: bool
    reason: str | None = None
    images: int | None = None
    data: str | None = None
    artifacts: dict[str, _CascadeArtifact] = {}


class _Timing(_Open):
    runtime: str
    where_run: str
    reason: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    batch: int | None = None
    runs: int | None = None
    p50_ms: Number | None = None
    p90_ms: Number | None = None
    p99_ms: Number | None = None
    mean_ms: Number | None = None
    cpu_time_ms: Number | None = None
    load_avg: list[Number] | None = None
    device: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _reason_when_not_run(self) -> "_Timing":
        if self.where_run == "not run" and self.reason is None:
            raise ValueError("a target that was not run needs a reason")
        return self


class ReportFile(_Open):
    schema_version: Literal[1]
    model: _Model
    recipe: _Recipe
    flops: _BeforeAfter
    params: _BeforeAfter
    calibration: _Calibration
    warnings: list[str] = []
    passes: list[_Pass]
    artifacts: list[_Artifact]
    accuracy: _Accuracy | None = None
    cascade: _Cascade | None = None
    profile: dict[str, _Timing]
    thresholds: dict[str, dict[str, Number | str]]


def bits_problem(report: dict[str, Any]) -> str | None:
    """metrics.bits_per_layer / relevance are free-form per pass; where the renderer
    charts them they must be name -> number."""
    for i, p in enumerate(report["passes"]):
        metrics = p.get("metrics") or {}
        for key in ("bits_per_layer", "relevance"):
            value = metrics.get(key)
            if value is None:
                continue
            if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value.values()):
                return f"passes[{i}].metrics.{key}: expected a mapping of layer name -> number"
    return None
