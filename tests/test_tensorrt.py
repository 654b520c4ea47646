"""TensorRT path, as far as it is honest here: TensorRT-ready ONNX, the per-release parser
lint, and the engine build spec. No TensorRT exists on this machine: nothing is built."""
import json

import pytest
import torch

from edgevit.errors import RecipeError
from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.exporters.onnx import export_onnx_graph
from edgevit.exporters.tensorrt_lint import lint, release_for
from edgevit.models import load_model
from edgevit.passes.base import PassContext
from edgevit.passes.tokens import TomeConfig, TomePass


@pytest.fixture(scope="module")
def vit_graph():
    loaded = load_model("test_vit")
    return export_onnx_graph(loaded.model, ExportContext(example_input=torch.randn(2, *loaded.input_size)), LoweringPlan(opset=18))


def test_release_tables():
    assert release_for("8.5") == "8.5" and release_for("10.3.0") == "10" and release_for("8.6.2") == "8.6"
    with pytest.raises(RecipeError, match="no operator table"):
        release_for("7.1")


def test_lint_follows_each_release(vit_graph):
    old = {(f["op"], f["message"].split(":")[0]) for f in lint(vit_graph, "8.5")}
    assert ("LayerNormalization", "not supported by the TensorRT 8.5 ONNX parser") in old  # JetPack 5 has no LN op
    assert any(op == "opset" for op, _ in old)  # opset 18 > 17
    assert lint(vit_graph, "10.3") == []


@pytest.mark.parametrize("form, flagged", [("scatter", True), pytest.param("onehot", False, marks=pytest.mark.slow)])  # CI time
def test_merge_form_decides_scatter_reduction_finding(form, flagged):
    loaded = load_model("test_vit")
    model, _ = TomePass().apply(loaded.model, TomeConfig(r=8), PassContext(seed=0, input_size=loaded.input_size))
    graph = export_onnx_graph(model, ExportContext(example_input=torch.randn(2, *loaded.input_size)),
                              LoweringPlan(opset=17, forms={"tome": form}))
    found = [f for f in lint(graph, "8.6") if f["op"] == "ScatterElements"]
    assert bool(found) == flagged and all("needs TensorRT >= 10" in f["message"] for f in found)


def test_compress_writes_build_spec_and_fails_on_lint(cli, write_recipe, tmp_path):
    recipe = write_recipe("name: t\nmodel: {name: test_vit}\nexports: [x86-tensorrt]\nprofile: {runs: 2, warmup: 0}\n")
    result = cli("compress", "--recipe", recipe, "--out", tmp_path / "ok")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ok/report.json").read_text())
    artifact = report["artifacts"][0]
    assert artifact["lint"]["passed"] and artifact["executed_precision"] == "not run here"
    spec = json.loads((tmp_path / "ok" / artifact["path"] / "bundle.json").read_text())["tensorrt"]
    assert spec["shapes"] == {"input": [1, 3, 160, 160]} and spec["precision_flags"] == ["noTF32"]
    assert "trtexec" not in spec and not spec["engine_reproducible"]  # fields, never a command line
    jetpack5 = tmp_path / "jetson-xavier-trt85.yaml"
    jetpack5.write_text("name: jp5\nformat: onnx\nruntime: tensorrt\nruntime_version: '8.5'\nopset: 18\n"
                        "precisions: [fp32]\nlocal_standin: onnxruntime\n")
    result = cli("compress", "--recipe", write_recipe(recipe.read_text().replace("x86-tensorrt", str(jetpack5)), "jp5.yaml"),
                 "--out", tmp_path / "bad")
    assert result.exit_code == 4 and "tensorrt 8.5 lint" in result.output.lower() and not (tmp_path / "bad").exists()


def test_runner_tensorrt_path_against_a_fake_trtexec(cli, write_recipe, tmp_path, monkeypatch):
    """The device side of TensorRT, driven against tests/fakes/trtexec, a FAKE that computes
    nothing: this checks the runner's command sequence and parsing, not TensorRT."""
    from pathlib import Path

    import numpy as np

    from edgevit.profiling import LocalTransport

    recipe = write_recipe("name: t\nmodel: {name: test_vit, model_args: {num_classes: 7}}\nexports: [x86-tensorrt]\n"
                          "profile: {runs: 2, warmup: 0}\n")
    assert cli("compress", "--recipe", recipe, "--out", tmp_path / "run").exit_code == 0
    bundle = tmp_path / "run/artifacts/x86-tensorrt"
    log = tmp_path / "trtexec.log"
    monkeypatch.setenv("EDGEVIT_TRTEXEC", str(Path(__file__).parent / "fakes" / "trtexec"))
    monkeypatch.setenv("FAKE_TRTEXEC_LOG", str(log))
    result = LocalTransport().run(bundle, runs=5, warmup=1, threads=1, batch=1, inputs=np.zeros((2, 3, 160, 160), np.float32))
    assert result.data["runtime"] == "tensorrt" and result.data["runtime_version"] == "10.3.0"
    assert result.data["runs"] == 5 and result.data["p50_ms"] == pytest.approx(1.02)
    assert result.outputs["logits"].shape == (2, 7)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == ["--onnx=model.onnx", "--saveEngine=model.engine", "--shapes=input:1x3x160x160",
                        "--memPoolSize=workspace:2048M", "--timingCacheFile=timing.cache", "--noTF32"]  # built from the spec
    assert any(a.startswith("--loadInputs=input:") for a in calls[1]) and "--exportOutput=outputs.json" in calls[1]
    assert "--iterations=5" in calls[-1] and "--exportTimes=times.json" in calls[-1]
    monkeypatch.setenv("EDGEVIT_TRTEXEC", str(tmp_path / "missing"))
    from edgevit.errors import RunnerError

    with pytest.raises(RunnerError, match="trtexec not found"):
        LocalTransport().run(bundle, runs=1, warmup=0, threads=1, batch=1)


@pytest.mark.slow  # CI time: make test-all runs it; test_quantize checks the symmetric form
def test_int8_for_tensorrt_is_symmetric_and_passes_the_lint(cli, write_recipe, tmp_path):
    recipe = write_recipe("name: t\nmodel: {name: test_vit, model_args: {num_classes: 10}}\n"
                          "passes: [{kind: quantize, method: uniform, weights: int8}]\n"
                          "exports: [x86-tensorrt, x86-onnxruntime]\nprofile: {runs: 2, warmup: 0}\n")
    result = cli("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    trt, ort = json.loads((tmp_path / "run/report.json").read_text())["artifacts"]
    assert trt["lint"]["passed"] and trt["check"]["passed"]
    assert lint(tmp_path / "run" / ort["path"] / "model.onnx", "10.3")  # the ORT form (uint8 activations) would not pass
