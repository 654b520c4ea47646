"""Issue 18, classes 2 and 3: a bundle (someone else's bundle.json) must not reach a file
outside its folder, choose runtime options that write elsewhere, or put text on trtexec's
command line. Each test failed on the code before the fix (noted per test)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit import resources
from edgevit.bundle_files import BundleError
from edgevit.embed import embed
from edgevit.errors import EdgevitError
from edgevit.profiling import runner_module, transport_for

FAKES = Path(__file__).parent / "fakes"


def _onnx_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "W"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _bundle(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.onnx").exists():
        _onnx_model(folder / "model.onnx")
    data = {"schema_version": 1, "format": "onnx", "runtime": "onnxruntime", "model_file": "model.onnx", "files": ["model.onnx"],
            "inputs": [{"name": "input", "shape": ["batch", 4], "dtype": "float32"}],
            "outputs": [{"name": "logits", "shape": ["batch", 2], "dtype": "float32"}],
            "session_options": {"graph_optimization_level": "ORT_ENABLE_ALL"}, **fields}
    (folder / "bundle.json").write_text(json.dumps(data))
    return folder


def _run_runner(folder: Path, env: dict | None = None) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(resources.runner_script()), str(folder), "--runs", "2", "--warmup", "0"],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def outside(tmp_path):
    """A valid model and a secret OUTSIDE the bundle folder."""
    _onnx_model(tmp_path / "outside.onnx")
    (tmp_path / "secret.txt").write_text("host secret")
    return tmp_path


# --- class 3: names in bundle.json ---------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("../outside.onnx", "points outside"), ("/etc/hostname", "points outside"), ("sub/../../outside.onnx", "points outside"),
    ("link.onnx", "symlink"), (7, "not a file name"), ("", "not a file name"),
])
def test_runner_refuses_a_model_file_outside_the_bundle(outside, name, message):
    """Before: the runner opened ../outside.onnx (and any symlinked or absolute file)."""
    folder = _bundle(outside / "b", model_file=name)
    (folder / "link.onnx").symlink_to(outside / "outside.onnx")
    code, data = _run_runner(folder)
    assert code == 2 and "model_file" in data["error"] and message in data["error"]


def test_a_symlink_inside_the_folder_is_fine(tmp_path):
    folder = _bundle(tmp_path / "b")
    (folder / "alias.onnx").symlink_to("model.onnx")
    code, data = _run_runner(_bundle(folder, model_file="alias.onnx"))
    assert code == 0 and data["runs"] == 2


def test_runner_refuses_cascade_and_reference_files_outside(outside):
    stage = {"name": "logits", "file": "../outside.onnx", "outputs": ["logits"], "exit_output": None, "threshold": None}
    code, data = _run_runner(_bundle(outside / "c", cascade={"rule": "confidence", "stages": [stage]}))
    assert code == 2 and "cascade.stages[0].file" in data["error"]  # before: the stage was opened
    stage["file"] = "model.onnx"
    folder = _bundle(outside / "r", cascade={"rule": "confidence", "stages": [stage]}, reference_model={"file": "../outside.onnx"})
    with pytest.raises(runner_module().RunnerFailure, match="reference_model.file"):
        runner_module().open_artifact(str(folder), 1)


def test_embed_refuses_a_host_file_named_by_a_bundle(outside):
    """Before: `edgevit embed` wrote ../secret.txt into the firmware source."""
    folder = _bundle(outside / "b", files=["../secret.txt"])
    with pytest.raises(BundleError, match=r"files\[0\].*points outside"):
        embed(folder, outside / "fw")
    (folder / "s.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(BundleError, match="symlink"):
        embed(_bundle(folder, files=["s.txt"]), outside / "fw")
    assert not (outside / "fw").exists()


@pytest.fixture
def adb_log(tmp_path, monkeypatch):
    """tests/fakes/adb as EDGEVIT_ADB; returns the calls it logged."""
    root, log = tmp_path / "device", tmp_path / "adb.log"
    (root / "data/local/tmp").mkdir(parents=True)
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("EDGEVIT_ADB", str(FAKES / "adb"))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def test_transport_does_not_push_a_host_file_named_by_a_bundle(outside, adb_log):
    """Before: `profile --target adb://...` pushed /etc/hostname (any file) to the device."""
    folder = _bundle(outside / "b", files=["model.onnx", str(outside / "secret.txt")])
    with pytest.raises(BundleError, match=r"files\[1\]"):
        transport_for(f"adb://S?python={sys.executable}").run(folder, runs=1, warmup=0, threads=1, batch=1)
    assert not any(call[2] == "push" for call in adb_log())


@pytest.mark.parametrize("name, message", [("runner.py", "never Python code"), ("session_x.py", "never Python code"),
                                           ("outputs.npz", "outputs.npz would overwrite")])
def test_a_bundle_file_cannot_replace_the_runner_on_the_device(tmp_path, adb_log, name, message):
    """Before: a bundle listing its own runner.py had it pushed over edgevit's runner,
    which the device then executed (and the runner loads session_*.py beside it)."""
    folder = _bundle(tmp_path / "b", files=["model.onnx", name])
    (folder / name).write_text("raise SystemExit('not edgevit')\n")
    with pytest.raises(EdgevitError, match=message):
        transport_for(f"adb://S?python={sys.executable}").run(folder, runs=1, warmup=0, threads=1, batch=1)
    assert not any(call[2] == "push" for call in adb_log())


# --- class 3: session options -----------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"session_config": {"session.use_env_allocators": "1"}}, "session_options.session_config key"),
    ({"graph_optimization_level": "__class__"}, "graph_optimization_level"),  # before: TypeError traceback
    ({"session_config": {"session.qdq_matmulnbits_accuracy_level": "0; rm"}}, "not a plain value"),
    ({"optimized_model_filepath": "/tmp/x.onnx"}, "session_options key"),
])
def test_runner_refuses_unknown_session_options(tmp_path, options, message):
    code, data = _run_runner(_bundle(tmp_path / "b", session_options=options))
    assert code == 2 and message in data["error"]


def test_openvino_cache_dir_cannot_write_outside(tmp_path):
    """Before: an OpenVINO bundle's CACHE_DIR made the runner write a cache folder anywhere."""
    import openvino as ov

    folder = tmp_path / "ov"
    folder.mkdir()
    ov.save_model(ov.convert_model(str(_onnx_model(tmp_path / "m.onnx"))), str(folder / "model.xml"))
    elsewhere = tmp_path / "written-by-the-bundle"
    data = {"schema_version": 1, "format": "openvino", "runtime": "openvino", "model_file": "model.xml", "files": ["model.xml", "model.bin"],
            "session_options": {"config": {"INFERENCE_PRECISION_HINT": "f32", "CACHE_DIR": str(elsewhere)}}}
    (folder / "bundle.json").write_text(json.dumps(data))
    code, result = _run_runner(folder)
    assert code == 2 and "CACHE_DIR" in result["error"] and not elsewhere.exists()
    data["session_options"]["config"].pop("CACHE_DIR")
    (folder / "bundle.json").write_text(json.dumps(data))
    assert _run_runner(folder)[0] == 0


