"""bundle.json as a typed contract: what an exporter writes and what the device runner reads.

Exporters build a ``BundleSpec`` and write it through ``Bundle.write`` (so a misspelt or
missing field fails at export, not on a device); host readers validate through it too.
``runtimes/bundle.schema.json`` is this model's JSON schema, shipped beside the runner for
devices and other tools (a test keeps it equal to the model). The runner, which cannot
import edgevit, checks ``schema_version`` itself and refuses versions it does not know.
No torch here.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgevit.schema import first_error

BUNDLE_SCHEMA_VERSION = 1


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TensorSpec(_Typed):
    name: str = Field(min_length=1)
    shape: list[int | str] | None = Field(None, description="ints, or names of dynamic axes ('batch')")
    dtype: str | None = None


class CascadeStage(_Typed):
    name: str
    file: str
    inputs: list[str]
    outputs: list[str]
    exit_output: str | None
    blocks: list[int]
    threshold: float | None = Field(description="null: never exit here (the last stage)")


class CascadeGraph(_Typed):
    """The whole cascade as one graph that returns early through If (export form if_graph)."""
    file: str
    thresholds_input: str = Field(description="float[exits] input: exit k when its score >= t_k (score: max softmax, "
                                              "or minus the entropy; +inf: never), fed from the stages' thresholds")
    index_output: str = Field(description="int64 scalar output: the exit taken (the last = the final classifier)")
    exits: list[int] | None = Field(None, description="the exits the graph can take (indices of the stages' exits), "
                                                      "chosen on the target; null: every exit")
    used_for: str = ""


class CascadeSpec(_Typed):
    rule: Literal["entropy", "confidence"]
    stages: list[CascadeStage] = Field(min_length=1)
    rule_meaning: str = ""
    graph: CascadeGraph | None = None


class ReferenceModel(_Typed):
    file: str
    files: list[str]
    purpose: str = ""


class TensorRtBuild(_Typed):
    """The engine build on the device, as allow-listed fields (the runner builds trtexec's
    arguments from them; never a command line)."""

    version: str | None
    precision_flags: list[Literal["noTF32", "fp16", "int8", "best"]]
    shapes: dict[str, list[int]]
    workspace_mib: int = Field(ge=1, le=1 << 20)
    timing_cache: str
    dla_core: int | None = Field(None, ge=0, le=7)
    engine_reproducible: Literal[False] = False


class BundleSpec(_Typed):
    schema_version: Literal[1] = BUNDLE_SCHEMA_VERSION
    profile: str
    format: str
    runtime: str
    precision: str
    model_file: str
    files: list[str] = Field(min_length=1)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    session_options: dict[str, Any] = Field(default_factory=dict)
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    label_names: list[str] | None = None
    cascade: CascadeSpec | None = None
    reference_model: ReferenceModel | None = None
    tensorrt: TensorRtBuild | None = None


def validated_bundle(data: dict[str, Any], where: str) -> BundleSpec:
    """``data`` as a BundleSpec, or a BundleError naming ``where`` and the field."""
    from edgevit.bundle_files import REEXPORT, BundleError

    try:
        return BundleSpec.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{where}: {first_error(exc, BundleSpec)}", REEXPORT) from None


def bundle_json_schema() -> dict[str, Any]:
    return BundleSpec.model_json_schema()
