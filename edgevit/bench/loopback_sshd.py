"""An OpenSSH server on 127.0.0.1 with generated keys, for measuring and testing the ssh
transport without any other machine (Debian's openssh-server, run as root)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def available() -> bool:
    return os.path.exists(SSHD) and hasattr(os, "geteuid") and os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_sshd(python: str = sys.executable) -> Iterator[str]:
    """Yields an ssh:// target URL for root@127.0.0.1:<high port>, with EDGEVIT_SSH_IDENTITY and
    EDGEVIT_SSH_KNOWN_HOSTS set to its generated files meanwhile; stops sshd by its PID."""
    with tempfile.TemporaryDirectory(prefix="edgevit-sshd-") as tmp:
        d = Path(tmp)
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
        (d / "authorized_keys").write_text((d / "client.pub").read_text())
        port = free_port()
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\nPidFile none\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            # the key and known_hosts are this machine's files: they come from the environment, never the URL
            saved = {k: os.environ.get(k) for k in ("EDGEVIT_SSH_IDENTITY", "EDGEVIT_SSH_KNOWN_HOSTS")}
            os.environ.update(EDGEVIT_SSH_IDENTITY=str(d / "client"), EDGEVIT_SSH_KNOWN_HOSTS=str(d / "known_hosts"))
            try:
                yield f"ssh://root@127.0.0.1:{port}?python={python}&timeout=300"
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        finally:
            proc.terminate()
            proc.wait(timeout=10)
