"""ssh://user@host[:port] — run the device runner on a remote Linux box (Jetson, x86 gateway).

Copies runtimes/runner.py, the bundle files and the input into a fresh remote temp folder
(mktemp -d), runs the runner there with the device's python3, brings back its JSON and the
outputs, and removes the folder whatever happened. Options ride in the URL query:
``identity`` (key file), ``known_hosts`` (file; else the user's), ``python`` (remote
interpreter, default python3), ``timeout`` (seconds, default 600).
"""
from __future__ import annotations

import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from edgevit.errors import EdgevitError, RunnerError
from edgevit.profiling.transport import (RunnerResult, files_to_send, parse_runner_output, remote_artifact, runner_command,
                                        target_options)

CONNECT_TIMEOUT_S = 10


@dataclass
class SshTarget:
    user: str | None
    host: str
    port: int
    identity: str | None
    known_hosts: str | None
    python: str
    timeout: float

    @classmethod
    def parse(cls, url: str) -> "SshTarget":
        parsed = urlparse(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise EdgevitError(f"--target {url}: not an ssh target", "write ssh://user@host[:port]")
        query = target_options(url, {"identity", "known_hosts", "python", "timeout"})
        return cls(parsed.username, parsed.hostname, parsed.port or 22, query.get("identity"), query.get("known_hosts"),
                   query.get("python", "python3"), float(query.get("timeout", 600)))

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3"]
        if self.identity:
            opts += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=accept-new"]
        return opts


class SshTransport:
    name = "ssh"

    def __init__(self, url: str):
        self.target = SshTarget.parse(url)

    def _ssh(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        t = self.target
        return self._call(["ssh", "-p", str(t.port), *t.options(), t.destination, command], timeout)

    def _scp(self, sources: list[str], dest: str, timeout: float) -> None:
        t = self.target
        proc = self._call(["scp", "-q", "-P", str(t.port), *t.options(), *sources, dest], timeout)
        if proc.returncode != 0:
            raise RunnerError(f"{t.destination}: copy failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")

    def _call(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"{self.target.destination}: no answer within {timeout:.0f} s",
                              "is the device up? raise ?timeout= or lower --runs") from None

    def run(self, artifact: Path, runs: int, warmup: int, threads: int, batch: int,
            inputs: np.ndarray | None = None, runtime: str | None = None,
            eval_set: dict[str, np.ndarray] | None = None) -> RunnerResult:
        t = self.target
        made = self._ssh("mktemp -d /tmp/edgevit.XXXXXX", CONNECT_TIMEOUT_S * 3)
        if made.returncode != 0:
            raise RunnerError(f"{t.destination}: cannot connect or create a work folder: "
                              f"{(made.stderr.strip().splitlines() or ['?'])[-1]}", "check host, port, user and key")
        remote = made.stdout.strip()
        try:
            return self._run_in(remote, Path(artifact), runs, warmup, threads, batch, inputs, runtime, eval_set)
        finally:
            self._ssh(f"rm -rf {shlex.quote(remote)}", CONNECT_TIMEOUT_S * 3)  # nothing left on the device

    def _run_in(self, remote: str, artifact: Path, runs, warmup, threads, batch, inputs, runtime=None, eval_set=None) -> RunnerResult:
        t = self.target
        with tempfile.TemporaryDirectory(prefix="edgevit-ssh-") as tmp:
            sources = files_to_send(artifact, inputs, Path(tmp), eval_set)
            args = runner_command(t.python, f"{remote}/runner.py", remote_artifact(remote, artifact), remote,
                                  runs, warmup, threads, batch, runtime, with_io=inputs is not None,
                                  with_eval=eval_set is not None)
            self._scp(sources, f"{t.destination}:{remote}/", t.timeout)
            proc = self._ssh(" ".join(shlex.quote(a) for a in args), t.timeout)
            if proc.returncode == 127:
                raise RunnerError(f"{t.destination}: {t.python} not found on the device", "install python3 + numpy, or set ?python=")
            data = parse_runner_output(artifact, proc.returncode, proc.stdout, proc.stderr)
            outputs = None
            if inputs is not None:
                self._scp([f"{t.destination}:{remote}/outputs.npz"], str(Path(tmp) / "outputs.npz"), t.timeout)
                with np.load(Path(tmp) / "outputs.npz") as npz:
                    outputs = {k: npz[k] for k in npz.files}
        data["where_run"] = f"{t.destination}:{t.port} (ssh)"
        return RunnerResult(data, outputs)

