"""The machine's GEMM peaks and OpenVINO's own timer, for the roofline and cross-check columns.

Peak: one large product (M x K x N = 256 x 1024 x 1024) through ONNX Runtime's MLAS kernels
at 1 thread, as int8 (MatMulInteger, u8 x s8 -> s32: the kernel int8 layers run on) and
fp32 (MatMul). MLAS picks VNNI / AVX-512 / AVX2 kernels from the CPU, so this is the int8
throughput this CPU really offers a graph, not a datasheet figure.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

M, K, N = 256, 1024, 1024
RUNS = 20


def _gemm_session(int8: bool):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-64, 64, (K, N), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
        feed = rng.integers(0, 255, (M, K), dtype=np.uint8)
    else:
        weight = numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        feed = rng.standard_normal((M, K)).astype(np.float32)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", x_type, [M, K])],
                              [helper.make_tensor_value_info("y", y_type, [M, N])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(),
                                   sess_options=so, providers=["CPUExecutionProvider"])
    return session, {"x": feed}


def int8_gemm_peak() -> dict[str, float]:
    """Best-of-RUNS GMAC/s of the int8 and fp32 products, 1 thread, process CPU time."""
    out = {}
    for name, int8 in (("int8_gmacs", True), ("fp32_gmacs", False)):
        session, feeds = _gemm_session(int8)
        for _ in range(3):
            session.run(None, feeds)
        best = float("inf")
        for _ in range(RUNS):
            c0 = time.process_time()
            session.run(None, feeds)
            best = min(best, time.process_time() - c0)
        out[name] = M * K * N / best / 1e9
    return out


def benchmark_app_ms(model_xml: Path, input_size: tuple[int, ...], seconds: int = 8) -> float | None:
    """Median latency (wall ms) OpenVINO's benchmark_app reports for one IR at 1 thread;
    None when benchmark_app is not installed beside this Python."""
    tool = Path(sys.executable).parent / "benchmark_app"
    if not tool.is_file():
        return None
    shape = "[" + ",".join(str(d) for d in (1, *input_size)) + "]"
    proc = subprocess.run([str(tool), "-m", str(model_xml), "-d", "CPU", "-hint", "none", "-nthreads", "1", "-nstreams", "1",
                           "-shape", shape, "-t", str(seconds), "-infer_precision", "f32"],
                          capture_output=True, text=True, timeout=600)
    found = re.search(r"Median:\s+([0-9.]+) ms", proc.stdout)
    return float(found.group(1)) if proc.returncode == 0 and found else None
