"""profile.float_form: a quantized artifact timed against the same compressed model in
float on the target, and the float form published where it is faster (publish_faster)."""
from __future__ import annotations

import json

import onnx
import pytest

from edgevit import float_form
from edgevit.lowering import LoweringPlan
from edgevit.report import render_markdown

RECIPE = ("name: ff\nmodel: {name: test_vit}\n"
          "passes: [{kind: prune, flops_reduction: 0.3}, {kind: quantize, method: uniform, weights: int8}]\n"
          "exports: [x86-onnxruntime]\nevaluation: {check_batch: 8}\n"
          "profile: {runs: 6, warmup: 1, threads: 1, float_form: POLICY}\n")


def _compress(cli, write_recipe, out, policy: str) -> dict:
    result = cli("compress", "--recipe", write_recipe(RECIPE.replace("POLICY", policy)), "--out", out)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def _op_types(run, artifact) -> set[str]:
    return {n.op_type for n in onnx.load(str(run / artifact["path"] / "model.onnx")).graph.node}


def test_publish_faster_replaces_the_artifact_with_its_checked_float_form(cli, write_recipe, tmp_path, monkeypatch):
    # margin 0: any float timing "wins", so the publish path runs whatever this machine measures
    monkeypatch.setattr(float_form, "PUBLISH_MARGIN", 0.0)
    run = tmp_path / "run"
    report = _compress(cli, write_recipe, run, "publish_faster")
    artifact = report["artifacts"][0]
    f = artifact["float_form"]
    assert f["timed"] and f["check_passed"] and f["quantized_cpu_ms"] > 0 and f["float_cpu_ms"] > 0
    assert f["published"] == "float" and f["quantized_vs_float"] == pytest.approx(f["quantized_cpu_ms"] / f["float_cpu_ms"],
                                                                                  rel=0.5)
    # the file on disk and its report entry are the float form's
    ops = _op_types(run, artifact)
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    assert artifact["precision"] == "fp32" and artifact["executed_precision"] == "fp32"
    assert artifact["check"]["passed"] and artifact["baseline"]["timed"]  # checked and timed like any artifact
    md = (run / "report.md").read_text()
    assert "## Quantized vs float form of the compressed model" in md and "float form: faster here than int8" in md
    assert not list(run.rglob("float-*"))  # the float form is published in place, nothing else left behind


@pytest.mark.parametrize("policy, checked, gain, published", [
    ("publish_faster", True, 1.3, True), ("publish_faster", True, 1.01, False),  # inside the noise margin
    ("publish_faster", False, 1.3, False), ("time", True, 1.3, False), ("skip", True, 1.3, False)])
def test_only_a_checked_clearly_faster_float_form_is_published(policy, checked, gain, published):
    assert float_form.publishes(policy, checked, gain) is published


def test_skip_is_the_default_and_a_float_plan_is_never_compared():
    plan = LoweringPlan(layer_precision={"blocks.0.mlp.fc1": "int8"}, activations="int8")
    checked = {"check": {"passed": True}, "checked_in": "onnxruntime", "runtime": "onnxruntime"}
    assert not float_form.wanted("skip", plan, checked, {})
    assert float_form.wanted("time", plan, checked, {})
    assert not float_form.wanted("time", plan.float_form(), checked, {})  # nothing quantized: nothing to compare
    assert not float_form.wanted("time", plan, {**checked, "checked_in": "onnxruntime", "runtime": "tensorrt"}, {})
    assert not float_form.wanted("time", plan, checked, {"cascade": {}})  # the exits pass gates cascades
    assert plan.float_form().lowering_key() != plan.lowering_key()


def test_warning_says_what_ran_and_what_was_published():
    timed = {"timed": True, "quantized_cpu_ms": 12.0, "float_cpu_ms": 9.0, "quantized_faster": False, "policy": "time",
             "published": "quantized", "check_passed": True, "float_size_bytes": 8_000_000}
    assert "`profile.float_form: publish_faster` would publish the float form" in float_form.warning("x86-openvino", timed)
    published = float_form.warning("x86-openvino", {**timed, "policy": "publish_faster", "published": "float"})
    assert "published the float form" in published and "12.00 vs 9.00 ms" in published
    assert float_form.warning("x86-openvino", {**timed, "quantized_faster": True}) is None


def test_report_lists_the_comparison():
    artifact = {"name": "x86-openvino", "runtime": "openvino", "format": "openvino", "precision": "fp32",
                "executed_precision": "fp32", "simulated": False, "where_run": "here", "checked_in": "openvino",
                "size_bytes": 9_000_000, "check": {"passed": True},
                "float_form": {"timed": True, "quantized_cpu_ms": 12.0, "float_cpu_ms": 9.0, "quantized_vs_float": 0.75,
                               "float_size_bytes": 9_000_000, "check_passed": True, "published": "float"}}
    report = {"model": {"architecture": "deit", "source": "deit", "weights": "w", "input_size": [3, 224, 224]},
              "recipe": {"name": "r", "path": "r.yaml", "sha256": "0" * 64, "seed": 0},
              "flops": {"before": 1, "after": 1}, "params": {"before": 1, "after": 1},
              "calibration": {"source": "data", "n": 1, "seed": 0, "overlaps_eval": False},
              "passes": [{"kind": "quantize", "config": {}, "metrics": {}}], "artifacts": [artifact],
              "accuracy": None, "profile": {}, "thresholds": {}, "warnings": []}
    md = render_markdown(report)
    assert "| x86-openvino | 12.00 | 9.00 | 0.75x | 9.00 | passed | float |" in md
    assert "float form: faster here than int8" in md
