#!/usr/bin/env python3
"""edgevit device runner: load an artifact bundle, run it, time it, print JSON.

This file is copied as-is to the device (x86 box, Jetson, phone with Python), so it uses
only the standard library, numpy and the runtime's own module, with Python 3.8 syntax
(JetPack 5). It never imports torch or edgevit. The host reads its one JSON line.

    python3 runner.py BUNDLE_DIR [--runs 200 --warmup 20 --threads 2 --batch 1]
                      [--input x.npy --output y.npz]

BUNDLE_DIR holds bundle.json (files, inputs/outputs, session options); a bare .onnx or
OpenVINO .xml file is accepted too. With --input, the outputs for that input are saved
(npz keyed by output name) so the host can check what really ran on the device.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time

import numpy as np

RUNNER_VERSION = 1
OP_TIME_RUNS = 5  # inferences the per-op profile averages over
BASELINE_ROUNDS = 5  # blocks the artifact and its baseline alternate in when timed together
ORT_COMPUTE_OPS = (
    "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv", "Attention", "MultiHeadAttention",
    "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm",
    "QLinearConv", "ConvInteger", "MatMulNBits", "QAttention",
)
OV_COMPUTE_LAYERS = ("FullyConnected", "MatMul", "Convolution", "ScaledAttn", "ScaledDotProductAttention", "GroupConvolution")
TFLITE_COMPUTE_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")
# The precision a compute kernel ran in, read from what executed (ORT: the kernel's op type;
# OpenVINO: the runtime model's precision per layer; LiteRT: the operands' dtypes). Each
# session class names it (``precision_of``); a runtime or a key not known is "unknown",
# never a guess.
ORT_INT8_OPS = ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm",
                "QLinearConv", "ConvInteger", "QAttention")
ORT_INT4_OPS = ("MatMulNBits",)
OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8", "i4": "int4", "u4": "int4"}
TFLITE_PRECISIONS = ("fp32", "fp16", "int8")


def _suffix(key):
    return key.rsplit("@", 1)[-1] if "@" in key else None


def executed_precision(runtime, compute_ops):
    """One precision, "mixed(a,b)", or "unknown" when nothing was read back."""
    session = SESSIONS.get(runtime)
    found = sorted(set(session.precision_of(key) if session else "unknown" for key in compute_ops or {}))
    if not found:
        return "unknown"
    return found[0] if len(found) == 1 else "mixed(" + ",".join(found) + ")"


class RunnerFailure(Exception):
    """A problem the runner reports as JSON {"error": ...} with exit code 2."""


# --- What a bundle may ask for -------------------------------------------------------
# A bundle can come from anyone (copied off a device, downloaded). Its names must stay
# inside its folder, its session options must be ones the runtime is known to take
# harmlessly (OpenVINO's CACHE_DIR, say, would write anywhere), and the TensorRT build is
# described by fields, never by a command line.

MAX_BUNDLE_JSON_BYTES = 16 << 20
# bundle.json versions this runner reads (runtimes/bundle.schema.json describes version 1)
KNOWN_BUNDLE_SCHEMA_VERSIONS = (1,)
REEXPORT = "re-export the artifact with edgevit"
_OPTION_VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ORT_OPTIMIZATION_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_LAYOUT", "ORT_ENABLE_ALL")
ORT_SESSION_CONFIG_KEYS = ("session.qdq_matmulnbits_accuracy_level",)  # what exporters/x86-onnxruntime.yaml sets
OV_CONFIG_KEYS = ("INFERENCE_PRECISION_HINT", "DYNAMIC_QUANTIZATION_GROUP_SIZE", "PERFORMANCE_HINT", "NUM_STREAMS",
                  "EXECUTION_MODE_HINT")
TRT_SPEC_FIELDS = ("version", "precision_flags", "shapes", "workspace_mib", "timing_cache", "dla_core", "engine_reproducible")
TRT_PRECISION_FLAGS = {"fp16": "--fp16", "int8": "--int8", "best": "--best", "noTF32": "--noTF32"}
_TRT_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.]{1,128}$")  # goes into --shapes=name:dims and in_<name>.bin
_PLAIN_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def bundle_path(folder, name, field):
    """``folder/name`` if ``name`` is a relative path without ``..`` that stays inside the
    folder after resolving symlinks and is a regular file. The device-side copy of
    edgevit/bundle_files.py's ``bundle_file`` (the runner cannot import edgevit)."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise RunnerFailure("bundle.json: {}: {!r} is not a file name; {}".format(field, name, REEXPORT))
    if name.startswith("/") or ".." in name.split("/"):
        raise RunnerFailure("bundle.json: {}: {!r} points outside the bundle folder; {}".format(field, name, REEXPORT))
    if name.endswith(".py"):  # session_*.py beside the runner are loaded as code: a bundle never names one
        raise RunnerFailure("bundle.json: {}: {!r}: a bundle holds model files, never Python code; {}".format(
            field, name, REEXPORT))
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise RunnerFailure("bundle.json: {}: {!r} is a symlink to {}, outside the bundle folder; {}".format(
            field, name, path, REEXPORT))
    if not os.path.isfile(path):
        raise RunnerFailure("bundle.json: {}: {!r} is missing or not a plain file".format(field, name))
    return os.path.join(folder, name)


def _int_in(value, low, high, field):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RunnerFailure("bundle.json: {}: {!r} is not an integer in {}..{}; {}".format(field, value, low, high, REEXPORT))
    return value


def _choice(value, allowed, field):
    if not isinstance(value, str) or value not in allowed:
        raise RunnerFailure("bundle.json: {}: {!r} is not one of {}; {}".format(field, value, ", ".join(allowed), REEXPORT))
    return value


def _mapping(value, allowed, field):
    """A dict whose keys are all in ``allowed`` and whose values are short plain tokens."""
    if not isinstance(value, dict):
        raise RunnerFailure("bundle.json: {}: expected an object; {}".format(field, REEXPORT))
    for key, item in value.items():
        _choice(key, allowed, "{} key".format(field))
        if isinstance(item, bool) or not isinstance(item, (str, int)) or not _OPTION_VALUE.match(str(item)):
            raise RunnerFailure("bundle.json: {}.{}: {!r} is not a plain value; {}".format(field, key, item, REEXPORT))
    return value


def check_session_options(runtime, options):
    """Refuse session options the runtime is not known to take harmlessly: each session
    class lists the keys it takes and how each value is checked (``options``)."""
    if not isinstance(options, dict):
        raise RunnerFailure("bundle.json: session_options: expected an object; {}".format(REEXPORT))
    checks = SESSIONS[runtime].options
    for key, value in options.items():
        _choice(key, sorted(checks), "session_options key (for {})".format(runtime))
        if value is not None:
            checks[key](value, "session_options." + key)
    return options


def _ort_options():
    return {"graph_optimization_level": lambda v, f: _choice(v, ORT_OPTIMIZATION_LEVELS, f),
            "session_config": lambda v, f: _mapping(v, ORT_SESSION_CONFIG_KEYS, f)}


