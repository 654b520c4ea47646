"""Fuzzing the readers of other people's files (issue 18): target URLs, fleet files and
bundle.json (host side and the device runner). Any input gives a result or an
EdgevitError (the runner: {"error": ...} with exit code 2), never another exception, and
whatever is accepted satisfies the invariants the command lines rely on. Bounded to a few
seconds each (max_examples, no deadline: the machine is shared)."""
import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevit.bundle_files import listed_files, model_file
from edgevit.errors import EdgevitError
from edgevit.profiling import runner_module
from edgevit.profiling.fleet import load_fleet
from edgevit.profiling.target import MAX_TIMEOUT_S, AdbTarget, LocalTarget, SshTarget, parse_target

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- target URLs ----------------------------------------------------------------------

_URL_CHARS = st.text(alphabet="abcXYZ019-._:@[]%/?&=#~ \n\t;|$`'\"\\*", max_size=24)
_KEYS = st.sampled_from(["python", "timeout", "benchmark_model", "adb", "identity", "known_hosts", "x", ""])
_VALUES = st.sampled_from(["python3", "/usr/bin/python3", "-c", "600", "0", "-1", "nan", "inf", "1e9",
                           "/data/local/tmp/benchmark_model", "/a/../python", "%2Dx"]) | _URL_CHARS
_QUERY = st.lists(st.tuples(_KEYS, _VALUES), max_size=4).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv))
URLS = st.one_of(
    st.text(max_size=80),
    st.builds(lambda scheme, netloc, port, query: f"{scheme}://{netloc}{port}" + (f"?{query}" if query else ""),
              st.sampled_from(["ssh", "adb", "local", "http", ""]), _URL_CHARS,
              st.sampled_from(["", ":22", ":0", ":65536", ":-1", ":x", ":"]), _QUERY),
)


@FUZZ
@given(URLS)
def test_target_parser_accepts_only_safe_fields(url):
    try:
        target = parse_target(url, "fuzz")
    except EdgevitError as exc:
        assert exc.hint and "\n" not in exc.message  # one line: user text is shown through repr
        return
    if isinstance(target, LocalTarget):
        return
    assert 0 < target.timeout <= MAX_TIMEOUT_S and not target.python.startswith("-")
    if isinstance(target, SshTarget):
        assert 1 <= target.port <= 65535 and not target.host.startswith("-") and not (target.user or "").startswith("-")
        assert target.host and all(c not in target.host for c in " /?#@")
    else:
        assert isinstance(target, AdbTarget) and target.serial and not target.serial.startswith("-")
        assert target.benchmark_model is None or target.benchmark_model.startswith("/")


# --- fleet files ------------------------------------------------------------------------

_SCALARS = st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats() | st.text(max_size=16)
_DEVICES = st.lists(st.dictionaries(st.sampled_from(["name", "target", "threads", "batch", "runtime", "thread"]),
                                    _SCALARS | URLS, max_size=5), max_size=3)
FLEETS = st.one_of(st.text(max_size=200), _DEVICES.map(lambda d: yaml.safe_dump({"devices": d})),
                   _SCALARS.map(lambda v: yaml.safe_dump({"devices": v})))


@FUZZ
@given(FLEETS)
def test_fleet_file_gives_a_fleet_or_an_edgevit_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "fuzz-targets.yaml"
    path.write_text(text)
    try:
        fleet = load_fleet(path)
    except EdgevitError:
        return
    for device in fleet.devices:
        parse_target(device.target)  # everything accepted parses


# --- bundle.json ------------------------------------------------------------------------

_NAMES = st.sampled_from(["model.onnx", "../outside.onnx", "/etc/hostname", "link.onnx", "", ".", "sub", "missing.onnx",
                          "sub/../model.onnx", "./model.onnx", "model.onnx\x00", "a\\b"]) | st.text(max_size=12)
_JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                     max_leaves=12)
_IO = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["input", "logits", "x,y"]) | _JSON,
                                      "shape": st.sampled_from([["batch", 4], [1, 4], [-1], "4"]) | _JSON,
                                      "dtype": st.just("float32") | _JSON}), max_size=2)
