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
TFLITE_COMPUTE_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")


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
    fmt = {".onnx": "onnx", ".xml": "openvino", ".tflite": "litert"}.get(os.path.splitext(path)[1])
    if fmt is None:
        raise RunnerFailure("{}: give a bundle folder, bundle.json, .onnx, OpenVINO .xml or .tflite".format(path))
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


class LiteRtSession(object):
    """LiteRT / TFLite: ai-edge-litert's interpreter, or tflite-runtime's (what boards in
    the field often have; same API). Both apply XNNPACK, the CPU delegate, by default.

    TFLite graphs are static-shape. A graph exported with a dynamic batch (shape_signature
    -1) is resized to the batch fed; a fixed-batch graph is fed a larger batch in slices
    (checks and accuracy), while timing refuses another --batch (input_feeds says so).
    int8 inputs/outputs are (de)quantized with the tensor's own scale and zero point."""

    runtime = "litert"

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


SESSIONS = {"onnx": OrtSession, "openvino": OvSession, "litert": LiteRtSession}


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
    if "cascade" in bundle:
        return CascadeSession(bundle, folder, threads, profile_ops)
    return _open_session(fmt, model_path, bundle.get("session_options", {}), threads, profile_ops)


def _open_session(fmt, model_path, options, threads, profile_ops=False):
    try:
        return SESSIONS[fmt](model_path, options, threads, profile_ops)
    except ImportError as exc:
        raise RunnerFailure("runtime for {} is not installed on this device: {}".format(fmt, exc))


class CascadeSession(object):
    """An early-exit cascade: one session per stage; between stages the host decides, per
    sample, whether it leaves (exit rule and thresholds from bundle.json). ``run`` takes
    every sample through every stage and returns all exits' logits (for the numerical
    check); ``classify`` is the real cascade, compacting the batch to the samples left."""

    def __init__(self, bundle, folder, threads, profile_ops=False):
        manifest = bundle["cascade"]
        fmt, options = bundle["format"], bundle.get("session_options", {})
        self.rule = manifest["rule"]
        self.stages = manifest["stages"]
        self.sessions = []
        for stage in self.stages:
            path = os.path.join(folder, stage["file"])
            if not os.path.isfile(path):
                raise RunnerFailure("{}: cascade stage file named by the bundle is missing".format(path))
            self.sessions.append(_open_session(fmt, path, options, threads, profile_ops))
        first = self.sessions[0]
        self.runtime, self.version, self.inputs = first.runtime, first.version, first.inputs
        self.output_names = [stage["name"] for stage in self.stages]
        reference = bundle.get("reference_model")
        self.reference_path = os.path.join(folder, reference["file"]) if reference else None
        self.fmt, self.options, self.threads = fmt, options, threads

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
        """(predicted class, exit index, per-stage ms) for one batch, run as a cascade."""
        batch = len(next(iter(feeds.values())))
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


WARMUP_EVAL = 5


def evaluate_cascade(session, images, labels, batch):
    """Run the cascade over evaluation images (and, interleaved batch by batch, the same
    network without exits when the bundle carries it): exit histogram, per-stage and
    end-to-end latency, accuracy. Measured here, not estimated from FLOPs."""
    reference = None
    if session.reference_path:
        reference = _open_session(session.fmt, session.reference_path, session.options, session.threads)
    n_stages = len(session.stages)
    histogram = [0] * n_stages
    per_stage = [[] for _ in range(n_stages)]
    total_ms, reference_ms, correct, reference_correct = [], [], 0, 0
    name = session.inputs[0][0]
    warm = {name: images[:batch].astype(np.float32)}
    for _ in range(WARMUP_EVAL):  # every stage session and the reference start warm (lazy init, caches)
        session.run(warm)
        if reference is not None:
            reference.run({reference.inputs[0][0]: warm[name]})
    for start in range(0, len(images), batch):
        x = images[start:start + batch].astype(np.float32)
        t0 = time.perf_counter()
        predicted, exited, stage_ms = session.classify({name: x})
        total_ms.append((time.perf_counter() - t0) * 1000.0)
        for k, ms in enumerate(stage_ms):
            per_stage[k].append(ms)
        for k in exited:
            histogram[int(k)] += 1
        if labels is not None:
            correct += int((predicted == labels[start:start + batch]).sum())
        if reference is not None:
            t0 = time.perf_counter()
            logits = reference.run({reference.inputs[0][0]: x})
            reference_ms.append((time.perf_counter() - t0) * 1000.0)
            if labels is not None:
                reference_correct += int((next(iter(logits.values())).argmax(-1) == labels[start:start + batch]).sum())
    n = len(images)
    result = {"images": n, "batch": batch, "rule": session.rule,
              "thresholds": [s["threshold"] for s in session.stages[:-1]],
              "exit_histogram": histogram, "exit_rates": [h / float(n) for h in histogram],
              "latency": latency_stats(total_ms),
              "stage_latency": [dict(latency_stats(ms), calls=len(ms)) if ms else {"calls": 0} for ms in per_stage],
              "accuracy": correct / float(n) if labels is not None else None}
    if reference is not None:
        result["full_model_latency"] = latency_stats(reference_ms)
        result["full_model_accuracy"] = reference_correct / float(n) if labels is not None else None
        result["speedup_mean"] = result["full_model_latency"]["mean_ms"] / result["latency"]["mean_ms"]
        result["speedup_p50"] = result["full_model_latency"]["p50_ms"] / result["latency"]["p50_ms"]
    return result


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
    p.add_argument("--eval", help=".npz with images (and labels): run the cascade over them, report exits and latency")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino", "tensorrt", "litert"],
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
