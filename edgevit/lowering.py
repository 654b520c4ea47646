"""The lowering plan: what the passes decided, resolved for one target, as frozen data.

``LoweringPlan.from_records`` reads the pass records (precision per layer, int4 blocks,
activations, cascade); ``for_profile`` resolves them against one export profile and its
runtime's capabilities: the opset, the export form of every pass that has several (ToMe's
scatter or one-hot merge), int8 activation symmetry. Both are pure functions of their
inputs (no torch, no model), so every exporter of a run lowers from the same facts and a
plan can be unit-tested without exporting anything.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

INT4_MIN_OPSET = 21  # blocked int4 DequantizeLinear exists from opset 21
# export_forms keys of a profile that choose a lowering rather than a pass's form
LOWERING_CHOICES = {
    # symmetric: zero points 0 (TensorRT needs them); mixed: symmetric where the calibrated
    # range is centred on zero, asymmetric elsewhere (see quantize_onnx.centre_activations)
    "int8_activations": ("asymmetric", "symmetric", "mixed"),
    # 7bit: int8 weights in [-64, 63], so x86 CPUs without VNNI (AVX2's saturating u8 x s8
    # pair sums, vpmaddubsw) cannot overflow; 8bit: full range (VNNI, GPUs)
    "int8_weights": ("8bit", "7bit"),
}


@dataclass(frozen=True)
class LoweringPlan:
    default_precision: str = "fp32"
    layer_precision: dict[str, str] = field(default_factory=dict)
    int4_block: dict[str, int] = field(default_factory=dict)
    activations: str = "fp32"
    activation_clip_percentile: float | None = None  # None: min/max calibration
    simulated_layers: list[str] = field(default_factory=list)  # fake-quant weights, executed by fp32 kernels
    pass_records: list[dict[str, Any]] = field(default_factory=list)
    cascade: dict[str, Any] | None = None  # exits pass structure: export one graph per stage
    # resolved for a target by for_profile (None/empty until then)
    target: str | None = None
    opset: int | None = None
    forms: dict[str, str] = field(default_factory=dict)  # pass kind -> export form
    activation_symmetry: str = "asymmetric"  # a LOWERING_CHOICES["int8_activations"] value
    reduced_weight_range: bool = False  # 7-bit int8 weights

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> "LoweringPlan":
        fields: dict[str, Any] = {"pass_records": list(records), "layer_precision": {}, "int4_block": {}, "simulated_layers": []}
        for record in records:
            structure = record["structure"]
            if record["kind"] == "exits" and structure["heads"]:  # no exit paid for itself: a plain graph
                fields["cascade"] = structure
            if "layer_precision" in structure:  # a pass that sets per-layer precision (quantize)
                simulated = structure.get("simulated_layers", [])
                fields["simulated_layers"] += simulated
                # what the runtime executes: simulated layers carry grid values in fp32 weights
                fields["layer_precision"].update({n: "fp32" if n in simulated else p
                                                  for n, p in structure["layer_precision"].items()})
                fields["int4_block"].update(structure.get("int4_block", {}))
                fields["activations"] = structure.get("activations", "fp32")
                fields["activation_clip_percentile"] = structure.get("activation_clip_percentile")
        return cls(**fields)

    def for_profile(self, profile: Any) -> "LoweringPlan":
        """This plan resolved for one export profile (pure: same inputs, same plan)."""
        from edgevit.capabilities import resolve_export_form, runtime
        from edgevit.passes.specs import pass_specs

        caps = runtime(profile.runtime, f"export profile '{profile.name}': ")
        specs = pass_specs()
        forms = {}
        for record in self.pass_records:
            spec = specs.get(record["kind"])
            if spec is not None and spec.export_forms:
                forms[record["kind"]] = resolve_export_form(spec, _Kind(record["kind"]), profile, caps,
                                                            f"export profile '{profile.name}'")
        opset = profile.opset
        if any(p == "int4" for p in self.layer_precision.values()):
            opset = max(opset, INT4_MIN_OPSET)
        symmetry = profile.export_forms.get("int8_activations", "asymmetric")
        reduced = profile.export_forms.get("int8_weights", "8bit") == "7bit"
        return dataclasses.replace(self, target=profile.name, opset=opset, forms=forms, activation_symmetry=symmetry,
                                   reduced_weight_range=reduced)

    @property
    def symmetric_activations(self) -> bool:
        """Every activation zero point is 0 (what TensorRT's int8 needs)."""
        return self.activation_symmetry == "symmetric"

    @property
    def quantized(self) -> bool:
        return any(p in ("int8", "int4") for p in self.layer_precision.values())

    def float_form(self) -> "LoweringPlan":
        """The same compressed model with no integer lowering (fp32 weights and activations;
        simulated layers keep their grid values): what ``edgevit.float_form`` times a
        quantized artifact against."""
        return dataclasses.replace(self, layer_precision={}, int4_block={}, activations="fp32",
                                   activation_clip_percentile=None)

    def precisions(self) -> set[str]:
        return {self.default_precision, *self.layer_precision.values()}

    @property
    def summary_precision(self) -> str:
        """The precision whose check thresholds apply: the planned low precision, or fp32."""
        low = {p for p in self.layer_precision.values() if p != self.default_precision}
        return low.pop() if len(low) == 1 else ("mixed" if low else self.default_precision)

    def lowering_key(self) -> str:
        """What distinguishes two lowerings of the same fp32 graph."""
        layers = ",".join(f"{k}={v}" for k, v in sorted(self.layer_precision.items()))
        return (f"{layers}|blocks={sorted(self.int4_block.items())}|clip={self.activation_clip_percentile}"
                f"|sym={self.activation_symmetry}|w7={self.reduced_weight_range}")

    def graph_key(self) -> str:
        """What distinguishes the fp32 graphs of two targets: opset and pass export forms."""
        return f"opset{self.opset}-" + ",".join(f"{k}={v}" for k, v in sorted(self.forms.items()))


@dataclass(frozen=True)
class _Kind:
    kind: str
