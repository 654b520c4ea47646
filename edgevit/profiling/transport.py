"""Transports run the device runner on a target and bring back its JSON and outputs.

``local`` runs it as a subprocess on this machine (the same isolation a device has: a
fresh interpreter, no torch). ssh:// and adb:// transports implement the same contract.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgevit import resources
from edgevit.errors import EdgevitError, RunnerError

RUNNER_TIMEOUT_S = 1800
LOCAL_RUNTIMES = frozenset({"onnxruntime", "openvino", "litert"})  # what runtimes/runner.py executes on this machine


@dataclass
class RunnerResult:
    data: dict[str, Any]
    outputs: dict[str, np.ndarray] | None


class Transport(Protocol):
    name: str

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None) -> RunnerResult:
        ...


class LocalTransport:
    name = "local"

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None) -> RunnerResult:
        with tempfile.TemporaryDirectory(prefix="edgevit-run-") as tmp:
            out_file = Path(tmp) / "outputs.npz"
            if inputs is not None:
                np.save(Path(tmp) / "input.npy", inputs)
            if eval_set is not None:
                np.savez(Path(tmp) / "eval.npz", **eval_set)
            cmd = runner_command(sys.executable, str(resources.runner_script()), str(artifact), tmp,
                                 runs, warmup, threads, batch, runtime, with_io=inputs is not None, with_eval=eval_set is not None)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUNNER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RunnerError(f"{artifact}: runner timed out after {RUNNER_TIMEOUT_S} s", "lower --runs") from None
            data = parse_runner_output(artifact, proc.returncode, proc.stdout, proc.stderr)
            outputs = None
            if inputs is not None:
                with np.load(out_file) as npz:
                    outputs = {k: npz[k] for k in npz.files}
        data["where_run"] = "this machine (local)"
        return RunnerResult(data, outputs)


def runner_command(python: str, runner: str, artifact: str, work: str, runs: int, warmup: int, threads: int,
                   batch: int, runtime: str | None, with_io: bool, with_eval: bool = False) -> list[str]:
    """The runner's command line, the same for every transport; ``work`` holds input.npy
    (and eval.npz: images + labels for a cascade) and receives outputs.npz (paths as the
    target sees them)."""
    cmd = [python, runner, artifact, "--runs", str(runs), "--warmup", str(warmup), "--threads", str(threads),
           "--batch", str(batch)]
    if runtime:
        cmd += ["--runtime", runtime]
    if with_io:
        cmd += ["--input", f"{work}/input.npy", "--output", f"{work}/outputs.npz"]
    if with_eval:
        cmd += ["--eval", f"{work}/eval.npz"]
    return cmd


def files_to_send(artifact: Path, inputs: np.ndarray | None, tmp: Path, eval_set: dict[str, np.ndarray] | None = None) -> list[str]:
    """What a remote transport copies into its work folder: the runner, the bundle's files
    (flat, beside bundle.json, as the runner expects) or the one artifact file, and the input."""
    if artifact.is_dir():
        bundle = json.loads((artifact / "bundle.json").read_text())
        files = [artifact / "bundle.json", *(artifact / f for f in bundle["files"])]
    else:
        files = [artifact]
    sources = [str(resources.runner_script()), *map(str, files)]
    if inputs is not None:
        np.save(tmp / "input.npy", inputs)
        sources.append(str(tmp / "input.npy"))
    if eval_set is not None:
        np.savez(tmp / "eval.npz", **eval_set)
        sources.append(str(tmp / "eval.npz"))
    return sources


def remote_artifact(remote: str, artifact: Path) -> str:
    """The artifact's path in a remote work folder (the folder itself for a bundle)."""
    return f"{remote}/" if artifact.is_dir() else f"{remote}/{artifact.name}"


def target_options(url: str, known: set[str]) -> dict[str, str]:
    """The ``?key=value`` options of a target URL (last value wins); an unknown key is an error."""
    from urllib.parse import parse_qs, urlparse

    query = {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}
    unknown = set(query) - known
    if unknown:
        raise EdgevitError(f"--target {url}: unknown option(s) {', '.join(sorted(unknown))}", f"known: {', '.join(sorted(known))}")
    return query


def parse_runner_output(artifact: Path, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "error" in data:
        raise RunnerError(f"{artifact}: runner: {data['error']}")
    if returncode != 0 or not isinstance(data, dict):
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RunnerError(f"{artifact}: runner failed (exit {returncode}): {tail[:300]}")
    return data


def transport_for(target: str) -> Transport:
    if target == "local":
        return LocalTransport()
    scheme = target.split("://", 1)[0] if "://" in target else target
    if scheme == "ssh":
        from edgevit.profiling.ssh import SshTransport

        return SshTransport(target)
    if scheme == "adb":
        from edgevit.profiling.adb import AdbTransport

        return AdbTransport(target)
    raise EdgevitError(f"--target {target}: unknown target", "use 'local', ssh://user@host[:port] or adb://SERIAL")
