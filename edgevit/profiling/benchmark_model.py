"""TFLite's `benchmark_model` as the device side where a phone has no Python.

The adb transport uses it when the target names the binary
(``adb://SERIAL?benchmark_model=/data/local/tmp/benchmark_model``, a device path checked by
target.py): push the .tflite, run
``benchmark_model --graph=... --num_threads=N --num_runs=R``, parse its log into the same
keys the runner prints. benchmark_model times only; it cannot return outputs, so a
numerical check of the same .tflite runs on this machine with the runner, and the result
says so (``outputs_from``).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Callable

from edgevit.bundle_files import BUNDLE_JSON, model_file, read_bundle_json
from edgevit.errors import RunnerError

# "count=50 first=10546 curr=8580 min=8455 max=10546 avg=8714.5 std=298 [p5=.. median=.. p95=..]"
_STATS = re.compile(r"count=(\d+)((?:\s+\w+=[-0-9.e+]+)+)")
_TIMINGS = re.compile(r"Inference timings in us:.*Inference \(avg\):\s*([0-9.e+]+)")
_MEMORY = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=([0-9.]+) overall=([0-9.]+)")


def benchmark_args(binary: str, graph: str, runs: int, warmup: int, threads: int) -> list[str]:
    """Exactly ``runs`` timed and ``warmup`` untimed invocations (min_secs=0 turns off the
    tool's default of running for at least a second), on XNNPACK like the runner."""
    return [binary, f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={runs}", "--min_secs=0",
            f"--warmup_runs={warmup}", "--warmup_min_secs=0", "--use_xnnpack=true"]


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """benchmark_model's log -> the runner's timing keys (ms). It reports min/max/avg/std
    and, in recent versions, the median; p90/p99 are not printed, so they stay None."""
    runs = [m for m in _STATS.finditer(text)]
    if not runs:
        tail = (text.strip().splitlines() or ["(no output)"])[-1]
        raise RunnerError(f"benchmark_model printed no timing statistics: {tail[:300]}",
                          "run it by hand on the device with --graph=... to see why")
    count, fields = runs[-1].group(1), dict(kv.split("=", 1) for kv in runs[-1].group(2).split())  # the last: timed runs
    us = {k: float(v) for k, v in fields.items()}
    mean_us = us.get("avg")
    timings = _TIMINGS.search(text)
    if timings:
        mean_us = float(timings.group(1))
    result: dict[str, Any] = {
        "runs": int(count), "mean_ms": mean_us / 1000.0 if mean_us is not None else None,
        "min_ms": us["min"] / 1000.0 if "min" in us else None, "max_ms": us["max"] / 1000.0 if "max" in us else None,
        "std_ms": us["std"] / 1000.0 if "std" in us else None,
        "p50_ms": us["median"] / 1000.0 if "median" in us else None, "p90_ms": None, "p99_ms": None,
        "cpu_time_ms": None, "peak_rss_mb": None,
    }
    memory = _MEMORY.search(text)
    result["memory_footprint_mb"] = float(memory.group(2)) if memory else None
    return result


def run_benchmark_model(adb: Callable[..., Any], serial: str, binary: str, remote: str, artifact: Path,
                        runs: int, warmup: int, threads: int, batch: int) -> dict[str, Any]:
    """Push the bundle's .tflite into ``remote`` (an existing device folder) and time it.
    ``adb(*args, timeout=None)`` is the transport's adb call."""
    model = _tflite_of(artifact)
    if batch != 1 and _graph_batch(artifact) != batch:
        raise RunnerError(f"{artifact}: benchmark_model runs the graph's own batch ({_graph_batch(artifact)}), not --batch {batch}",
                          "re-export with session_options.batch or profile with --batch 1")
    pushed = adb("push", "--", str(model.absolute()), f"{remote}/")
    if pushed.returncode != 0:
        raise RunnerError(f"adb {serial}: push failed: {pushed.stderr.strip()}", "check free space in /data/local/tmp on the device")
    args = benchmark_args(binary, f"{remote}/{model.name}", max(runs, 1), warmup, threads)
    proc = adb("shell", " ".join(shlex.quote(a) for a in args))
    text = proc.stdout + "\n" + proc.stderr
    if proc.returncode == 127 or "not found" in proc.stderr and binary in proc.stderr:
        raise RunnerError(f"adb {serial}: {binary} not found on the device",
                          "push TFLite's benchmark_model there (chmod +x) or fix ?benchmark_model=")
    if proc.returncode != 0:
        tail = (text.strip().splitlines() or ["(no output)"])[-1]
        raise RunnerError(f"adb {serial}: benchmark_model failed (exit {proc.returncode}): {tail[:300]}",
                          "is ?benchmark_model= the path of TFLite's benchmark_model on the device, built for its ABI?")
    data = parse_benchmark_output(text)
    data.update({"runtime": "litert", "runtime_version": "TFLite benchmark_model (version not reported)",
                 "device": f"{serial} (adb)", "threads": threads, "batch": batch, "warmup": warmup,
                 "load_avg": [None, None], "device_side": "benchmark_model"})
    return data


def _tflite_of(artifact: Path) -> Path:
    if artifact.is_dir():
        artifact = model_file(artifact)  # checked to lie inside the bundle folder
    if artifact.suffix != ".tflite":
        raise RunnerError(f"{artifact}: benchmark_model runs .tflite models only",
                          "drop ?benchmark_model= from the target for ONNX / OpenVINO artifacts (they need the Python runner)")
    return artifact


def _graph_batch(artifact: Path) -> int | None:
    if not (artifact / BUNDLE_JSON).is_file():
        return None
    inputs = read_bundle_json(artifact).get("inputs")
    shape = inputs[0].get("shape") if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else None
    return shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else None
