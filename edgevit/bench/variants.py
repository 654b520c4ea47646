"""Timed callables built from `edgevit compress` runs, shared by the bench sections."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgevit.bench.timing import interleaved, session_call, summary
from edgevit.models import load_model_folder
from edgevit.profiling import runner_module

RUNTIMES = {"onnxruntime": "x86-onnxruntime", "openvino": "x86-openvino"}


def artifact_variants(run_dir: Path, threads: int, prefix: str = "", eager: bool = True, batch: int = 1) -> dict[str, Any]:
    """Callables running one inference of a compress run: PyTorch eager (from its saved
    model/) and each of its artifacts, through the device runner's loader."""
    size = json.loads((run_dir / "report.json").read_text())["model"]["input_size"]
    x = torch.randn(batch, *size)
    fns = {}
    if eager:
        model = load_model_folder(run_dir / "model").model

        def run_eager():
            with torch.no_grad():
                model(x)

        fns[f"{prefix}pytorch eager"] = run_eager
    runner = runner_module()
    for runtime, profile in RUNTIMES.items():
        session = runner.open_artifact(str(run_dir / "artifacts" / profile), threads)
        feeds = {session.inputs[0][0]: x.numpy()}
        fns[f"{prefix}{runtime}"] = session_call(session, feeds)
    return fns


def time_variants(build, rounds: int, per_round: int, cpu_per_round: int | None = None) -> dict[str, Any]:
    """``build(threads)`` -> callables; wall at 2 threads, then CPU time at 1 thread, each
    interleaved; per variant the summaries with the spread of the round medians."""
    cpu_per_round = cpu_per_round or per_round
    torch.set_num_threads(2)
    wall = interleaved(build(2), rounds, per_round)
    torch.set_num_threads(1)
    cpu = interleaved(build(1), rounds, cpu_per_round, cpu_time=True)
    torch.set_num_threads(2)
    return {name: {"wall_2t": summary(wall[name].wall_ms, per_round), "cpu_1t": summary(cpu[name].cpu_ms, cpu_per_round)}
            for name in wall}
