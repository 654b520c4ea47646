"""Every compress run with passes times the uncompressed model beside each artifact, on the
same target, interleaved; the report opens with what the user got and flags an artifact
that is not faster than the float model."""
from __future__ import annotations

import json

from edgevit.profiling import runner_module
from edgevit.report import render_markdown


class _Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, feeds):
        self.log.append(self.name)


def test_runner_interleaves_artifact_and_baseline_in_rounds():
    log = []
    a, b = _Recorder("a", log), _Recorder("b", log)
    stats = runner_module().time_interleaved([(a, {}), (b, {})], runs=6, warmup=1, rounds=3)
    assert log == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-up each, then alternating blocks
    assert all(s["cpu_time_ms"] >= 0 and s["p50_ms"] >= 0 for s in stats)


def test_compress_times_the_uncompressed_model_and_reports_it(cli, write_recipe, images, tmp_path):
    recipe = write_recipe("name: b\nmodel: {name: test_vit, model_args: {num_classes: 2}}\n"
                          "passes: [{kind: prune, flops_reduction: 0.3}]\nexports: [x86-onnxruntime]\n"
                          "evaluation: {batch_size: 6, check_batch: 2}\nprofile: {runs: 6, warmup: 1, threads: 1}\n")
    result = cli("compress", "--recipe", recipe, "--data", images, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    base = report["artifacts"][0]["baseline"]
    assert base["timed"] and base["rounds"] >= 1 and base["speedup_cpu"] > 0 and base["cpu_time_ms"] > 0
    assert base["size_ratio"] > 1.2  # -30 % FLOPs by removing heads/channels: a smaller file than the float model
    assert report["profile"]["x86-onnxruntime"]["baseline"]["cpu_time_ms"] == base["cpu_time_ms"]
    assert "uncompressed" in report["accuracy"]["top1"]
    acc = report["accuracy"]  # each change against the model as loaded comes with its paired standard error
    assert acc["change_se_against"] == "uncompressed" and set(acc["change_se"]) == {"pytorch", "x86-onnxruntime"}
    md = (tmp_path / "run" / "report.md").read_text()
    assert "paired standard error" in md
    assert md.index("## Summary: what you got, per target") < md.index("## Passes")  # the first screen
    assert "x smaller" in md and "speed-up vs uncompressed" in md
    assert not list((tmp_path / "run").rglob("baseline-*"))  # baselines are timed, not published


def test_recipe_can_turn_the_baseline_off(cli, write_recipe, tmp_path):
    recipe = write_recipe("name: b\nmodel: {name: test_vit}\npasses: [{kind: prune, flops_reduction: 0.2}]\n"
                          "exports: [x86-onnxruntime]\nevaluation: {check_batch: 2}\n"
                          "profile: {runs: 2, warmup: 0, threads: 1, baseline: false}\n")
    assert cli("compress", "--recipe", recipe, "--out", tmp_path / "run").exit_code == 0
    assert "baseline" not in json.loads((tmp_path / "run" / "report.json").read_text())["artifacts"][0]


def _report(speedup: float) -> dict:
    artifact = {"name": "x86-openvino", "runtime": "openvino", "format": "openvino", "precision": "int8",
                "executed_precision": "int8", "simulated": False, "where_run": "this machine (local)",
                "checked_in": "openvino", "size_bytes": 7_000_000, "check": {"passed": True},
                "baseline": {"timed": True, "cpu_time_ms": 10.0, "p50_ms": 10.0, "rounds": 5, "speedup_cpu": speedup,
                             "speedup_p50": speedup, "size_bytes": 23_000_000, "size_ratio": 23 / 7, "faster": speedup > 1}}
    return {"model": {"architecture": "deit", "source": "deit", "weights": "w", "input_size": [3, 224, 224],
                      "random_weights": False},
            "recipe": {"name": "r", "path": "r.yaml", "sha256": "0" * 64, "seed": 0},
            "flops": {"before": 1, "after": 1}, "params": {"before": 1, "after": 1},
            "calibration": {"source": "data", "n": 1, "seed": 0, "overlaps_eval": False},
            "passes": [{"kind": "quantize", "config": {}, "metrics": {}}], "artifacts": [artifact],
            "accuracy": {"n": 100, "dataset": "d", "seed": 0, "label_mapping": "by name",
                         "top1": {"pytorch": 0.80, "uncompressed": 0.81, "x86-openvino": 0.80},
                         "agreement_with_pytorch": {"x86-openvino": 0.99}},
            "profile": {}, "thresholds": {}, "warnings": []}


def test_summary_flags_an_artifact_slower_than_the_float_model():
    slow = render_markdown(_report(0.8))
    assert "**NOT FASTER than the uncompressed model**" in slow and "(-1.00 pt)" in slow and "3.29x smaller" in slow
    assert "NOT FASTER" not in render_markdown(_report(1.9))


def test_summary_gives_the_top1_change_with_its_standard_error():
    report = _report(1.9)
    assert "+-" not in render_markdown(report).split("## Summary")[1].split("\n## ")[0]  # older reports: no s.e.
    report["accuracy"] |= {"change_se_against": "uncompressed", "change_se": {"pytorch": 0.004, "x86-openvino": 0.004}}
    summary = render_markdown(report).split("## Summary")[1].split("\n## ")[0]
    assert "(-1.00 +- 0.40 pt)" in summary and "paired standard error" in summary


def test_recipe_level_finetune_distills_the_whole_stack(cli, write_recipe, images, tmp_path):
    recipe = write_recipe("name: f\nmodel: {name: test_vit, model_args: {num_classes: 2}}\n"
                          "passes: [{kind: prune, flops_reduction: 0.3}, {kind: quantize, method: uniform, weights: int8}]\n"
                          "finetune: {epochs: 1, batch_size: 4, max_images: 8}\n"
                          "exports: [x86-onnxruntime]\nevaluation: {check_batch: 2}\n"
                          "profile: {runs: 2, warmup: 0, threads: 1, baseline: false}\n")
    result = cli("compress", "--recipe", recipe, "--train-data", images, "--calib-data", images, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "run" / "report.json").read_text())["training"]
    assert [t["pass"] for t in training] == ["recipe (whole stack)"] and training[0]["images_per_epoch"] == 8


def test_recipe_level_finetune_refuses_what_it_would_undo(cli, write_recipe):
    recipe = write_recipe("name: f\npasses: [{kind: prune, structure: unstructured, param_reduction: 0.5}]\n"
                          "finetune: {epochs: 1}\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2 and "unstructured pruning zeroes weights" in result.output
