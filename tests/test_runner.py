"""The device runner (runtimes/runner.py): stdlib + numpy + runtime only, JSON contract."""
import ast
import json
import subprocess
import sys

import numpy as np
import pytest

from edgevit import resources
from edgevit.errors import RunnerError
from edgevit.profiling import LocalTransport, runner_module
from edgevit.profiling.executed import executed_precision

RUNNER = resources.runner_script()
ALLOWED_IMPORTS = {"argparse", "importlib", "json", "os", "platform", "sys", "time", "numpy", "tempfile", "resource", "re", "shlex",
                   "shutil", "subprocess",
                   "onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime", "__future__"}


def test_runner_imports_only_stdlib_numpy_and_runtimes_in_python38_syntax():
    tree = ast.parse(RUNNER.read_text(), feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported - ALLOWED_IMPORTS


def test_latency_stats():
    stats = runner_module().latency_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert stats["p50_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["max_ms"] == 100.0
    assert stats["mean_ms"] == pytest.approx(22.0) and stats["p90_ms"] == pytest.approx(61.6)


@pytest.fixture(scope="module")
def matmul_onnx(tmp_path_factory):
    """A two-op ONNX graph built by hand (no exporter involved): logits = x @ W + b."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path, w, b


def test_local_transport_runs_bare_onnx_and_returns_outputs(matmul_onnx):
    path, w, b = matmul_onnx
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    result = LocalTransport().run(path, runs=5, warmup=1, threads=1, batch=2, inputs=x)
    np.testing.assert_allclose(result.outputs["logits"], x @ w + b, rtol=1e-5, atol=1e-6)
    data = result.data
    assert data["runtime"] == "onnxruntime" and data["runs"] == 5 and data["batch"] == 2
    assert data["p50_ms"] > 0 and data["cpu_time_ms"] >= 0 and data["peak_rss_mb"] > 0
    assert set(data["executed"]["compute_ops"]) <= {"MatMul", "Gemm", "FusedMatMul"}
    assert data["executed"]["precision"] == "fp32"


def test_openvino_ir_through_the_runner(matmul_onnx, tmp_path):
    import openvino as ov

    path, w, b = matmul_onnx
    ov.save_model(ov.convert_model(str(path)), str(tmp_path / "model.xml"), compress_to_fp16=False)
    x = np.ones((3, 4), dtype=np.float32)
    result = LocalTransport().run(tmp_path / "model.xml", runs=3, warmup=0, threads=1, batch=1, inputs=x)
    np.testing.assert_allclose(next(iter(result.outputs.values())), x @ w + b, rtol=1e-5)
    assert result.data["runtime"] == "openvino"
    assert result.data["executed"]["precision"] == "fp32"
    # timed with the batch fixed (as benchmark_app -shape does); the 3-image check ran as exported
    assert result.data["input_shapes"] == "fixed to the timed inputs"
    onnx_result = LocalTransport().run(path, runs=3, warmup=0, threads=1, batch=1)
    assert onnx_result.data["input_shapes"] == "as exported"


def test_openvino_runs_fixed_shapes_only_for_the_shapes_prepared(matmul_onnx, tmp_path):
    import openvino as ov

    path, w, b = matmul_onnx
    ov.save_model(ov.convert_model(str(path)), str(tmp_path / "model.xml"), compress_to_fp16=False)
    session = runner_module().open_artifact(str(tmp_path / "model.xml"), 1)
    one = {"input": np.ones((1, 4), np.float32)}
    assert session.prepare(one) and session.prepare(one) and len(session.fixed) == 1  # compiled once
    fixed = next(iter(session.fixed.values()))
    assert all(not port.get_partial_shape().is_dynamic for port in fixed.model_inputs)
    np.testing.assert_allclose(session.run(one)["logits"], one["input"] @ w + b, rtol=1e-5)
    x = np.random.default_rng(4).standard_normal((5, 4)).astype(np.float32)  # another batch: the model as exported
    np.testing.assert_allclose(session.run({"input": x})["logits"], x @ w + b, rtol=1e-5, atol=1e-6)
    assert len(session.fixed) == 1
    static = tmp_path / "static.xml"  # a model without a dynamic input has nothing to fix
    model = ov.convert_model(str(path))
    model.reshape([1, 4])
    ov.save_model(model, str(static), compress_to_fp16=False)
    assert not runner_module().open_artifact(str(static), 1).prepare(one)


def test_runner_reports_errors_as_json(tmp_path):
    proc = subprocess.run([sys.executable, str(RUNNER), str(tmp_path / "missing.onnx"), "--runs", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "artifact not found" in json.loads(proc.stdout)["error"]
    with pytest.raises(RunnerError, match="runner: .*artifact not found"):
        LocalTransport().run(tmp_path / "missing.onnx", runs=1, warmup=0, threads=1, batch=1)


def test_runner_does_not_import_torch(matmul_onnx):
    path, _, _ = matmul_onnx
    code = (f"import runpy, sys; sys.argv=['runner', {str(path)!r}, '--runs', '1'];\n"
            f"try:\n    runpy.run_path({str(RUNNER)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules or 'edgevit' in sys.modules else 'CLEAN')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().endswith("CLEAN")


def test_executed_precision_from_what_ran():
    """The runner names what ran; a runtime or a layer precision it cannot read is
    "unknown", never a guess."""
    runner = runner_module()
    assert runner.executed_precision("onnxruntime", {"MatMulInteger": 3, "MatMul": 1}) == "mixed(fp32,int8)"
    assert runner.executed_precision("onnxruntime", {"MatMulNBits": 3}) == "int4"
    assert runner.executed_precision("openvino", {"FullyConnected@bf16": 2}) == "bf16"
    assert runner.executed_precision("openvino", {"FullyConnected@u8": 2}) == "int8"
    assert runner.executed_precision("openvino", {"FullyConnected@?": 2}) == "unknown"
    assert runner.executed_precision("litert", {"FULLY_CONNECTED@int8": 1, "CONV_2D@fp32": 1}) == "mixed(fp32,int8)"
    assert runner.executed_precision("some-new-runtime", {"Gemm": 1}) == "unknown"
    assert runner.executed_precision("onnxruntime", None) == "unknown"
    assert executed_precision(None) == "unknown" and executed_precision({"precision": "int8"}) == "int8"


def test_a_registered_session_class_without_prepare_gets_the_default(monkeypatch):
    runner = runner_module()
    # the module is shared by every test (cached): the registry gets its entries back after
    monkeypatch.setattr(runner, "SESSIONS", dict(runner.SESSIONS))

    @runner.register_session
    class Bare(object):  # a runtime plugin's class need not derive from the runner's base
        runtime = "bare-test"

    assert Bare.prepare(Bare(), {"input": np.zeros((1, 4), np.float32)}) is False


def test_many_inputs_run_in_chunks_with_the_same_outputs(matmul_onnx):
    """--input with more images than a chunk (the exits pass sends 5000-8000 held-out
    images; one call on all of them once held every activation at once: killed, out of memory)."""
    path, w, b = matmul_onnx
    x = np.random.default_rng(2).standard_normal((150, 4)).astype(np.float32)
    result = LocalTransport().run(path, runs=0, warmup=0, threads=1, batch=1, inputs=x)
    np.testing.assert_allclose(result.outputs["logits"], x @ w + b, rtol=1e-5, atol=1e-6)


class _Recorder:
    def __init__(self, first_dim, batch_axis=True):
        self.inputs = [("x", [first_dim, 4], "float32")]
        self.calls, self.batch_axis = [], batch_axis

    def run(self, feeds):
        x = feeds["x"]
        self.calls.append(len(x))
        return {"y": x * 2 if self.batch_axis else np.float32(len(x))}


@pytest.mark.parametrize("first_dim, chunk", [("batch", 64), (8, 64), (48, 48), (100, 100)])
def test_chunks_are_a_multiple_of_a_fixed_graph_batch(first_dim, chunk):
    runner = runner_module()
    fed = 3 * chunk + (first_dim if isinstance(first_dim, int) else 5)  # a last, smaller chunk
    session = _Recorder(first_dim)
    x = np.arange(fed * 4, dtype=np.float32).reshape(fed, 4)
    out = runner.run_in_chunks(session, {"x": x}, runner.chunk_size(session))
    np.testing.assert_array_equal(out["y"], x * 2)
    assert max(session.calls) == chunk and sum(session.calls) == fed
    assert all(c % (first_dim if isinstance(first_dim, int) else 1) == 0 for c in session.calls)


def test_an_output_without_a_batch_axis_is_not_concatenated_by_mistake():
    runner = runner_module()
    with pytest.raises(runner.RunnerFailure, match="no batch axis"):
        session = _Recorder("batch", batch_axis=False)
        runner.run_in_chunks(session, {"x": np.zeros((130, 4), np.float32)}, runner.chunk_size(session))