# --- class 2: trtexec ---------------------------------------------------------------

TRT_SPEC = {"version": "10.3", "precision_flags": ["fp16"], "shapes": {"input": [1, 4]}, "workspace_mib": 512,
            "timing_cache": "timing.cache", "dla_core": None, "engine_reproducible": False}


def _trt(tmp_path, spec):
    log = tmp_path / "trtexec.log"
    folder = _bundle(tmp_path / "trt", runtime="tensorrt", tensorrt=spec,
                     session_options={"graph_optimization_level": "ORT_ENABLE_ALL", "workspace_mib": 512, "batch": 1})
    code, data = _run_runner(folder, {"EDGEVIT_TRTEXEC": str(FAKES / "trtexec"), "FAKE_TRTEXEC_LOG": str(log)})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return code, data, calls


@pytest.mark.parametrize("change, message", [
    ({"trtexec": "trtexec --onnx=model.onnx --plugins=/tmp/evil.so"}, "tensorrt field"),  # before: evil.so was loaded
    ({"plugins": ["/tmp/evil.so"]}, "tensorrt field"),
    ({"precision_flags": ["--plugins=/tmp/evil.so"]}, "precision_flags"),
    ({"timing_cache": "../../../etc/cron.d/x"}, "timing_cache"),                           # before: written anywhere
    ({"workspace_mib": "1024M --saveEngine=/etc/x"}, "workspace_mib"),
    ({"dla_core": "0 --plugins=x"}, "dla_core"),
    ({"shapes": {"input,x:1": [1, 4]}}, "shapes"),
    ({"shapes": {"input": [1, "4x4 --plugins=x"]}}, "shapes"),
])
def test_trtexec_spec_is_allow_listed(tmp_path, change, message):
    code, data, calls = _trt(tmp_path, {**TRT_SPEC, **change})
    assert code == 2 and message in data["error"] and calls == []  # trtexec never ran


def test_trtexec_arguments_are_built_from_fields(tmp_path):
    code, data, calls = _trt(tmp_path, {**TRT_SPEC, "precision_flags": ["int8", "fp16"], "dla_core": 1})
    assert code == 0, data
    assert calls[0] == ["--onnx=model.onnx", "--saveEngine=model.engine", "--shapes=input:1x4", "--memPoolSize=workspace:512M",
                        "--timingCacheFile=timing.cache", "--int8", "--fp16", "--useDLACore=1", "--allowGPUFallback"]
