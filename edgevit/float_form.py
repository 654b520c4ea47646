"""A quantized artifact against its own float form: the same compressed model (pruned,
token-reduced...) exported with no integer lowering, timed beside it on the target.

Integer kernels do not pay on every target. On an AVX2 CPU without VNNI, OpenVINO's int8
FullyConnected measured slower than its f32 one (BENCHMARKS.md, stacks section), so an int8
stack there loses to the same stack in float. The uncompressed baseline cannot show this:
the stack beats it either way. With ``profile.float_form: time`` every timed quantized
artifact is compared with its float form (the runner times both interleaved in one process,
the float form checked against PyTorch like any export); with ``publish_faster`` the float
form is published instead where it runs faster by more than the noise margin (it trades the
quantized file's size for speed on that target). The report records both timings and which
form was published.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit import progress
from edgevit.evaluation import check_all_outputs
from edgevit.exporters.base import Bundle
from edgevit.lowering import LoweringPlan

POLICIES = ("skip", "time", "publish_faster")
# the float form must beat the quantized artifact by this much to replace it: it is larger,
# and on a shared machine two equal graphs measure a few per cent apart
PUBLISH_MARGIN = 1.05


def wanted(policy: str, plan: LoweringPlan, artifact: dict[str, Any], bundle_data: dict[str, Any]) -> bool:
    """Measured for a quantized artifact that was timed in its own runtime and passed its
    check; a cascade is left to the exits pass's own speed gate (thresholds are calibrated
    on the quantized stages)."""
    return (policy != "skip" and plan.quantized and artifact["check"]["passed"]
            and artifact["checked_in"] == artifact["runtime"] and "cascade" not in bundle_data)


def measure(export_float, quantized_dir: Path, transport, profile_spec, check_x, reference: dict[str, Any],
            random_weights: bool) -> tuple[dict[str, Any], Bundle]:
    """Export the float form (``export_float()`` returns its bundle), check it against
    PyTorch and time it interleaved with the quantized bundle. Returns the comparison for
    the report and the float bundle."""
    bundle = export_float()
    p = profile_spec
    progress.step(f"timing the float form of {quantized_dir.name} against the quantized artifact (interleaved, "
                  f"{p.runs} runs, {p.threads} threads, batch {p.batch})")
    result = transport.run(bundle.path, runs=p.runs, warmup=p.warmup, threads=p.threads, batch=p.batch,
                           inputs=check_x.numpy(), baseline=quantized_dir)
    check = check_all_outputs(reference, result.outputs or {}, bundle.data["precision"], random_weights)
    data, quantized = result.data, (result.data.get("baseline") or {})
    comparison: dict[str, Any] = {
        "what": "the same compressed model exported without integer lowering (fp32), same runtime and target, "
                "timed interleaved with the quantized artifact",
        "policy": p.float_form, "check_passed": check["passed"], "float_size_bytes": bundle.size_bytes,
    }
    if "cpu_time_ms" not in quantized or not data.get("speedup_cpu"):
        return {**comparison, "timed": False, "reason": quantized.get("error", "the runner returned no timing"),
                "published": "quantized"}, bundle
    # speedup_cpu = quantized CPU time / float CPU time (the quantized bundle ran as the baseline)
    float_gain = data["speedup_cpu"]
    comparison.update(timed=True, quantized_cpu_ms=quantized["cpu_time_ms"], float_cpu_ms=data["cpu_time_ms"],
                      quantized_vs_float=1 / float_gain, rounds=quantized.get("rounds"),
                      quantized_faster=float_gain < 1.0)
    comparison["published"] = "float" if publishes(p.float_form, check["passed"], float_gain) else "quantized"
    return comparison, bundle


def publishes(policy: str, float_checked: bool, float_gain: float) -> bool:
    """The float form replaces the quantized artifact only when asked, checked, and faster
    by more than the margin (``float_gain`` = quantized time / float time)."""
    return policy == "publish_faster" and float_checked and float_gain > PUBLISH_MARGIN


def warning(name: str, comparison: dict[str, Any]) -> str | None:
    """One line for the console and the report when integer kernels did not pay here."""
    if not comparison.get("timed") or comparison["quantized_faster"]:
        return None
    what = (f"{name}: the quantized artifact is not faster than the same compressed model in float on this target "
            f"({comparison['quantized_cpu_ms']:.2f} vs {comparison['float_cpu_ms']:.2f} ms CPU time, interleaved)")
    if comparison["published"] == "float":
        return what + f"; published the float form (profile.float_form: publish_faster), {comparison['float_size_bytes'] / 1e6:.1f} MB"
    if comparison["policy"] == "publish_faster":
        reason = "its check failed" if not comparison["check_passed"] else f"less than {PUBLISH_MARGIN - 1:.0%} faster"
        return what + f"; kept the quantized artifact ({reason})"
    return what + "; `profile.float_form: publish_faster` would publish the float form"