def trtexec_build_args(spec, input_names, model_file):
    """trtexec's engine-build arguments, built from the bundle's structured TensorRT spec
    through allow-lists: nothing in a bundle reaches trtexec's command line as text, so a
    bundle cannot load a plugin library or write outside its folder."""
    if not isinstance(spec, dict) or not spec:
        raise RunnerFailure("bundle.json: tensorrt: no engine build spec; {}".format(REEXPORT))
    for key in spec:
        _choice(key, TRT_SPEC_FIELDS, "tensorrt field")
    flags = spec.get("precision_flags", [])
    if not isinstance(flags, list):
        raise RunnerFailure("bundle.json: tensorrt.precision_flags: expected a list; {}".format(REEXPORT))
    for flag in flags:
        _choice(flag, sorted(TRT_PRECISION_FLAGS), "tensorrt.precision_flags")
    shapes = spec.get("shapes")
    if not isinstance(shapes, dict) or sorted(shapes) != sorted(input_names):
        raise RunnerFailure("bundle.json: tensorrt.shapes: expected the shape of each input ({}); {}".format(
            ", ".join(input_names), REEXPORT))
    for name, dims in shapes.items():
        if not isinstance(dims, list) or not 1 <= len(dims) <= 8:
            raise RunnerFailure("bundle.json: tensorrt.shapes.{}: expected a list of 1-8 dimensions; {}".format(name, REEXPORT))
        for d in dims:
            _int_in(d, 1, 1 << 16, "tensorrt.shapes." + name)
    workspace = _int_in(spec.get("workspace_mib", 1024), 1, 1 << 20, "tensorrt.workspace_mib")
    cache = spec.get("timing_cache", "timing.cache")
    if not isinstance(cache, str) or not _PLAIN_FILE_NAME.match(cache):
        raise RunnerFailure("bundle.json: tensorrt.timing_cache: {!r} is not a plain file name; {}".format(cache, REEXPORT))
    shape_arg = ",".join("{}:{}".format(name, "x".join(str(d) for d in dims)) for name, dims in sorted(shapes.items()))
    args = ["--onnx=" + model_file, "--saveEngine=model.engine", "--shapes=" + shape_arg,
            "--memPoolSize=workspace:{}M".format(workspace), "--timingCacheFile=" + cache]
    args += [TRT_PRECISION_FLAGS[flag] for flag in flags]
    dla = spec.get("dla_core")
    if dla is not None:
        args += ["--useDLACore={}".format(_int_in(dla, 0, 7, "tensorrt.dla_core")), "--allowGPUFallback"]
    return args


def read_bundle(path):
    """Return (bundle dict, folder). A bare model file gets a minimal bundle."""
    if os.path.isdir(path):
        path = os.path.join(path, "bundle.json")
    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise RunnerFailure("{}: no bundle.json here".format(path))
        if os.path.getsize(path) > MAX_BUNDLE_JSON_BYTES:
            raise RunnerFailure("{}: larger than {} bytes; {}".format(path, MAX_BUNDLE_JSON_BYTES, REEXPORT))
        try:
            with open(path, "rb") as fh:
                bundle = json.loads(fh.read().decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            raise RunnerFailure("{}: not valid JSON ({}); {}".format(path, str(exc).splitlines()[0][:120], REEXPORT))
        if not isinstance(bundle, dict):
            raise RunnerFailure("{}: expected a JSON object; {}".format(path, REEXPORT))
        version = bundle.get("schema_version")
        if version not in KNOWN_BUNDLE_SCHEMA_VERSIONS:
            raise RunnerFailure("{}: schema_version {!r} is not one this runner knows ({}); use the runner shipped with "
                                "the edgevit that exported it, or re-export".format(
                                    path, version, ", ".join(map(str, KNOWN_BUNDLE_SCHEMA_VERSIONS))))
        return bundle, os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path):
        raise RunnerFailure("{}: artifact not found".format(path))
    fmt = {".onnx": "onnx", ".xml": "openvino", ".tflite": "litert"}.get(os.path.splitext(path)[1])
    if fmt is None:
        raise RunnerFailure("{}: give a bundle folder, bundle.json, .onnx, OpenVINO .xml or .tflite".format(path))
    bundle = {"format": fmt, "model_file": os.path.basename(path), "session_options": {}}
    return bundle, os.path.dirname(os.path.abspath(path))


# --- Sessions: one class per runtime, registered by runtime name ----------------------
# A session class declares ``runtime``, the ``formats`` it loads, the session ``options``
# it takes (key -> check) and ``precision_of`` (a read-back key -> precision); ``open``
# builds it for a bundle. A runtime that is not built in is one module beside this file,
# ``session_<runtime>.py``, with ``register(runner)`` calling ``runner.register_session``.
SESSIONS = {}


def register_session(cls):
    if not callable(getattr(cls, "prepare", None)):  # a plugin's class need not derive from _Session
        cls.prepare = _Session.prepare
    SESSIONS[cls.runtime] = cls
    return cls


class _Session(object):
    formats = ()
    options = {}
    # executed() needs the session opened again with op profiling on (False: it reads back
    # from the session that ran, e.g. trtexec's engine)
    reopen_to_profile = True

    @classmethod
    def open(cls, bundle, folder, model_path, options, threads, profile_ops=False):
        return cls(model_path, options, threads, profile_ops)

    def prepare(self, feeds):
        """Called before these feeds' shapes are timed; True when the session now runs
        them through a graph compiled for exactly those shapes (a runtime that
        specializes on shapes overrides it)."""
        return False

    @staticmethod
    def precision_of(key):
        return "unknown"


@register_session
class OrtSession(_Session):
    runtime = "onnxruntime"
    formats = ("onnx",)
    options = _ort_options()

    @staticmethod
    def precision_of(key):
        return "int4" if key in ORT_INT4_OPS else "int8" if key in ORT_INT8_OPS else "fp32"

    def __init__(self, model_path, options, threads, profile_ops=False):
        import onnxruntime as ort

        self.version = ort.__version__
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = options.get("graph_optimization_level", "ORT_ENABLE_ALL")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        for key, value in sorted(options.get("session_config", {}).items()):
            so.add_session_config_entry(key, str(value))
        so.enable_profiling = profile_ops
        if profile_ops:
            so.profile_file_prefix = os.path.join(_tmpdir(), "ort_profile")
        self.session = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.shape, i.type) for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        return dict(zip(self.output_names, self.session.run(None, feeds)))

    def op_times(self, feeds, runs):
        """Mean ms per inference spent in each op type ("Op@precision"), from ORT's own
        profiler (needs profile_ops); the profiler's overhead makes these shares, not latency."""
        for _ in range(runs):
            self.run(feeds)
        trace = self.session.end_profiling()
        with open(trace) as fh:
            events = json.load(fh)
        os.remove(trace)
        # the trace holds every run since the session opened: divide by the runs it saw
        seen = max(1, sum(1 for ev in events if ev.get("cat") == "Session" and ev.get("name") == "model_run"))
        totals = {}
        for ev in events:
            op = ev.get("args", {}).get("op_name")
            if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time") and op:
                key = "{}@{}".format(op, self.precision_of(op))
                totals[key] = totals.get(key, 0.0) + ev.get("dur", 0) / 1000.0 / seen
        return totals

    def executed(self, feeds):
        """Op types that really executed (from ORT's profiler), counted."""
        self.run(feeds)
        trace = self.session.end_profiling()
        with open(trace) as fh:
            events = json.load(fh)
        os.remove(trace)
        counts = {}
        for ev in events:
            op = ev.get("args", {}).get("op_name")
            if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time") and op in ORT_COMPUTE_OPS:
                counts[op] = counts.get(op, 0) + 1
        return {"compute_ops": counts}


