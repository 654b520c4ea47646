"""Transports run the device runner on a target and bring back its JSON and outputs.

``local`` runs it as a subprocess on this machine (the same isolation a device has: a
fresh interpreter, no torch). ssh:// and adb:// transports implement the same contract.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgevit import resources
from edgevit.bundle_files import BUNDLE_JSON, listed_files
from edgevit.errors import EdgevitError, RunnerError
from edgevit.profiling.host_tools import HostTools
from edgevit.profiling.target import AdbTarget, LocalTarget, SshTarget, Target, parse_target

RUNNER_TIMEOUT_S = 1800


@dataclass
class RunnerResult:
    data: dict[str, Any]
    outputs: dict[str, np.ndarray] | None


class Transport(Protocol):
    name: str

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None, baseline: Path | None = None) -> RunnerResult:
        ...


class LocalTransport:
    name = "local"

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None, baseline: Path | None = None) -> RunnerResult:
        with tempfile.TemporaryDirectory(prefix="edgevit-run-") as tmp:
            out_file = Path(tmp) / "outputs.npz"
            if inputs is not None:
                np.save(Path(tmp) / "input.npy", inputs)
            if eval_set is not None:
                np.savez(Path(tmp) / "eval.npz", **eval_set)
            cmd = runner_command(sys.executable, str(resources.runner_script()), str(artifact), tmp,
                                 runs, warmup, threads, batch, runtime, with_io=inputs is not None, with_eval=eval_set is not None,
                                 baseline=str(baseline) if baseline else None)
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
                   batch: int, runtime: str | None, with_io: bool, with_eval: bool = False,
                   baseline: str | None = None) -> list[str]:
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
    if baseline:
        cmd += ["--baseline", baseline]
    return cmd


BASELINE_FOLDER = "baseline"  # where remote transports put the baseline bundle in their work folder


def bundle_sources(bundle: Path) -> list[str]:
    """bundle.json and the files it lists, each checked to lie inside the folder and to be
    no Python code (the device runner loads session_*.py beside it)."""
    files = [bundle / BUNDLE_JSON, *listed_files(bundle)]
    code = [f for f in files if f.suffix == ".py"]
    if code:
        raise EdgevitError(f"{bundle}: {code[0].name}: a bundle holds model files, never Python code",
                           "re-export the artifact with edgevit")
    return [str(Path(f).absolute()) for f in files]


def files_to_send(artifact: Path, inputs: np.ndarray | None, tmp: Path, eval_set: dict[str, np.ndarray] | None = None) -> list[str]:
    """What a remote transport copies into its work folder: the runner, the bundle's files
    (flat, beside bundle.json, as the runner expects; each checked to lie inside the
    bundle folder) or the one artifact file, and the input."""
    files = bundle_sources(artifact) if artifact.is_dir() else [str(Path(artifact).absolute())]
    sources = [*(str(p) for p in resources.runner_files()), *files]
    if inputs is not None:
        np.save(tmp / "input.npy", inputs)
        sources.append(str(tmp / "input.npy"))
    if eval_set is not None:
        np.savez(tmp / "eval.npz", **eval_set)
        sources.append(str(tmp / "eval.npz"))
    names = [Path(source).name for source in sources] + ["outputs.npz"]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:  # copied flat: a bundle file named runner.py would replace the runner the device executes
        raise EdgevitError(f"{artifact}: {', '.join(clash)} would overwrite another file in the device's work folder",
                           "rename the artifact's files (the runner, input.npy, eval.npz and outputs.npz are reserved)")
    return sources


def work_folder(answer: str, prefix: str, where: str) -> str:
    """The folder ``mktemp -d PREFIX.XXXXXX`` created on the device, checked before it is
    put on a command line (the device's answer is not trusted either)."""
    remote = answer.strip()
    if not re.fullmatch(re.escape(prefix) + r"\.[A-Za-z0-9]{6,32}", remote):
        raise RunnerError(f"{where}: unexpected work folder {remote[:200]!r} from mktemp", "is mktemp on the device a normal one?")
    return remote


def remote_artifact(remote: str, artifact: Path) -> str:
    """The artifact's path in a remote work folder (the folder itself for a bundle)."""
    return f"{remote}/" if artifact.is_dir() else f"{remote}/{artifact.name}"


def parse_runner_output(artifact: Path, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and "error" in data:
        raise RunnerError(f"{artifact}: runner: {data['error']}", "the runner names the problem; re-export the artifact if it is the bundle")
    if returncode != 0 or not isinstance(data, dict):
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RunnerError(f"{artifact}: runner failed (exit {returncode}): {tail[:300]}",
                      "is the runtime installed on the target (python3 -c 'import onnxruntime')?")
    return data


def transport_for(target: str | Target, where: str = "target", tools: HostTools | None = None) -> Transport:
    """The transport for a target URL (validated by ``parse_target``; ``where`` names it
    in errors) with this machine's programs from ``tools`` (default: the environment)."""
    parsed = target if isinstance(target, (LocalTarget, SshTarget, AdbTarget)) else parse_target(target, where)
    if isinstance(parsed, LocalTarget):
        return LocalTransport()
    tools = tools or HostTools.from_environment()
    if isinstance(parsed, SshTarget):
        from edgevit.profiling.ssh import SshTransport

        return SshTransport(parsed, tools)
    from edgevit.profiling.adb import AdbTransport

    return AdbTransport(parsed, tools)
