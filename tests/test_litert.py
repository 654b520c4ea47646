"""LiteRT (TFLite): litert-torch export at fp32 / fp16 / int8, checked in ai-edge-litert's
interpreter through the device runner, and `edgevit compress` to android-litert.

litert-torch and ai-edge-litert are installed by `make install` (extra `litert`): a missing
import fails these tests, it does not skip them."""
import json

import numpy as np
import pytest
import torch

from conftest import TINY_SWIN
from edgevit.errors import RecipeError
from edgevit.evaluation import check_outputs
from edgevit.exporters import ExportContext, LoweringPlan, load_profile
from edgevit.exporters.litert import LiteRtExporter
from edgevit.models import load_model
from edgevit.profiling import LocalTransport, runner_module

# Fail, not skip, when the extra is missing; found without importing (litert-torch imports
# jax, whose threads make later os.fork() calls in this pytest process warn).
import importlib.util

assert importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_litert"), \
    "litert-torch / ai-edge-litert missing: run `make install` (extra litert)"


class _Calib:
    """The calibration set the exporter reads: seeded images through the model's preprocessing."""

    def __init__(self, x):
        self.x = x

    def images(self, _preprocessing):
        return self.x


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    loaded = load_model("test_vit", None, False, {"dynamic_img_size": False})  # timm resamples pos-embed bicubically otherwise (no TFLite lowering)
    size = tuple(loaded.data_config()["input_size"])
    calib = torch.randn(8, *size)
    check = torch.randn(6, *size)
    with torch.no_grad():
        ref = loaded.model(check).numpy()
    return loaded.model, calib, check, ref


def _export(tmp_path, model, calib, check, profile="android-litert", plan=None):
    ctx = ExportContext(example_input=check, preprocessing={}, calibration=_Calib(calib))
    return LiteRtExporter().export(model, plan or LoweringPlan(), load_profile(profile), ctx, tmp_path / profile)


def _int8_plan(model):
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "head"}
    return LoweringPlan(layer_precision=dict.fromkeys(names, "int8"), activations="int8")


def _run(bundle, check):
    result = LocalTransport().run(bundle.path, runs=3, warmup=1, threads=1, batch=1, inputs=check.numpy())
    return result.data, next(iter(result.outputs.values()))


def test_fp32_export_matches_pytorch_and_runs_in_the_runner(tmp_path, tiny_vit):
    model, calib, check, ref = tiny_vit
    bundle = _export(tmp_path, model, calib, check)
    assert bundle.data["format"] == "litert" and bundle.data["precision"] == "fp32"
    assert bundle.data["files"] == ["model.tflite"] and bundle.data["inputs"][0]["shape"][0] == 1
    data, got = _run(bundle, check)  # a batch of 6 through a batch-1 graph: fed in slices
    assert got.shape == ref.shape
    record = check_outputs(ref, got, "fp32")
    assert record["passed"], record
    assert data["runtime"] == "litert" and data["p50_ms"] > 0 and data["cpu_time_ms"] > 0
    assert data["runtime_version"].startswith("ai-edge-litert")
    assert data["executed"]["precision"] == "fp32", data["executed"]
    assert data["executed"]["delegate_partitions"] >= 1  # XNNPACK took the graph


@pytest.mark.slow  # ~14 s of CI's 15 min; the fp16 profile's plan checks stay in the fast set
def test_fp16_profile_stores_fp16_weights(tmp_path, tiny_vit):
    model, calib, check, ref = tiny_vit
    fp32 = _export(tmp_path / "a", model, calib, check)
    bundle = _export(tmp_path / "b", model, calib, check, profile="android-litert-fp16")
    assert bundle.data["precision"] == "fp16"
    assert bundle.size_bytes < 0.7 * fp32.size_bytes
    data, got = _run(bundle, check)
    record = check_outputs(ref, got, "fp16")
    assert record["passed"], record
    ops = data["executed"]["compute_ops"]  # weights in fp16; attention's activation matmuls stay fp32
    assert ops["FULLY_CONNECTED@fp16"] > 0 and "FULLY_CONNECTED@fp32" not in ops, ops
    assert data["executed"]["precision"] == "mixed(fp16,fp32)"


@pytest.mark.slow  # CI time: make test-all runs it; test_compress_to_android_litert runs LiteRT int8
def test_int8_pt2e_static_runs_integer_kernels(tmp_path, tiny_vit):
    model, calib, check, ref = tiny_vit
    bundle = _export(tmp_path, model, calib, check, plan=_int8_plan(model))
    assert bundle.data["precision"] == "int8"
    data, got = _run(bundle, check)
    record = check_outputs(ref, got, "int8", random_weights=True)
    assert record["sqnr_db"] >= 20.0, record
    ops = data["executed"]["compute_ops"]
    assert any(k.startswith("FULLY_CONNECTED@int8") for k in ops), ops
    assert ops.get("FULLY_CONNECTED@fp32") == 1, ops  # the classifier stays fp32, as the plan says
    assert data["executed"]["precision"] == "mixed(fp32,int8)"


