"""End-to-end: `edgevit compress` and friends on tiny timm models (seconds each)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_SWIN, write_images
from edgevit.artifacts import verify_manifest
from edgevit.models import load_model_folder

RECIPE = """\
name: tiny
model:
  name: {model}
  model_args: {args}
exports: [x86-onnxruntime, x86-openvino]
evaluation: {{batch_size: 5, check_batch: 4}}
profile: {{runs: 5, warmup: 1, threads: 1}}
"""


def tiny_recipe(write_recipe, model="test_vit", args=None):
    return write_recipe(RECIPE.format(model=model, args=json.dumps(args or {})))


@pytest.mark.parametrize("model, args", [("test_vit", {}), TINY_SWIN], ids=["vit", "swin"])
def test_compress_end_to_end(cli, write_recipe, images, tmp_path, model, args):
    out = tmp_path / "run"
    result = cli("compress", "--recipe", tiny_recipe(write_recipe, model, args), "--data", images, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1 and report["passes"] == [] and report["model"]["random_weights"]
    assert report["flops"]["before"] == report["flops"]["after"] > 0
    assert {a["name"] for a in report["artifacts"]} == {"x86-onnxruntime", "x86-openvino"}
    for a in report["artifacts"]:
        assert a["check"]["passed"] and a["check"]["max_abs_diff"] < 1e-3 and a["executed_precision"] == "fp32"
        assert a["where_run"].startswith("this machine") and not a["simulated"]
        p = report["profile"][a["name"]]
        assert p["runs"] == 5 and p["threads"] == 1 and p["p50_ms"] > 0 and p["cpu_time_ms"] > 0
    acc = report["accuracy"]
    assert acc["n"] == 12 and set(acc["top1"]) == {"pytorch", "x86-onnxruntime", "x86-openvino"}
    assert acc["agreement_with_pytorch"]["x86-onnxruntime"] == 1.0
    assert report["calibration"]["source"] == "data" and report["calibration"]["overlaps_eval"]
    assert verify_manifest(out) == []
    assert "random" in (out / "report.md").read_text()
    # the saved model rebuilds from data and matches the ONNX artifact
    rebuilt = load_model_folder(out / "model")
    x = torch.randn(2, *rebuilt.input_size)
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "artifacts/x86-onnxruntime/model.onnx"))
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], rebuilt.model(x).numpy(), rtol=1e-3, atol=1e-4)


def test_compress_without_data_has_no_accuracy_and_synthetic_calibration(cli, write_recipe, tmp_path):
    out = tmp_path / "run"
    result = cli("compress", "--recipe", tiny_recipe(write_recipe), "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] is None and report["calibration"]["source"] == "synthetic"


BAD_RECIPES = {
    "unknown key": ("name: x\nmodel: {name: test_vit}\nexprots: []\n", "exprots: unknown key"),
    "wrong type": ("name: x\nmodel: {name: test_vit}\nprofile: {runs: many}\n", "profile.runs"),
    "unknown pass": ("name: x\nmodel: {name: test_vit}\npasses: [{kind: tomee}]\n", "passes[0].kind: unknown 'tomee'"),
    "unknown profile": ("name: x\nmodel: {name: test_vit}\nexports: [x86-tensorrtt]\n", "unknown export profile"),
    "duplicate key": ("name: x\nname: y\n", "duplicate key 'name'"),
    "unknown model": ("name: x\nmodel: {name: vit_tinyy_patch16_224}\nexports: [x86-onnxruntime]\n", "not a timm model name"),
}


@pytest.mark.parametrize("case", BAD_RECIPES, ids=list(BAD_RECIPES))
def test_bad_recipes_fail_cleanly(cli, write_recipe, tmp_path, case):
    text, expected = BAD_RECIPES[case]
    out = tmp_path / "run"
    result = cli("compress", "--recipe", write_recipe(text), "--out", out)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert result.output.count("error:") == 1
    assert not out.exists() and not list(tmp_path.glob(".staging-*"))


def test_bad_inputs_fail_cleanly(cli, write_recipe, images, tmp_path):
    recipe = tiny_recipe(write_recipe)
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"architecture": "test_vit"}))
    (broken / "model.safetensors").write_bytes(b"garbage")
    cases = [
        (["--model", tmp_path / "no_such_model/"], "model folder not found"),
        (["--model", broken], "model.safetensors: not a readable safetensors file"),
        (["--data", empty], "no images found"),
        (["--data", tmp_path / "nodata"], "--data"),
        (["--checkpoint", tmp_path / "none.safetensors"], "checkpoint file not found"),
    ]
    for extra, expected in cases:
        out = tmp_path / "run"
        result = cli("compress", "--recipe", recipe, "--out", out, *extra)
        assert result.exit_code != 0 and expected in result.output, (extra, result.output)
        assert "Traceback" not in result.output and not out.exists()
    (tmp_path / "exists").mkdir()
    result = cli("compress", "--recipe", recipe, "--out", tmp_path / "exists")
    assert result.exit_code == 2 and "already exists" in result.output
    assert not list(tmp_path.glob(".staging-*"))


def test_failed_check_fails_the_run_and_publishes_nothing(cli, write_recipe, tmp_path, monkeypatch):
    from edgevit import evaluation

    monkeypatch.setitem(evaluation.CHECK_THRESHOLDS, "fp32", evaluation.Threshold("allclose", rtol=0.0, atol=1e-12))
    recipe = write_recipe(RECIPE.format(model="test_vit", args="{}").replace("x86-onnxruntime, x86-openvino", "x86-onnxruntime"))
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--out", out)
    assert result.exit_code == 4 and "numerical check failed" in result.output and "exceeds atol 1e-12" in result.output
    assert not out.exists() and not list(tmp_path.glob(".staging-*"))
    result = cli("compress", "--recipe", recipe, "--out", out, "--keep-failed")
    assert result.exit_code == 4
    failed = tmp_path / "run.failed"
    assert json.loads((failed / "manifest.json").read_text())["status"] == "failed-check"
    assert not json.loads((failed / "report.json").read_text())["artifacts"][0]["check"]["passed"]


def test_exports_are_byte_reproducible(cli, write_recipe, tmp_path):
    recipe = tiny_recipe(write_recipe)
    for name in ("a", "b"):
        assert cli("compress", "--recipe", recipe, "--out", tmp_path / name).exit_code == 0
    for f in ("artifacts/x86-onnxruntime/model.onnx", "artifacts/x86-openvino/model.xml",
              "artifacts/x86-openvino/model.bin", "model/model.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_eval_and_profile_commands(cli, write_recipe, images, tmp_path):
    out = tmp_path / "run"
    assert cli("compress", "--recipe", tiny_recipe(write_recipe), "--out", out).exit_code == 0
    bundle = out / "artifacts" / "x86-openvino"
    result = cli("eval", bundle, "--data", images, "--n", "7")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["n"] == 7
    result = cli("eval", out / "model", "--data", images)
    assert result.exit_code == 0 and '"n": 12' in result.stdout
    result = cli("profile", bundle, "--runs", "3", "--warmup", "0", "--threads", "1", "--batch", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["runtime"] == "openvino" and data["batch"] == 2 and data["runs"] == 3
    result = cli("profile", bundle, "--target", "telnet://box")
    assert result.exit_code == 2 and "unknown target" in result.output


def test_validate_and_recipes_commands(cli, write_recipe):
    result = cli("validate", "fp32_baseline")
    assert result.exit_code == 0 and "ok" in result.stdout
    assert cli("validate", write_recipe("name: x\nbogus: 1\n")).exit_code == 2
    result = cli("recipes")
    assert result.exit_code == 0 and "fp32_baseline" in result.stdout


def test_real_process_prints_no_traceback_and_help_imports_no_runtime(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nname: y\n")
    proc = subprocess.run([sys.executable, "-m", "edgevit.cli", "compress", "--recipe", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "duplicate key" in proc.stderr
    code = "import sys; from edgevit.cli import app; print(sorted(m for m in ('torch','openvino','onnxruntime','onnx') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout.strip() == "[]"


@pytest.mark.skipif(not (REPO.parent / "shared" / "models" / "vit_tiny_c10").is_dir(), reason="../shared absent")
def test_reference_model_keeps_its_accuracy_in_every_runtime(cli, write_recipe, tmp_path):
    shared = REPO.parent / "shared"
    recipe = write_recipe("name: ref\nexports: [x86-onnxruntime, x86-openvino]\nevaluation: {n: 400}\nprofile: {runs: 5, warmup: 1}\n")
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--model", shared / "models/vit_tiny_c10",
                 "--data", shared / "data/cifar10/test", "--out", out)
    assert result.exit_code == 0, result.output
    acc = json.loads((out / "report.json").read_text())["accuracy"]
    assert acc["n"] == 400 and acc["label_mapping"] == "by class name"
    assert 0.6 < acc["top1"]["pytorch"] < 0.9  # reference top-1 is 0.7396 on all 10k
    assert acc["top1"]["x86-onnxruntime"] == acc["top1"]["pytorch"] == acc["top1"]["x86-openvino"]