_OPTIONS = st.dictionaries(st.sampled_from(["graph_optimization_level", "session_config", "config", "batch", "delegate",
                                            "workspace_mib", "dla_core", "CACHE_DIR"]),
                           st.sampled_from(["ORT_ENABLE_ALL", "__class__", "xnnpack", 1, 0, None]) | _JSON
                           | st.dictionaries(st.sampled_from(["session.qdq_matmulnbits_accuracy_level", "CACHE_DIR",
                                                              "INFERENCE_PRECISION_HINT"]), _SCALARS, max_size=2), max_size=3)
_STAGE = st.fixed_dictionaries({"name": st.just("logits") | _JSON, "file": _NAMES,
                                "outputs": st.sampled_from([["logits"], ["nope"], []]) | _JSON,
                                "exit_output": st.sampled_from([None, "logits"]) | _JSON,
                                "threshold": st.sampled_from([None, 0.5, float("nan")]) | _JSON})
_TRT = st.fixed_dictionaries({}, optional={"precision_flags": st.lists(st.sampled_from(["fp16", "--plugins=x"]), max_size=2),
                                           "shapes": st.just({"input": [1, 4]}) | _JSON, "workspace_mib": _SCALARS,
                                           "timing_cache": _NAMES, "dla_core": _SCALARS, "trtexec": st.text(max_size=20)})
BUNDLES = st.fixed_dictionaries({"schema_version": st.just(1) | _SCALARS}, optional={
    "format": st.sampled_from(["onnx", "openvino", "litert", "tensorrt"]) | _JSON,
    "runtime": st.sampled_from(["onnxruntime", "tensorrt", "openvino"]) | _JSON,
    "model_file": _NAMES | _JSON, "files": st.lists(_NAMES, max_size=3) | _JSON,
    "inputs": _IO | _JSON, "outputs": _IO | _JSON, "session_options": _OPTIONS | _JSON,
    "cascade": st.fixed_dictionaries({"rule": st.sampled_from(["confidence", "x"]), "stages": st.lists(_STAGE, max_size=2)}) | _JSON,
    "reference_model": st.fixed_dictionaries({"file": _NAMES}) | _JSON, "tensorrt": _TRT | _JSON,
})
BUNDLE_TEXTS = st.one_of(BUNDLES.map(json.dumps), _JSON.map(json.dumps), st.text(max_size=60),
                         st.sampled_from(["[" * 100_000, '{"a": NaN}', "\ufeff{}"]))


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory):
    """A bundle folder with a real model, a symlink out of it and a file outside it."""
    from test_hostile_bundles import _onnx_model

    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "bundle"
    (folder / "sub").mkdir(parents=True)
    _onnx_model(folder / "model.onnx")
    _onnx_model(root / "outside.onnx")
    (folder / "link.onnx").symlink_to(root / "outside.onnx")
    return folder


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve()) and path.resolve().is_file()


@FUZZ
@given(BUNDLE_TEXTS)
def test_host_bundle_reading_stays_inside_the_folder(fuzz_bundle, text):
    (fuzz_bundle / "bundle.json").write_text(text)
    for read in (listed_files, lambda folder: [model_file(folder)]):
        try:
            paths = read(fuzz_bundle)
        except EdgevitError:
            continue
        assert all(_inside(p, fuzz_bundle) for p in paths)


@FUZZ
@given(BUNDLE_TEXTS)
def test_runner_answers_any_bundle_with_json(fuzz_bundle, text):
    (fuzz_bundle / "bundle.json").write_text(text)
    runner, out = runner_module(), io.StringIO()
    env = {k: os.environ.pop(k) for k in ("EDGEVIT_TRTEXEC",) if k in os.environ}  # no trtexec: never run one
    try:
        with contextlib.redirect_stdout(out):
            code = runner.main([str(fuzz_bundle), "--runs", "1", "--warmup", "0", "--threads", "1"])
    finally:
        os.environ.update(env)
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert (code, "error" in result) in ((0, False), (2, True)), result
    if code == 0:  # it ran: the model it ran is the bundle's own
        assert np.isfinite(result["p50_ms"])
