"""The programs and key files on THIS machine that the transports use.

They come from the environment of the person running edgevit, never from a target URL,
a recipe, a fleet file or a bundle (files other people write): a URL that could name the
adb binary or an ssh option file could make edgevit run anything.

    EDGEVIT_ADB              adb binary (default: adb on PATH)
    EDGEVIT_SSH, EDGEVIT_SCP ssh / scp binaries (default: ssh, scp on PATH)
    EDGEVIT_SSH_IDENTITY     private key file for ssh targets (default: ssh's own choice)
    EDGEVIT_SSH_KNOWN_HOSTS  known_hosts file; new host keys are then accepted on first use
                             (default: the user's known_hosts, unknown hosts refused)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgevit.errors import EdgevitError


@dataclass(frozen=True)
class HostTools:
    adb: str = "adb"
    ssh: str = "ssh"
    scp: str = "scp"
    ssh_identity: str | None = None
    ssh_known_hosts: str | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> "HostTools":
        env = os.environ if env is None else env
        programs = {key: _value(env, f"EDGEVIT_{key.upper()}") or key for key in ("adb", "ssh", "scp")}
        identity = _value(env, "EDGEVIT_SSH_IDENTITY")
        if identity is not None and not Path(identity).is_file():
            raise EdgevitError(f"EDGEVIT_SSH_IDENTITY={identity}: no such key file", "point it at your private key, or unset it")
        return cls(**programs, ssh_identity=identity, ssh_known_hosts=_value(env, "EDGEVIT_SSH_KNOWN_HOSTS"))


def _value(env: Mapping[str, str], name: str) -> str | None:
    """A set, non-empty variable. A value starting with '-' would be read as an option by
    the program it is handed to."""
    value = env.get(name) or None
    if value is not None and value.startswith("-"):
        raise EdgevitError(f"{name}={value}: starts with '-'", "give a path, e.g. /usr/bin/adb or ./key")
    return value
