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
import sys
import time

import numpy as np

RUNNER_VERSION = 1
ORT_COMPUTE_OPS = (
    "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv", "Attention", "MultiHeadAttention",
    "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm",
    "QLinearConv", "ConvInteger", "MatMulNBits", "QAttention",
)
OV_COMPUTE_LAYERS = ("FullyConnected", "MatMul", "Convolution", "ScaledAttn", "ScaledDotProductAttention", "GroupConvolution")


class RunnerFailure(Exception):
    """A problem the runner reports as JSON {"error": ...} with exit code 2."""


def read_bundle(path):
    """Return (bundle dict, folder). A bare model file gets a minimal bundle."""
    if os.path.isdir(path):
        path = os.path.join(path, "bundle.json")
    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise RunnerFailure("{}: no bundle.json here".format(path))
        with open(path) as fh:
            bundle = json.load(fh)
        return bundle, os.path.dirname(os.path.abspath(path))
    if not os.path.isfile(path):
        raise RunnerFailure("{}: artifact not found".format(path))
    fmt = {".onnx": "onnx", ".xml": "openvino"}.get(os.path.splitext(path)[1])
    if fmt is None:
        raise RunnerFailure("{}: give a bundle folder, bundle.json, .onnx or OpenVINO .xml".format(path))
    bundle = {"format": fmt, "model_file": os.path.basename(path), "session_options": {}}
    return bundle, os.path.dirname(os.path.abspath(path))


class OrtSession(object):
    runtime = "onnxruntime"

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


class OvSession(object):
    runtime = "openvino"

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
        self.compiled = core.compile_model(core.read_model(model_path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = [(p.get_any_name(), _ov_shape(p), str(p.get_element_type())) for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]

    def run(self, feeds):
        result = self.request.infer(feeds)
        return dict((port.get_any_name(), np.array(value)) for port, value in result.items())

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


def _ov_shape(port):
    shape = port.get_partial_shape()
    return [d.get_length() if d.is_static else "batch" for d in shape]


def _tmpdir():
    import tempfile

    return tempfile.gettempdir()


class TrtexecSession(object):
    """TensorRT through JetPack's `trtexec`: builds the engine on this device from the
    bundle's build spec (engines are device- and version-specific), feeds inputs and reads
    outputs through files, and times with trtexec's own per-iteration export."""

    runtime = "tensorrt"

    def __init__(self, model_path, bundle, folder):
        import shlex
        import shutil

        self.folder, self.spec = folder, bundle.get("tensorrt") or {}
        self.trtexec = os.environ.get("EDGEVIT_TRTEXEC") or shutil.which("trtexec") or "/usr/src/tensorrt/bin/trtexec"
        if not os.path.isfile(self.trtexec):
            raise RunnerFailure("trtexec not found on this device (TensorRT not installed?); set EDGEVIT_TRTEXEC")
        if "trtexec" not in self.spec:
            raise RunnerFailure("bundle has no tensorrt build spec")
        self.inputs = [(i["name"], i["shape"], i["dtype"]) for i in bundle["inputs"]]
        self.output_names = [o["name"] for o in bundle["outputs"]]
        self.shapes_arg = [a for a in shlex.split(self.spec["trtexec"]) if a.startswith("--shapes=")]
        log = self._call(shlex.split(self.spec["trtexec"])[1:])  # build model.engine here, on the device
        self.version = _trt_version(log) or self.spec.get("version")

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
    import re

    match = re.search(r"TensorRT version: ([0-9.]+)", log) or re.search(r"\[TensorRT v(\d+)\]", log)
    return match.group(1) if match else None


SESSIONS = {"onnx": OrtSession, "openvino": OvSession}


def open_artifact(path, threads, profile_ops=False, runtime=None):
    """``runtime`` overrides the bundle's (the host checks a TensorRT graph in onnxruntime)."""
    bundle, folder = read_bundle(path)
    fmt = bundle.get("format")
    model_path = os.path.join(folder, bundle["model_file"])
    if not os.path.isfile(model_path):
        raise RunnerFailure("{}: model file named by the bundle is missing".format(model_path))
    if (runtime or bundle.get("runtime")) == "tensorrt":
        return TrtexecSession(model_path, bundle, folder)
    if fmt not in SESSIONS:
        raise RunnerFailure("bundle format {!r} is not run by this runner (knows {})".format(fmt, ", ".join(sorted(SESSIONS))))
    try:
        return SESSIONS[fmt](model_path, bundle.get("session_options", {}), threads, profile_ops)
    except ImportError as exc:
        raise RunnerFailure("runtime for {} is not installed on this device: {}".format(fmt, exc))


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
    for _ in range(warmup):
        session.run(feeds)
    samples = []
    cpu0 = time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(feeds)
        samples.append((time.perf_counter() - t0) * 1000.0)
    cpu_ms = (time.process_time() - cpu0) * 1000.0 / runs
    stats = latency_stats(samples)
    stats["cpu_time_ms"] = cpu_ms
    return stats


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


def run(args):
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    session = open_artifact(args.artifact, args.threads, runtime=args.runtime)
    result = {"runner_version": RUNNER_VERSION, "runtime": session.runtime, "runtime_version": session.version,
              "device": device_description(), "threads": args.threads}
    if args.input:
        given = np.load(args.input)
        feeds = {session.inputs[0][0]: given.astype(np.float32)}
        np.savez(args.output, **session.run(feeds))
        result["output_file"] = args.output
        profiled = session if session.runtime == "tensorrt" else open_artifact(args.artifact, args.threads, True, args.runtime)
        result["executed"] = profiled.executed(feeds)
    if args.runs > 0:
        feeds = input_feeds(session, args.batch, args.seed)
        result.update({"batch": args.batch, "runs": args.runs, "warmup": args.warmup})
        if hasattr(session, "benchmark"):
            result.update(session.benchmark(feeds, args.runs, args.warmup))
        else:
            result.update(time_runs(session, feeds, args.runs, args.warmup))
    result["load_avg"] = [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


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
    p.add_argument("--runtime", choices=["onnxruntime", "openvino", "tensorrt"],
                   help="run with this runtime instead of the bundle's (e.g. check a TensorRT graph in onnxruntime)")
    args = p.parse_args(argv)
    if args.runs < 0 or args.warmup < 0 or args.threads < 1 or args.batch < 1:
        p.error("--runs/--warmup must be >= 0, --threads/--batch >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = run(args)
    except RunnerFailure as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
