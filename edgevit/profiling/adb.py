"""adb://SERIAL — run the device runner on an Android device (or any adb target) that has
a Python with numpy and the runtime (e.g. Termux): push runner + bundle into a fresh
/data/local/tmp folder, run, pull the outputs, remove the folder whatever happened.
The URL carries only validated device fields (``target.py``: serial, ``?python=`` device
interpreter, ``?timeout=``, ``?benchmark_model=`` path of TFLite's benchmark_model on the
device: times .tflite bundles with it instead of the Python runner, for phones without
Python; see benchmark_model.py). The adb binary comes from the environment
(``EDGEVIT_ADB``, see ``host_tools.py``), never from the URL.
"""
from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgevit.errors import RunnerError
from edgevit.profiling.host_tools import HostTools
from edgevit.profiling.target import AdbTarget
from edgevit.profiling.transport import (BASELINE_FOLDER, RunnerResult, bundle_sources, files_to_send, parse_runner_output, remote_artifact, runner_command,
                                        work_folder)

DEVICE_TMP = "/data/local/tmp"
DEVICE_PREFIX = f"{DEVICE_TMP}/edgevit"


class AdbTransport:
    name = "adb"

    def __init__(self, target: AdbTarget, tools: HostTools):
        self.target, self.adb = target, tools.adb
        self.serial, self.python, self.timeout = target.serial, target.python, target.timeout
        self.benchmark_model = target.benchmark_model

    def _adb(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, text=True,
                                  timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise RunnerError(f"{self.adb}: adb not found on this machine",
                              "install Android platform-tools (Debian: adb), or set EDGEVIT_ADB") from None
        except subprocess.TimeoutExpired:
            raise RunnerError(f"adb {self.serial}: no answer within {timeout or self.timeout:.0f} s", "is the device connected?") from None
        if "device '" in proc.stderr and "not found" in proc.stderr or "device offline" in proc.stderr:
            raise RunnerError(f"adb {self.serial}: device not connected ({proc.stderr.strip().splitlines()[-1]})",
                              "check `adb devices` and the cable")
        return proc

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None, baseline: Path | None = None) -> RunnerResult:
        made = self._adb("shell", f"mktemp -d {DEVICE_PREFIX}.XXXXXX", timeout=30)
        if made.returncode != 0 or not made.stdout.strip():
            raise RunnerError(f"adb {self.serial}: cannot create a work folder: {made.stderr.strip() or made.stdout.strip()}",
                              "is the device connected and authorised (`adb devices`)?")
        remote = work_folder(made.stdout, DEVICE_PREFIX, f"adb {self.serial}")
        try:
            if self.benchmark_model:
                return self._run_benchmark_model(remote, Path(artifact), runs, warmup, threads, batch, inputs)
            return self._run_in(remote, Path(artifact), runs, warmup, threads, batch, inputs, runtime, eval_set, baseline)
        finally:
            self._adb("shell", f"rm -rf {shlex.quote(remote)}", timeout=30)  # nothing left on the device

    def _run_benchmark_model(self, remote: str, artifact: Path, runs, warmup, threads, batch, inputs) -> RunnerResult:
        """benchmark_model times on the device; it returns no outputs, so the check's
        outputs come from the runner on this machine (same .tflite), and the data says so."""
        from edgevit.profiling.benchmark_model import run_benchmark_model
        from edgevit.profiling.transport import LocalTransport

        data = run_benchmark_model(self._adb, self.serial, self.benchmark_model, remote, artifact, runs, warmup, threads, batch)
        outputs = None
        if inputs is not None:
            local = LocalTransport().run(artifact, runs=0, warmup=0, threads=threads, batch=batch, inputs=inputs)
            outputs = local.outputs
            data["executed"] = local.data.get("executed")
            data["outputs_from"] = "this machine (runner): benchmark_model returns no outputs"
        data["where_run"] = f"{self.serial} (adb, benchmark_model)"
        return RunnerResult(data, outputs)

    def _run_in(self, remote: str, artifact: Path, runs, warmup, threads, batch, inputs, runtime=None, eval_set=None,
                baseline: Path | None = None) -> RunnerResult:
        with tempfile.TemporaryDirectory(prefix="edgevit-adb-") as tmp:
            sources = files_to_send(artifact, inputs, Path(tmp), eval_set)
            args = runner_command(self.python, f"{remote}/runner.py", remote_artifact(remote, artifact), remote,
                                  runs, warmup, threads, batch, runtime, with_io=inputs is not None,
                                  with_eval=eval_set is not None,
                                  baseline=f"{remote}/{BASELINE_FOLDER}/" if baseline else None)
            pushed = self._adb("push", "--", *sources, f"{remote}/")
            if pushed.returncode == 0 and baseline:  # its own subfolder: its file names are the artifact's
                self._adb("shell", f"mkdir {shlex.quote(remote + '/' + BASELINE_FOLDER)}")
                pushed = self._adb("push", "--", *bundle_sources(Path(baseline)), f"{remote}/{BASELINE_FOLDER}/")
            if pushed.returncode != 0:
                raise RunnerError(f"adb {self.serial}: push failed: {pushed.stderr.strip()}", "check free space in /data/local/tmp on the device")
            proc = self._adb("shell", " ".join(shlex.quote(a) for a in args))
            if proc.returncode == 127 or "not found" in proc.stderr and self.python in proc.stderr:
                raise RunnerError(f"adb {self.serial}: {self.python} not found on the device",
                                  "install Python + numpy + the runtime there, or set ?python=")
            data = parse_runner_output(artifact, proc.returncode, proc.stdout, proc.stderr)
            outputs = None
            if inputs is not None:
                pulled = self._adb("pull", "--", f"{remote}/outputs.npz", str(Path(tmp) / "outputs.npz"))
                if pulled.returncode != 0:
                    raise RunnerError(f"adb {self.serial}: pull failed: {pulled.stderr.strip()}", "did the runner write its outputs? run with --runs 1 to see its error")
                with np.load(Path(tmp) / "outputs.npz") as npz:
                    outputs = {k: npz[k] for k in npz.files}
        data["where_run"] = f"{self.serial} (adb)"
        return RunnerResult(data, outputs)
