"""ssh://user@host[:port] — run the device runner on a remote Linux box (Jetson, x86 gateway).

Copies runtimes/runner.py, the bundle files and the input into a fresh remote temp folder
(mktemp -d), runs the runner there with the device's python3, brings back its JSON and the
outputs, and removes the folder whatever happened. The URL carries only validated device
fields (``target.py``: user, host, port, ``?python=`` device interpreter, ``?timeout=``);
the ssh/scp programs, key file and known_hosts come from the environment
(``host_tools.py``). Destinations follow ``--`` so nothing there is read as an option.
"""
from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgevit.errors import RunnerError
from edgevit.profiling.host_tools import HostTools
from edgevit.profiling.target import SshTarget
from edgevit.profiling.transport import (BASELINE_FOLDER, RunnerResult, bundle_sources, files_to_send, parse_runner_output, remote_artifact, runner_command,
                                        work_folder)

CONNECT_TIMEOUT_S = 10
REMOTE_TMP = "/tmp/edgevit"


def ssh_options(tools: HostTools) -> list[str]:
    opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3"]
    if tools.ssh_identity:
        opts += ["-i", tools.ssh_identity, "-o", "IdentitiesOnly=yes"]
    if tools.ssh_known_hosts:
        opts += ["-o", f"UserKnownHostsFile={tools.ssh_known_hosts}", "-o", "StrictHostKeyChecking=accept-new"]
    return opts


def ssh_command(target: SshTarget, tools: HostTools, command: str) -> list[str]:
    return [tools.ssh, "-p", str(target.port), *ssh_options(tools), "--", target.destination, command]


def scp_command(target: SshTarget, tools: HostTools, sources: list[str], dest: str) -> list[str]:
    return [tools.scp, "-q", "-P", str(target.port), *ssh_options(tools), "--", *sources, dest]


class SshTransport:
    name = "ssh"

    def __init__(self, target: SshTarget, tools: HostTools):
        self.target, self.tools = target, tools

    def _ssh(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return self._call(ssh_command(self.target, self.tools, command), timeout)

    def _scp(self, sources: list[str], dest: str, timeout: float) -> None:
        t = self.target
        proc = self._call(scp_command(t, self.tools, sources, dest), timeout)
        if proc.returncode != 0:
            raise RunnerError(f"{t.destination}: copy failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}",
                              "check free space in /tmp on the device and that scp works with the same key")

    def _call(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise RunnerError(f"{cmd[0]}: not found on this machine", "install OpenSSH's client, or set EDGEVIT_SSH / EDGEVIT_SCP") from None
        except subprocess.TimeoutExpired:
            raise RunnerError(f"{self.target.destination}: no answer within {timeout:.0f} s",
                              "is the device up? raise ?timeout= or lower --runs") from None

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None, baseline: Path | None = None) -> RunnerResult:
        t = self.target
        made = self._ssh(f"mktemp -d {REMOTE_TMP}.XXXXXX", CONNECT_TIMEOUT_S * 3)
        if made.returncode != 0:
            raise RunnerError(f"{t.destination}: cannot connect or create a work folder: "
                              f"{(made.stderr.strip().splitlines() or ['?'])[-1]}", "check host, port, user and key")
        remote = work_folder(made.stdout, REMOTE_TMP, t.destination)
        try:
            return self._run_in(remote, Path(artifact), runs, warmup, threads, batch, inputs, runtime, eval_set, baseline)
        finally:
            self._ssh(f"rm -rf {shlex.quote(remote)}", CONNECT_TIMEOUT_S * 3)  # nothing left on the device

    def _run_in(self, remote: str, artifact: Path, runs, warmup, threads, batch, inputs, runtime=None, eval_set=None,
                baseline: Path | None = None) -> RunnerResult:
        t = self.target
        with tempfile.TemporaryDirectory(prefix="edgevit-ssh-") as tmp:
            sources = files_to_send(artifact, inputs, Path(tmp), eval_set)
            args = runner_command(t.python, f"{remote}/runner.py", remote_artifact(remote, artifact), remote,
                                  runs, warmup, threads, batch, runtime, with_io=inputs is not None,
                                  with_eval=eval_set is not None,
                                  baseline=f"{remote}/{BASELINE_FOLDER}/" if baseline else None)
            self._scp(sources, t.remote_path(f"{remote}/"), t.timeout)
            if baseline:  # its own subfolder: its file names are the artifact's
                self._ssh(f"mkdir {shlex.quote(remote + '/' + BASELINE_FOLDER)}", t.timeout)
                self._scp(bundle_sources(Path(baseline)), t.remote_path(f"{remote}/{BASELINE_FOLDER}/"), t.timeout)
            proc = self._ssh(" ".join(shlex.quote(a) for a in args), t.timeout)
            if proc.returncode == 127:
                raise RunnerError(f"{t.destination}: {t.python} not found on the device", "install python3 + numpy, or set ?python=")
            data = parse_runner_output(artifact, proc.returncode, proc.stdout, proc.stderr)
            outputs = None
            if inputs is not None:
                self._scp([t.remote_path(f"{remote}/outputs.npz")], str(Path(tmp) / "outputs.npz"), t.timeout)
                with np.load(Path(tmp) / "outputs.npz") as npz:
                    outputs = {k: npz[k] for k in npz.files}
        data["where_run"] = f"{t.destination}:{t.port} (ssh)"
        return RunnerResult(data, outputs)