@register_session
class OvSession(_Session):
    runtime = "openvino"
    formats = ("openvino",)
    options = {"config": lambda v, f: _mapping(v, OV_CONFIG_KEYS, f)}

    @staticmethod
    def precision_of(key):
        return OV_PRECISIONS.get(_suffix(key), "unknown")

    def __init__(self, model_path, options, threads, profile_ops=False):
        import openvino as ov

        self.version = ov.get_version()
        core = ov.Core()
        config = dict((k, str(v)) for k, v in options.get("config", {}).items())
        config["INFERENCE_NUM_THREADS"] = str(threads)
        # Without a hint the CPU plugin runs f32 models in bf16 on AVX-512 BF16 machines;
        # an artifact with no stated precision is run as exported (bundles always state it).
        config.setdefault("INFERENCE_PRECISION_HINT", "f32")
        config.setdefault("NUM_STREAMS", "1")
        config.setdefault("PERFORMANCE_HINT", "LATENCY")
        if profile_ops:
            config["PERF_COUNT"] = "YES"
        self.core, self.config, self.model = core, config, core.read_model(model_path)
        self.compiled = core.compile_model(self.model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [(p.get_any_name(), _ov_shape(p), str(p.get_element_type())) for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.fixed = {}  # input shapes -> infer request of the model compiled for exactly those

    def prepare(self, feeds):
        """A copy of the model compiled with its inputs fixed to these feeds' shapes, used by
        every later call with those shapes (others run the model as exported). Why: the CPU
        plugin runs a dynamic-batch model with shape inference and dynamic kernels on every
        call. At batch 1, 1 thread, fixed shapes ran swin_tiny_c10 19 % and vit_tiny_c10 4 %
        faster, and an exit cascade's one graph 14 % faster where nobody exits (README, "Fixed
        shapes where timed"); benchmark_app (-shape) also times fixed shapes."""
        key = _shape_key(feeds)
        if key in self.fixed:
            return True
        if not any(port.get_partial_shape().is_dynamic for port in self.model.inputs):
            return False
        try:
            model = self.model.clone()
            model.reshape(dict((name, list(np.shape(value))) for name, value in feeds.items()))
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception:  # a graph that cannot take fixed shapes runs as exported
            return False
        self.fixed[key] = compiled.create_infer_request()
        return True

    def run(self, feeds):
        request = self.fixed.get(_shape_key(feeds), self.request) if self.fixed else self.request
        result = request.infer(feeds)
        # by position: a copy compiled for fixed shapes may name a port by another of its tensor names
        return dict(zip(self.output_names, (np.array(value) for value in result.values())))

    op_times_reusable = True  # PERF_COUNT counters are per request and per inference

    def op_times(self, feeds, runs):
        """Mean ms per inference in each executed layer type ("Layer@precision"), from the
        CPU plugin's own counters (needs profile_ops: PERF_COUNT)."""
        totals = {}
        request = self.fixed.get(_shape_key(feeds), self.request)  # the model that was timed
        for _ in range(runs):
            request.infer(feeds)
            for info in request.profiling_info:
                if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_RUN"):
                    precision = OV_PRECISIONS.get(info.exec_type.rsplit("_", 1)[-1].lower(), "fp32")
                    key = "{}@{}".format(info.node_type, precision)
                    totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1000.0 / runs
        return totals

    def executed(self, feeds):
        """Per compute layer type, the precision OpenVINO's CPU plugin really runs it in."""
        counts = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
            if layer in OV_COMPUTE_LAYERS:
                precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
                key = "{}@{}".format(layer, precision)
                counts[key] = counts.get(key, 0) + 1
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        return {"compute_ops": counts, "inference_precision_hint": hint}


def _shape_key(feeds):
    return tuple(sorted((name, np.shape(value)) for name, value in feeds.items()))


def _ov_shape(port):
    shape = port.get_partial_shape()
    return [d.get_length() if d.is_static else "batch" for d in shape]


def _tmpdir():
    import tempfile

    return tempfile.gettempdir()


@register_session
class TrtexecSession(_Session):
    """TensorRT through JetPack's `trtexec`: builds the engine on this device from the
    bundle's build spec (engines are device- and version-specific), feeds inputs and reads
    outputs through files, and times with trtexec's own per-iteration export."""

    runtime = "tensorrt"
    formats = ("onnx",)
    reopen_to_profile = False
    # the ORT keys are there for the host's stand-in check of the same graph in onnxruntime
    options = dict(_ort_options(), workspace_mib=lambda v, f: _int_in(v, 1, 1 << 20, f),
                   batch=lambda v, f: _int_in(v, 1, 4096, f), dla_core=lambda v, f: _int_in(v, 0, 7, f))

    @classmethod
    def open(cls, bundle, folder, model_path, options, threads, profile_ops=False):
        return cls(bundle["model_file"], bundle, folder)

    def __init__(self, model_file, bundle, folder):
        import shutil

        self.folder, self.spec = folder, bundle.get("tensorrt")
        self.inputs = [(i["name"], i["shape"], i["dtype"]) for i in _io_specs(bundle, "inputs")]
        self.output_names = [o["name"] for o in _io_specs(bundle, "outputs")]
        for name, _, _ in self.inputs:
            if not _TRT_TENSOR_NAME.match(name):
                raise RunnerFailure("bundle.json: inputs: name {!r} is not a plain tensor name; {}".format(name, REEXPORT))
        build_args = trtexec_build_args(self.spec, [name for name, _, _ in self.inputs], model_file)
        # the program is this device's (environment or PATH), never the bundle's
        self.trtexec = os.environ.get("EDGEVIT_TRTEXEC") or shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
        if not os.path.isfile(self.trtexec):
            raise RunnerFailure("trtexec not found on this device (TensorRT not installed?); set EDGEVIT_TRTEXEC")
        log = self._call(build_args)  # build model.engine here, on the device
        self.version = _trt_version(log) or str(self.spec.get("version"))

    def _call(self, args):
        import subprocess

        proc = subprocess.run([self.trtexec] + args, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        if proc.returncode != 0:
            tail = proc.stdout.strip().splitlines()[-3:]
            raise RunnerFailure("trtexec failed (exit {}): {}".format(proc.returncode, " | ".join(tail)))
        return proc.stdout

    def _engine_args(self, feeds):
        shapes = ",".join("{}:{}".format(k, "x".join(str(d) for d in v.shape)) for k, v in feeds.items())
        return ["--loadEngine=model.engine", "--shapes=" + shapes]

    def run(self, feeds):
        loads = []
        for name, value in feeds.items():
            path = os.path.join(self.folder, "in_{}.bin".format(name))
            np.ascontiguousarray(value, dtype=np.float32).tofile(path)
            loads.append("{}:{}".format(name, path))
        self._call(self._engine_args(feeds) + ["--loadInputs=" + ",".join(loads), "--iterations=1", "--warmUp=0",
                                               "--duration=0", "--exportOutput=outputs.json"])
        with open(os.path.join(self.folder, "outputs.json")) as fh:
            exported = json.load(fh)
        return dict((o["name"], np.asarray(o["values"], dtype=np.float32).reshape(
            [int(d) for d in str(o["dimensions"]).split("x")])) for o in exported)

    def benchmark(self, feeds, runs, warmup):
        """trtexec's own loop (a process per inference would time process start-up)."""
        self._call(self._engine_args(feeds) + ["--iterations={}".format(runs), "--warmUp=0", "--duration=0",
                                               "--exportTimes=times.json"])
        with open(os.path.join(self.folder, "times.json")) as fh:
            times = json.load(fh)
        stats = latency_stats([t["latencyMs"] for t in times][-runs:])
        stats["cpu_time_ms"] = None  # GPU work: host CPU time says little
        return stats

    def executed(self, feeds):
        return {"compute_ops": {}, "precision_flags": self.spec.get("precision_flags"), "engine": "built on this device"}


def _trt_version(log):
    match = re.search(r"TensorRT version: ([0-9.]+)", log) or re.search(r"\[TensorRT v(\d+)\]", log)
    return match.group(1) if match else None


@register_session
class LiteRtSession(_Session):
    """LiteRT / TFLite: ai-edge-litert's interpreter, or tflite-runtime's (what boards in
    the field often have; same API). Both apply XNNPACK, the CPU delegate, by default.

    TFLite graphs are static-shape. A graph exported with a dynamic batch (shape_signature
    -1) is resized to the batch fed; a fixed-batch graph is fed a larger batch in slices
    (checks and accuracy), while timing refuses another --batch (input_feeds says so).
    int8 inputs/outputs are (de)quantized with the tensor's own scale and zero point."""

    runtime = "litert"
    formats = ("litert",)
    options = {"batch": lambda v, f: _int_in(v, 1, 4096, f), "delegate": lambda v, f: _choice(v, ("xnnpack",), f)}

    @staticmethod
    def precision_of(key):
        return _suffix(key) if _suffix(key) in TFLITE_PRECISIONS else "unknown"

    def __init__(self, model_path, options, threads, profile_ops=False):
        try:
            from ai_edge_litert import interpreter as tfl

            import ai_edge_litert

            self.version = "ai-edge-litert " + str(getattr(ai_edge_litert, "__version__", "?"))
        except ImportError:
            from tflite_runtime import interpreter as tfl  # ImportError -> "runtime not installed"

            import tflite_runtime

            self.version = "tflite-runtime " + str(getattr(tflite_runtime, "__version__", "?"))
        self.interpreter = tfl.Interpreter(model_path=model_path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_details = self.interpreter.get_input_details()
        self.output_details = self.interpreter.get_output_details()
        self.dynamic_batch = all(int(d["shape_signature"][0]) == -1 for d in self.input_details)
        self.inputs = [(d["name"], ["batch" if self.dynamic_batch and i == 0 else int(s) for i, s in enumerate(d["shape"])],
                        d["dtype"].__name__) for d in self.input_details]
        self.output_names = [d["name"] for d in self.output_details]

    def _invoke(self, feeds):
        it = self.interpreter
        for d in self.input_details:
            value = np.asarray(feeds[d["name"]])
            if self.dynamic_batch and tuple(value.shape) != tuple(it.get_tensor(d["index"]).shape):
                it.resize_tensor_input(d["index"], list(value.shape), strict=False)
                it.allocate_tensors()
            it.set_tensor(d["index"], _to_tensor(value, d))
        it.invoke()
        return dict((d["name"], _from_tensor(it.get_tensor(d["index"]), d)) for d in self.output_details)

    def run(self, feeds):
        graph_batch = int(self.input_details[0]["shape"][0])
        fed = int(np.asarray(feeds[self.input_details[0]["name"]]).shape[0])
        if self.dynamic_batch or fed == graph_batch:
            return self._invoke(feeds)
        if fed % graph_batch:
            raise RunnerFailure("the .tflite graph has a fixed batch of {}; a batch of {} is not a multiple of it "
                                "(re-export with session_options.batch)".format(graph_batch, fed))
        parts = [self._invoke(dict((k, v[i:i + graph_batch]) for k, v in feeds.items()))
                 for i in range(0, fed, graph_batch)]
        return dict((name, np.concatenate([p[name] for p in parts])) for name in self.output_names)

    def executed(self, feeds):
        """Per compute op type, the precision its kernel runs in (from the operand dtypes:
        int8 operands -> int8; fp32 activations with fp16 weights, direct or through a
        DEQUANTIZE -> fp16 weights), and how many delegate partitions (XNNPACK) there are."""
        it = self.interpreter
        dtypes = dict((t["index"], t["dtype"].__name__) for t in it.get_tensor_details())
        ops = it._get_ops_details()  # pylint: disable=protected-access  (public API has no op list)
        producer = dict((out, op) for op in ops for out in op["outputs"])
        counts, partitions = {}, 0
        for op in ops:
            if op["op_name"] == "DELEGATE":
                partitions += 1
            if op["op_name"] not in TFLITE_COMPUTE_OPS:
                continue
            kinds = set()
            for index in op["inputs"]:
                src = producer.get(index)
                if src is not None and src["op_name"] == "DEQUANTIZE" and src["inputs"]:
                    index = src["inputs"][0]
                kinds.add(dtypes.get(index, "?"))
            precision = "int8" if kinds & set(["int8", "uint8"]) else "fp16" if "float16" in kinds else "fp32"
            key = "{}@{}".format(op["op_name"], precision)
            counts[key] = counts.get(key, 0) + 1
        return {"compute_ops": counts, "delegate_partitions": partitions}


def _to_tensor(value, detail):
    """A float input into the tensor's dtype (int8 inputs: quantized with its scale/zero point)."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)
    return np.ascontiguousarray(value, dtype=dtype)


def _from_tensor(value, detail):
    if np.issubdtype(value.dtype, np.integer) and detail["quantization"][0]:
        scale, zero = detail["quantization"]
        return (value.astype(np.float32) - zero) * scale
    return np.array(value, dtype=np.float32)


def load_session_modules(folder=None):
    """Sessions of runtimes that are not built in: ``session_<runtime>.py`` beside this file
    (shipped with the runner by edgevit's transports; a bundle can never add one: bundle
    files are model files, and a .py name is refused on both sides)."""
    import importlib.util

    folders = [folder or os.path.dirname(os.path.abspath(__file__))]
    folders += [p for p in os.environ.get("EDGEVIT_RUNTIME_PATH", "").split(os.pathsep) if p and folder is None]
    modules = [os.path.join(f, name) for f in folders if os.path.isdir(f) for name in sorted(os.listdir(f))
               if name.startswith("session_") and name.endswith(".py")]
    for path in modules:
        spec = importlib.util.spec_from_file_location("edgevit_runner_" + os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        api = type(sys)("edgevit_runner_api")  # this runner's functions, as the plugin sees them
        api.__dict__.update(globals())
        module.register(api)


def open_artifact(path, threads, profile_ops=False, runtime=None):
    """``runtime`` overrides the bundle's (the host checks a TensorRT graph in onnxruntime)."""
    bundle, folder = read_bundle(path)
    fmt = bundle.get("format")
    _choice(fmt, sorted(set(f for cls in SESSIONS.values() for f in cls.formats)), "format")
    # a bare model file names no runtime: the first session class that loads its format
    default = next(name for name, cls in sorted(SESSIONS.items()) if fmt in cls.formats)
    declared = _choice(bundle.get("runtime", default), sorted(SESSIONS), "runtime")
    session_class = SESSIONS[_choice(runtime or declared, sorted(SESSIONS), "runtime (--runtime)")]
    if fmt not in session_class.formats:
        raise RunnerFailure("bundle.json: format {!r} is not one {} loads ({}); {}".format(
            fmt, session_class.runtime, ", ".join(session_class.formats), REEXPORT))
    model_path = bundle_path(folder, bundle.get("model_file"), "model_file")
    options = check_session_options(declared, bundle.get("session_options", {}))
    if "cascade" in bundle and session_class.runtime != "tensorrt":
        return CascadeSession(bundle, folder, session_class, threads, profile_ops)
    return _open_session(session_class, bundle, folder, model_path, options, threads, profile_ops)


def _io_specs(bundle, key):
    """bundle[key] (inputs / outputs) as a non-empty list of {name, shape, dtype} objects."""
    specs = bundle.get(key)
    ok = isinstance(specs, list) and specs and all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("dtype"), str)
        and isinstance(s.get("shape"), list) and all(isinstance(d, (int, str)) for d in s["shape"]) for s in specs)
    if not ok:
        raise RunnerFailure("bundle.json: {}: expected a list of {{name, shape, dtype}} objects; {}".format(key, REEXPORT))
    return specs


def _open_session(session_class, bundle, folder, model_path, options, threads, profile_ops=False):
    try:
        return session_class.open(bundle, folder, model_path, options, threads, profile_ops)
    except RunnerFailure:
        raise
    except ImportError as exc:
        raise RunnerFailure("{} is not installed on this device: {}".format(session_class.runtime, exc))
    except Exception as exc:  # each runtime raises its own types for a file it cannot read
        raise RunnerFailure("{}: {} cannot load it: {}: {}".format(
            model_path, session_class.runtime, type(exc).__name__, (str(exc).strip().splitlines() or ["?"])[0][:300]))


class CascadeSession(object):
    """An early-exit cascade: one session per stage; between stages the host decides, per
    sample, whether it leaves (exit rule and thresholds from bundle.json). ``run`` takes
    every sample through every stage and returns all exits' logits (for the numerical
    check); ``classify`` is the real cascade, compacting the batch to the samples left."""

    reopen_to_profile = True

    def __init__(self, bundle, folder, session_class, threads, profile_ops=False):
        manifest = bundle["cascade"]
        options = bundle.get("session_options", {})
        if not isinstance(manifest, dict):
            raise RunnerFailure("bundle.json: cascade: expected an object; {}".format(REEXPORT))
        self.rule = _choice(manifest.get("rule"), ("confidence", "entropy"), "cascade.rule")
        self.stages = _cascade_stages(manifest.get("stages"))
        self.sessions = []
        for k, stage in enumerate(self.stages):
            path = bundle_path(folder, stage["file"], "cascade.stages[{}].file".format(k))
            self.sessions.append(_open_session(session_class, bundle, folder, path, options, threads, profile_ops))
        self._check_wiring()
        self.graph_exits = []  # set by _open_graph when the bundle has the one-graph form
        self.graph = self._open_graph(manifest.get("graph"), bundle, folder, session_class, options, threads, profile_ops)
        first = self.sessions[0]
        self.runtime, self.version, self.inputs = first.runtime, first.version, first.inputs
        self.output_names = [stage["name"] for stage in self.stages]
        reference = bundle.get("reference_model")
        if reference is not None and not isinstance(reference, dict):
            raise RunnerFailure("bundle.json: reference_model: expected an object; {}".format(REEXPORT))
        self.reference_path = bundle_path(folder, reference.get("file"), "reference_model.file") if reference else None
        self.bundle, self.folder, self.session_class = bundle, folder, session_class
        self.options, self.threads = options, threads

    def _check_wiring(self):
        """Each stage's listed outputs are what its graph produces, and what it passes on
        (all but the exit logits) is what the next stage takes."""
        for k, (stage, session) in enumerate(zip(self.stages, self.sessions)):
            if not set(stage["outputs"]) <= set(session.output_names):
                raise RunnerFailure("bundle.json: cascade.stages[{}].outputs: the graph produces {}; {}".format(
                    k, ", ".join(session.output_names), REEXPORT))
            if k + 1 < len(self.sessions):
                passed = sorted(name for name in stage["outputs"] if name != stage["exit_output"])
                if passed != sorted(name for name, _, _ in self.sessions[k + 1].inputs):
                    raise RunnerFailure("bundle.json: cascade.stages[{}]: its inputs are not what stage {} passes on; {}".format(
                        k + 1, k, REEXPORT))

    def _open_graph(self, graph, bundle, folder, session_class, options, threads, profile_ops):
        """The whole cascade as one graph that returns early through If (export form
        if_graph), used for single images; None when the bundle has only stages."""
        if graph is None:
            return None
        if not isinstance(graph, dict) or not all(isinstance(graph.get(k), str) for k in ("file", "thresholds_input", "index_output")):
            raise RunnerFailure("bundle.json: cascade.graph: expected {{file, thresholds_input, index_output}}; {}".format(REEXPORT))
        path = bundle_path(folder, graph["file"], "cascade.graph.file")
        session = _open_session(session_class, bundle, folder, path, options, threads, profile_ops)
        # (the thresholds input is not looked up by name: OpenVINO may report a port by another
        # of its tensor names, e.g. when a one-exit Gather folds away; it is fed by name)
        if len(session.inputs) != 2 or graph["index_output"] not in session.output_names:
            raise RunnerFailure("bundle.json: cascade.graph: {} needs two inputs (image, thresholds) and the exit index "
                                "output; {}".format(graph["file"], REEXPORT))
        # in the graph's units: exit when score >= t (score: max softmax, or minus the entropy); never: +inf
        scores = [np.inf if s["threshold"] is None else (s["threshold"] if self.rule == "confidence" else -s["threshold"])
                  for s in self.stages[:-1]]
        self.graph_feeds = {graph["thresholds_input"]: np.array(scores, dtype=np.float32)}
        self.graph_index = graph["index_output"]
        exits = graph.get("exits")  # the exits the graph can take (chosen on the target); null: all
        if exits is not None and (not isinstance(exits, list) or not all(
                isinstance(e, int) and not isinstance(e, bool) and 0 <= e < len(self.stages) - 1 for e in exits)):
            raise RunnerFailure("bundle.json: cascade.graph.exits: expected indices of the stages' exits; {}".format(REEXPORT))
        self.graph_exits = list(range(len(self.stages) - 1)) if exits is None else exits
        return session

    def run(self, feeds):
        outputs, current = {}, feeds
        for stage, session in zip(self.stages, self.sessions):
            out = session.run(current)
            if stage["exit_output"] is None:
                outputs[stage["name"]] = out[stage["outputs"][0]]
            else:
                outputs[stage["name"]] = out[stage["exit_output"]]
                current = dict((name, out[name]) for name in stage["outputs"] if name != stage["exit_output"])
        return outputs

    def executed(self, feeds):
        counts, current = {}, feeds
        for stage, session in zip(self.stages, self.sessions):
            out = session.run(current)
            for key, value in session.executed(current).get("compute_ops", {}).items():
                counts[key] = counts.get(key, 0) + value
            if stage["exit_output"] is not None:
                current = dict((name, out[name]) for name in stage["outputs"] if name != stage["exit_output"])
        return {"compute_ops": counts}

    def prepare(self, feeds):
        """Fixed shapes where the runtime has them (``_Session.prepare``): every stage at
        this batch (a single image stays one or leaves; a larger batch keeps these shapes
        until someone leaves, and compacted batches run as exported) and, for a single image,
        the one graph. True when what times this batch runs fixed: the one graph for a
        single image when the bundle has it, else every stage."""
        batch = len(next(iter(feeds.values())))
        stages_fixed, current = True, feeds
        for stage, session in zip(self.stages, self.sessions):
            stages_fixed = session.prepare(current) and stages_fixed
            if stage["exit_output"] is None:
                break
            out = session.run(current)
            current = dict((name, out[name]) for name in stage["outputs"] if name != stage["exit_output"])
        if self.graph is not None and batch == 1:
            return self.graph.prepare(dict(feeds, **self.graph_feeds))
        return stages_fixed

    def leaves(self, logits, threshold):
        if threshold is None:
            return np.zeros(len(logits), dtype=bool)
        z = logits - logits.max(-1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(-1, keepdims=True)
        if self.rule == "confidence":
            return p.max(-1) >= threshold
        return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1) <= threshold

    def classify(self, feeds):
        """(predicted class, exit index, per-stage ms) for one batch, run as a cascade: a
        single image through the one-graph cascade when the bundle has it (no per-stage
        ms then: one call), a batch through the stage sessions with compaction."""
        batch = len(next(iter(feeds.values())))
        if self.graph is not None and batch == 1:
            feeds = dict(feeds, **self.graph_feeds)
            out = self.graph.run(feeds)
            return out[self.stages[-1]["name"]].argmax(-1), np.full(1, int(out[self.graph_index]), dtype=np.int64), []
        predicted = np.zeros(batch, dtype=np.int64)
        exited = np.zeros(batch, dtype=np.int64)
        remaining = np.arange(batch)
        stage_ms, current = [], feeds
        for k, (stage, session) in enumerate(zip(self.stages, self.sessions)):
            t0 = time.perf_counter()
            out = session.run(current)
            stage_ms.append((time.perf_counter() - t0) * 1000.0)
            if stage["exit_output"] is None:
                predicted[remaining] = out[stage["outputs"][0]].argmax(-1)
                exited[remaining] = k
                break
            logits = out[stage["exit_output"]]
            leave = self.leaves(logits, stage["threshold"])
            predicted[remaining[leave]] = logits[leave].argmax(-1)
            exited[remaining[leave]] = k
            if leave.all():
                break
            stay = ~leave
            remaining = remaining[stay]
            current = dict((name, out[name][stay]) for name in stage["outputs"] if name != stage["exit_output"])
        return predicted, exited, stage_ms


def _cascade_stages(stages):
    """The cascade's stages, each {name, file, outputs, exit_output, threshold} with the
    types the cascade code reads (the files are checked when each stage is opened)."""
    if not isinstance(stages, list) or not stages:
        raise RunnerFailure("bundle.json: cascade.stages: expected a non-empty list; {}".format(REEXPORT))
    for k, stage in enumerate(stages):
        where = "bundle.json: cascade.stages[{}]".format(k)
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
            raise RunnerFailure("{}: expected an object with a name; {}".format(where, REEXPORT))
        outputs = stage.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise RunnerFailure("{}.outputs: expected a list of output names; {}".format(where, REEXPORT))
        if "exit_output" not in stage or "threshold" not in stage:
            raise RunnerFailure("{}: needs exit_output and threshold (null for the last stage); {}".format(where, REEXPORT))
        last = k == len(stages) - 1
        if (stage["exit_output"] is None) != last or not last and stage["exit_output"] not in outputs:
            raise RunnerFailure("{}.exit_output: every stage but the last names one of its outputs, the last none; {}".format(
                where, REEXPORT))
        threshold = stage.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not np.isfinite(threshold)):
            raise RunnerFailure("{}.threshold: expected a finite number or null; {}".format(where, REEXPORT))
    return stages


WARMUP_EVAL = 5


def evaluate_cascade(session, images, labels, batch):
    """Run the cascade over evaluation images (and, interleaved batch by batch, the same
    network without exits when the bundle carries it): exit histogram, per-stage and
    end-to-end latency, accuracy. Measured here, not estimated from FLOPs."""
    reference = None
    if session.reference_path:
        reference = _open_session(session.session_class, session.bundle, session.folder, session.reference_path,
                                  session.options, session.threads)
    n_stages = len(session.stages)
    histogram = [0] * n_stages
    per_stage = [[] for _ in range(n_stages)]
    total_ms, reference_ms, correct, reference_correct = [], [], 0, 0
    # process CPU time per call beside wall time: the speed-up is taken from CPU time (a
    # shared machine's other load lands in wall time, not in ours); wall time gives p90
    total_cpu_ms, reference_cpu_ms = [], []
    name = session.inputs[0][0]
    warm = {name: images[:batch].astype(np.float32)}
    fixed = session.prepare(warm)
    if reference is not None:
        fixed = reference.prepare({reference.inputs[0][0]: warm[name]}) and fixed
    # every stage session and the reference start warm (lazy init, caches), also for the
    # shape of a last, smaller batch
    tail = len(images) % batch
    warm_feeds = [warm] + ([{name: images[-tail:].astype(np.float32)}] if tail else [])
    for _ in range(WARMUP_EVAL):
        for feeds in warm_feeds:
            session.run(feeds)
            session.classify(feeds)
            if reference is not None:
                reference.run({reference.inputs[0][0]: feeds[name]})
    for start in range(0, len(images), batch):
        x = images[start:start + batch].astype(np.float32)
        c0, t0 = time.process_time(), time.perf_counter()
        predicted, exited, stage_ms = session.classify({name: x})
        t1, c1 = time.perf_counter(), time.process_time()
        total_ms.append((t1 - t0) * 1000.0)
        total_cpu_ms.append((c1 - c0) * 1000.0)
        for k, ms in enumerate(stage_ms):
            per_stage[k].append(ms)
        for k in exited:
            histogram[int(k)] += 1
        if labels is not None:
            correct += int((predicted == labels[start:start + batch]).sum())
        if reference is not None:
            c0, t0 = time.process_time(), time.perf_counter()
            logits = reference.run({reference.inputs[0][0]: x})
            t1, c1 = time.perf_counter(), time.process_time()
            reference_ms.append((t1 - t0) * 1000.0)
            reference_cpu_ms.append((c1 - c0) * 1000.0)
            if labels is not None:
                reference_correct += int((next(iter(logits.values())).argmax(-1) == labels[start:start + batch]).sum())
    n = len(images)
    result = {"images": n, "batch": batch, "rule": session.rule,
              "executed_as": ("one graph, early return through If (no per-stage latency)" if session.graph is not None and batch == 1
                              else "one session per stage, batch compacted after each exit"),
              "input_shapes": ("as exported" if not fixed else "fixed to the batch" if batch == 1
                               else "fixed to the batch until a sample leaves, then as exported"),
              "thresholds": [s["threshold"] for s in session.stages[:-1]],
              "exit_histogram": histogram, "exit_rates": [h / float(n) for h in histogram],
              "latency": dict(latency_stats(total_ms), cpu_time_ms=float(np.mean(total_cpu_ms))),
              "stage_latency": [dict(latency_stats(ms), calls=len(ms)) if ms else {"calls": 0} for ms in per_stage],
              "accuracy": correct / float(n) if labels is not None else None}
    if reference is not None:
        result["full_model_latency"] = dict(latency_stats(reference_ms), cpu_time_ms=float(np.mean(reference_cpu_ms)))
        result["full_model_accuracy"] = reference_correct / float(n) if labels is not None else None
        cpu = result["latency"]["cpu_time_ms"] > 0  # a clock too coarse to see a call: fall back to wall time
        result["speedup_mean"] = (result["full_model_latency"]["cpu_time_ms"] / result["latency"]["cpu_time_ms"] if cpu
                                  else result["full_model_latency"]["mean_ms"] / result["latency"]["mean_ms"])
        result["speedup_se"] = (ratio_of_means_se(reference_cpu_ms, total_cpu_ms) if cpu
                                else ratio_of_means_se(reference_ms, total_ms))
        result["speedup_measured_as"] = "process CPU time" if cpu else "wall time"
        result["speedup_mean_wall"] = result["full_model_latency"]["mean_ms"] / result["latency"]["mean_ms"]
        result["speedup_p50"] = result["full_model_latency"]["p50_ms"] / result["latency"]["p50_ms"]
    return result


def ratio_of_means_se(numerator, denominator):
    """Standard error of mean(numerator) / mean(denominator) over paired samples (the same
    batches, timed one after the other), by the delta method. It holds both the clock's
    noise and how much the cascade's time varies with which images leave where: what a
    second run on other images of the same kind could read."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    n = len(a)
    if n < 2 or a.mean() <= 0 or b.mean() <= 0:
        return None  # not estimable from one batch, or a clock too coarse to see a call
    ra, rb = a / a.mean(), b / b.mean()  # relative deviations: var(log ratio) = var(ra - rb) / n
    return float(a.mean() / b.mean() * np.std(ra - rb, ddof=1) / np.sqrt(n))


def cascade_path_costs(session, image, runs, rounds):
    """Process CPU ms per call of each way through a cascade bundle for one image, timed
    interleaved: the bundled reference, the one-graph cascade with every exit refused and
    with exit k forced (thresholds fed as never / always), and the stage sessions chained up
    to stage k. Where an exit's cost goes in this runtime, apart from the exit rates."""
    name = session.inputs[0][0]
    feeds = {name: image.astype(np.float32)}
    n_exits = len(session.stages) - 1
    variants = []
    if session.reference_path:
        reference = _open_session(session.session_class, session.bundle, session.folder, session.reference_path,
                                  session.options, session.threads)
        variants.append(("reference (no exits)", reference, {reference.inputs[0][0]: feeds[name]}))
    if session.graph is not None:
        thresholds_input = next(iter(session.graph_feeds))
        for k in [None] + list(session.graph_exits):  # an exit left out of the graph cannot be forced
            forced = np.full(n_exits, np.inf, dtype=np.float32)  # scores are compared with >=: +inf never exits
            if k is not None:
                forced[k] = -np.inf
            label = "one graph, nobody exits" if k is None else "one graph, exit {} taken".format(k)
            variants.append((label, session.graph, dict(feeds, **{thresholds_input: forced})))

    class _Chain(object):  # the stage sessions run one after another, as the runner does for batches
        def __init__(self, last):
            self.last = last

        def prepare(self, feeds):  # the cascade fixes its stage sessions' shapes
            return session.prepare(feeds)

        def run(self, current):
            for stage, stage_session in zip(session.stages[:self.last + 1], session.sessions[:self.last + 1]):
                out = stage_session.run(current)
                current = dict((o, out[o]) for o in stage["outputs"] if o != stage["exit_output"])
            return out

    for k in range(n_exits + 1):
        variants.append(("stages 0-{} chained".format(k), _Chain(k), feeds))
    timed = time_interleaved([(v[1], v[2]) for v in variants], runs, max(3, runs // 10), rounds)
    out = []
    for (label, runnable, path_feeds), t in zip(variants, timed):
        row = {"path": label, "cpu_time_ms": t["cpu_time_ms"], "p50_ms": t["p50_ms"]}
        if runnable is session.graph:  # the exit the forced thresholds really took
            row["exit_index"] = int(np.asarray(session.graph.run(path_feeds)[session.graph_index]).reshape(-1)[0])
        out.append(row)
    return out


def input_feeds(session, batch, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in session.inputs:
        dims = [batch if not isinstance(d, int) or d <= 0 else d for d in shape]
        if isinstance(shape[0], int) and shape[0] > 0 and shape[0] != batch:
            raise RunnerFailure("input {} has a fixed batch of {}; run with --batch {}".format(name, shape[0], shape[0]))
        feeds[name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def latency_stats(samples_ms):
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise RunnerFailure("no timed runs")
    return {
        "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "std_ms": float(a.std()),
        "min_ms": float(a.min()), "max_ms": float(a.max()),
    }


def time_runs(session, feeds, runs, warmup):
    return time_interleaved([(session, feeds)], runs, warmup, rounds=1)[0]


def time_interleaved(sessions, runs, warmup, rounds):
    """Each (session, feeds) timed ``runs`` times, in ``rounds`` alternating blocks, so
    load on a shared machine falls on all of them alike: wall-clock stats + process CPU
    time per inference, per session."""
    fixed = []
    for session, feeds in sessions:
        prepare = getattr(session, "prepare", None)  # any object with run() can be timed here
        fixed.append(bool(prepare(feeds)) if prepare is not None else False)
        for _ in range(warmup):
            session.run(feeds)
    samples = [[] for _ in sessions]
    cpu = [0.0 for _ in sessions]
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    for count in per_round:
        for i, (session, feeds) in enumerate(sessions):
            cpu0 = time.process_time()
            for _ in range(count):
                t0 = time.perf_counter()
                session.run(feeds)
                samples[i].append((time.perf_counter() - t0) * 1000.0)
            cpu[i] += time.process_time() - cpu0
    out = []
    for i in range(len(sessions)):
        stats = latency_stats(samples[i])
        stats["cpu_time_ms"] = cpu[i] * 1000.0 / len(samples[i])
        stats["input_shapes"] = "fixed to the timed inputs" if fixed[i] else "as exported"
        out.append(stats)
    return out


def device_description():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "{} ({} cores, {})".format(model, os.cpu_count(), platform.machine())


def peak_rss_mb():
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except ImportError:
        return None


RUN_CHUNK = 64  # inputs per call when a file of many is run (--input): the exits pass sends its 5000-8000
# held-out images, and one call on all of them held every layer's activations at once
# (vit_tiny_c10's cascade: 23 GB, killed by the kernel)


def chunk_size(session):
    """Images per call: RUN_CHUNK, rounded to a multiple of a fixed graph batch (LiteRT)."""
    first = session.inputs[0][1][0] if session.inputs and session.inputs[0][1] else None
    fixed = first if isinstance(first, int) and first > 0 else 1
    return max(fixed, RUN_CHUNK // fixed * fixed)


def run_in_chunks(session, feeds, step):
    """``session.run`` over the batch ``step`` inputs at a time, outputs concatenated along the batch."""
    n = len(next(iter(feeds.values())))
    if n <= step:
        return session.run(feeds)
    starts = range(0, n, step)
    parts = [session.run(dict((k, v[i:i + step]) for k, v in feeds.items())) for i in starts]
    sizes = [min(step, n - i) for i in starts]
    out = {}
    for name in parts[0]:
        values = [np.asarray(p[name]) for p in parts]
        if any(v.ndim == 0 or v.shape[0] != m for v, m in zip(values, sizes)):
            raise RunnerFailure("output {} has no batch axis, so {} inputs cannot be run {} at a time; "
                                "run at most {} inputs per call".format(name, n, step, step))
        out[name] = np.concatenate(values)
    return out


def run(args):
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    session = open_artifact(args.artifact, args.threads, runtime=args.runtime)
    result = {"runner_version": RUNNER_VERSION, "runtime": session.runtime, "runtime_version": session.version,
              "device": device_description(), "threads": args.threads}
    if args.input:
        given = np.load(args.input)
        feeds = {session.inputs[0][0]: given.astype(np.float32)}
        step = chunk_size(session)
        np.savez(args.output, **run_in_chunks(session, feeds, step))
        result["output_file"] = args.output
        profiled = open_artifact(args.artifact, args.threads, True, args.runtime) if session.reopen_to_profile else session
        result["executed"] = profiled.executed(dict((k, v[:step]) for k, v in feeds.items()))
        result["executed"]["precision"] = executed_precision(profiled.runtime, result["executed"].get("compute_ops"))
        if args.runs > 0 and hasattr(profiled, "op_times"):  # where the time goes at batch 1 (a check-only run skips it)
            # a session whose counters survive `executed` is reused (OpenVINO); ORT's trace ended there
            timer = profiled if getattr(profiled, "op_times_reusable", False) else open_artifact(
                args.artifact, args.threads, True, args.runtime)
            one = dict((name, value[:1]) for name, value in feeds.items())
            timer.prepare(one)  # profile the model as it is timed
            timer.run(one)
            result["executed"]["op_times"] = timer.op_times(one, OP_TIME_RUNS)
    if args.eval:
        if not isinstance(session, CascadeSession):
            raise RunnerFailure("--eval runs an early-exit cascade; this bundle has no cascade")
        with np.load(args.eval) as data:
            images, labels = data["images"], (data["labels"] if "labels" in data.files else None)
        result["cascade"] = evaluate_cascade(session, images, labels, args.batch)
    if args.runs > 0:
        feeds = input_feeds(session, args.batch, args.seed)
        result.update({"batch": args.batch, "runs": args.runs, "warmup": args.warmup})
        if hasattr(session, "benchmark"):
            result.update(session.benchmark(feeds, args.runs, args.warmup))
            if args.baseline:
                result["baseline"] = {"error": "{} times with its own loop: no interleaved baseline".format(session.runtime)}
        elif args.baseline:
            result.update(_with_baseline(session, feeds, args))
        else:
            result.update(time_runs(session, feeds, args.runs, args.warmup))
    result["load_avg"] = [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _with_baseline(session, feeds, args):
    """The artifact and ``--baseline`` (the uncompressed model, same runtime) timed
    interleaved in one process: the speed-up the user really got on this device."""
    baseline = open_artifact(args.baseline, args.threads, runtime=args.runtime)
    base_feeds = input_feeds(baseline, args.batch, args.seed)
    rounds = max(1, min(BASELINE_ROUNDS, args.runs))
    mine, theirs = time_interleaved([(session, feeds), (baseline, base_feeds)], args.runs, args.warmup, rounds)
    mine["baseline"] = dict(theirs, rounds=rounds, runtime=baseline.runtime, runtime_version=baseline.version)
    mine["speedup_cpu"] = theirs["cpu_time_ms"] / mine["cpu_time_ms"] if mine["cpu_time_ms"] > 0 else None
    mine["speedup_p50"] = theirs["p50_ms"] / mine["p50_ms"] if mine["p50_ms"] > 0 else None
    return mine


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifact")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", help=".npy input to run once; outputs go to --output")
    p.add_argument("--output", default="outputs.npz")
    p.add_argument("--eval", help=".npz with images (and labels): run the cascade over them, report exits and latency")
    p.add_argument("--runtime", help="run with this runtime instead of the bundle's (e.g. check a TensorRT graph in onnxruntime)")
    p.add_argument("--baseline", help="bundle of the uncompressed model: timed interleaved with the artifact (speed-up)")
    args = p.parse_args(argv)
    if args.runs < 0 or args.warmup < 0 or args.threads < 1 or args.batch < 1:
        p.error("--runs/--warmup must be >= 0, --threads/--batch >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        load_session_modules()
        result = run(args)
    except RunnerFailure as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