def test_runner_refuses_another_batch_on_a_static_graph(tmp_path, tiny_vit):
    model, calib, check, _ = tiny_vit
    bundle = _export(tmp_path, model, calib, check)
    session = runner_module().open_artifact(str(bundle.path), 1)
    with pytest.raises(runner_module().RunnerFailure, match="fixed batch of 1; run with --batch 1"):
        runner_module().input_feeds(session, 4, 0)


def test_profiles_refuse_what_litert_cannot_execute(tmp_path, tiny_vit):
    model, calib, check, _ = tiny_vit
    int4 = LoweringPlan(layer_precision={"blocks.0.mlp.fc1": "int4"})
    with pytest.raises(RecipeError, match="cannot execute int4"):
        _export(tmp_path, model, calib, check, plan=int4)
    with pytest.raises(RecipeError, match="cannot execute int8"):
        _export(tmp_path, model, calib, check, profile="android-litert-fp16", plan=_int8_plan(model))


@pytest.mark.slow  # CI time (45 s): the LiteRT export and runner are checked by test_fp32_export_matches_pytorch_and_runs_in_the_runner
def test_compress_to_android_litert(cli, write_recipe, images, tmp_path):
    recipe = write_recipe(f"name: lt\nmodel: {{name: {TINY_SWIN[0]}, model_args: {json.dumps(TINY_SWIN[1])}}}\n"
                          "passes: [{kind: quantize, method: uniform, weights: int8}]\n"
                          "exports: [android-litert, x86-onnxruntime]\n"
                          "evaluation: {batch_size: 5, check_batch: 4}\nprofile: {runs: 3, warmup: 1, threads: 1}\n")
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--data", images, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    art = {a["name"]: a for a in report["artifacts"]}["android-litert"]
    assert art["format"] == "litert" and art["precision"] == "int8" and art["check"]["passed"], art
    assert "int8" in art["executed_precision"] and art["where_run"].startswith("this machine")
    assert report["profile"]["android-litert"]["p50_ms"] > 0
    assert "android-litert" in report["accuracy"]["top1"]
    assert (out / "artifacts/android-litert/model.tflite").is_file()


@pytest.mark.slow  # CI time: make test-all runs it
def test_benchmark_model_over_adb_parses_timings(tmp_path, monkeypatch, tiny_vit):
    """adb://...?benchmark_model=: tests/fakes/adb + tests/fakes/benchmark_model, both FAKES
    (no phone here): the timings are the fake's invented numbers; what is tested is the
    command sequence, the flags and the parsing."""
    import shutil
    import sys
    from pathlib import Path

    from edgevit.profiling import transport_for
    from edgevit.profiling.benchmark_model import parse_benchmark_output

    fakes = Path(__file__).parent / "fakes"
    model, calib, check, ref = tiny_vit
    bundle = _export(tmp_path, model, calib, check)
    root = tmp_path / "device"
    (root / "data/local/tmp").mkdir(parents=True)
    shutil.copy(fakes / "benchmark_model", root / "data/local/tmp/benchmark_model")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("FAKE_BENCHMARK_LOG", str(tmp_path / "bm.log"))
    monkeypatch.setenv("EDGEVIT_ADB", str(fakes / "adb"))  # host programs come from the environment, never the URL
    url = "adb://PHONE1?benchmark_model=/data/local/tmp/benchmark_model&timeout=60"
    result = transport_for(url).run(bundle.path, runs=7, warmup=2, threads=2, batch=1, inputs=check.numpy())
    data = result.data
    assert data["runs"] == 7 and data["mean_ms"] == 10.0 and data["p50_ms"] == 9.95 and data["min_ms"] == 9.0
    assert data["p90_ms"] is None and data["memory_footprint_mb"] == 12.25 and data["where_run"] == "PHONE1 (adb, benchmark_model)"
    argv = json.loads((tmp_path / "bm.log").read_text().splitlines()[0])
    assert "--num_threads=2" in argv and "--num_runs=7" in argv and "--warmup_runs=2" in argv
    assert argv[0].startswith("--graph=") and argv[0].endswith("/model.tflite")
    # benchmark_model returns no outputs: the check's outputs come from this machine, and it says so
    assert check_outputs(ref, next(iter(result.outputs.values())), "fp32")["passed"]
    assert data["outputs_from"].startswith("this machine")
    assert list((root / "data/local/tmp").iterdir()) == [root / "data/local/tmp/benchmark_model"]  # work folder removed
    with pytest.raises(Exception, match="no timing statistics"):
        parse_benchmark_output("ERROR: Could not build model\n")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(Exception, match="runs .tflite models only"):
        transport_for(url).run(onnx_file, runs=1, warmup=0, threads=1, batch=1)
