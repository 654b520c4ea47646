"""Target URLs (``local``, ``ssh://user@host:port?...``, ``adb://SERIAL?...``) parsed into
validated, structured fields.

A target comes from files other people write (a recipe's ``profile.target``, a fleet
file's ``target``), so nothing in it may choose a program or a file on this machine: host
programs and key files come from the environment (see ``host_tools.py``). What a URL may
carry is checked against strict patterns before any command line is built: a user, host or
serial starting with ``-`` would otherwise become an ssh/adb option. The device-side
interpreter and benchmark_model path may stay in the URL (they name files on the device,
which the runner is sent to anyway), but only as absolute paths of safe characters whose
file name says what they are (``python3``, ``benchmark_model``), so a recipe cannot make
the device run another program with our arguments.

This module imports the standard library only (no numpy, torch or timm): ``edgevit
validate`` calls it.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from edgevit.errors import EdgevitError

DEFAULT_TIMEOUT_S = 600.0
MAX_TIMEOUT_S = 86_400.0  # a day: longer is a typo, not a benchmark
MAX_URL_CHARS = 2048

_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
_SERIAL = re.compile(r"^[A-Za-z0-9._:][A-Za-z0-9._:-]{0,127}$")
_DEVICE_PATH = re.compile(r"^(?:/[A-Za-z0-9._+-]+)+$")
_PYTHON_NAME = re.compile(r"^python[0-9.]*$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")  # no spaces, no control characters, ASCII only

# What a URL may not carry any more, and where it comes from instead.
_HOST_SIDE = {"adb": "EDGEVIT_ADB", "identity": "EDGEVIT_SSH_IDENTITY", "known_hosts": "EDGEVIT_SSH_KNOWN_HOSTS",
              "ssh": "EDGEVIT_SSH", "scp": "EDGEVIT_SCP"}
SSH_OPTIONS = ("python", "timeout")
ADB_OPTIONS = ("python", "timeout", "benchmark_model")
EXAMPLES = "use 'local', ssh://user@host[:port][?python=/usr/bin/python3&timeout=600] or adb://SERIAL[?python=...]"


class TargetError(EdgevitError):
    """A target URL that is malformed or asks for something a target may not choose."""


@dataclass(frozen=True)
class LocalTarget:
    """Run on this machine, in a fresh interpreter."""


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int = 22
    python: str = "python3"
    timeout: float = DEFAULT_TIMEOUT_S

    @property
    def destination(self) -> str:
        """user@host as ssh takes it (an IPv6 address unbracketed)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def remote_path(self, path: str) -> str:
        """user@host:path as scp takes it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{path}" if self.user else f"{host}:{path}"


@dataclass(frozen=True)
class AdbTarget:
    serial: str
    python: str = "python3"
    timeout: float = DEFAULT_TIMEOUT_S
    benchmark_model: str | None = None


Target = LocalTarget | SshTarget | AdbTarget


def parse_target(url: object, where: str = "target") -> Target:
    """``url`` as a validated target, or a TargetError naming ``where`` (e.g.
    ``recipe.yaml: profile.target``) and the fix."""
    if not isinstance(url, str):
        raise TargetError(f"{where}: expected a string, got {type(url).__name__}", EXAMPLES)
    if url == "local":
        return LocalTarget()
    if len(url) > MAX_URL_CHARS or not _PRINTABLE.match(url):
        raise TargetError(f"{where}: {_shown(url)}: only printable ASCII without spaces, at most {MAX_URL_CHARS} characters",
                          EXAMPLES)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced [ in the host
        raise TargetError(f"{where}: {_shown(url)}: not a URL ({exc})", EXAMPLES) from None
    where = f"{where} {_shown(url)}"
    if parts.scheme not in ("ssh", "adb") or "://" not in url:
        raise TargetError(f"{where}: unknown target", EXAMPLES)
    if parts.path or parts.fragment:
        raise TargetError(f"{where}: a target has no path or #fragment", "put options in the ?query, e.g. ?python=/usr/bin/python3")
    known = SSH_OPTIONS if parts.scheme == "ssh" else ADB_OPTIONS
    query = _options(parts.query, known, where)
    timeout = _timeout(query.get("timeout"), where)
    python = _device_file(query.get("python"), "python", _PYTHON_NAME, where) or "python3"
    if parts.scheme == "ssh":
        user, host, port = _ssh_netloc(parts.netloc, where)
        return SshTarget(user, host, port, python, timeout)
    benchmark_model = _device_file(query.get("benchmark_model"), "benchmark_model", re.compile(r"benchmark_model"), where)
    if benchmark_model is not None and not benchmark_model.startswith("/"):
        raise TargetError(f"{where}: benchmark_model must be an absolute path on the device",
                          "e.g. ?benchmark_model=/data/local/tmp/benchmark_model")
    return AdbTarget(_serial(parts.netloc, where), python, timeout, benchmark_model)


def _shown(value: str) -> str:
    return repr(value[:120] + ("..." if len(value) > 120 else ""))


def _options(query: str, known: tuple[str, ...], where: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=len(known) + 8)
    except ValueError as exc:
        raise TargetError(f"{where}: malformed ?query ({exc})", "write ?key=value&key=value") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in _HOST_SIDE:
            raise TargetError(f"{where}: ?{key}= names a program or file on this machine, which a target may not choose",
                              f"set the environment variable {_HOST_SIDE[key]} instead")
        if key not in known:
            raise TargetError(f"{where}: unknown option {key!r}", f"known: {', '.join(known)}")
        if key in options:
            raise TargetError(f"{where}: option ?{key}= given twice", "keep one")
        options[key] = value
    return options


def _timeout(value: str | None, where: str) -> float:
    if value is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= MAX_TIMEOUT_S:  # also refuses nan
        raise TargetError(f"{where}: ?timeout={value!r}: not a number of seconds in (0, {MAX_TIMEOUT_S:.0f}]", "e.g. ?timeout=600")
    return seconds


def _device_file(value: str | None, key: str, name: re.Pattern, where: str) -> str | None:
    """A program on the device: a bare name (looked up on its PATH) or an absolute path of
    safe characters, without ``..``, whose file name matches ``name``."""
    if value is None:
        return None
    leaf = value.rsplit("/", 1)[-1]
    safe = _DEVICE_PATH.match(value) if value.startswith("/") else re.match(r"^[A-Za-z0-9._+]+$", value)
    if not safe or ".." in value.split("/") or value.startswith("-") or not name.search(leaf):
        raise TargetError(f"{where}: ?{key}={value!r}: not an allowed program path on the device",
                          f"give a path of letters, digits and ._+- (absolute, no ..) whose file name is {key}*, "
                          f"e.g. {'/usr/bin/python3' if key == 'python' else '/data/local/tmp/benchmark_model'}")
    return value


def _ssh_netloc(netloc: str, where: str) -> tuple[str | None, str, int]:
    user, at, hostport = netloc.rpartition("@")
    if not at:
        user = None
    elif not _USER.match(user):
        raise TargetError(f"{where}: user {user!r} is not a plain user name",
                          "letters, digits and ._- (not starting with -), no password in the URL")
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket:
            raise TargetError(f"{where}: unbalanced [ in the host", "write ssh://user@[::1]:22")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(f"{where}: [{host}] is not an IPv6 address", "write ssh://user@[::1]:22") from None
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
        if not _HOSTNAME.match(host):
            raise TargetError(f"{where}: host {host!r} is not a host name or IPv4 address",
                              "letters, digits, - and . (not starting with -), or [IPv6]")
    port = 22
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not 1 <= int(rest[1:]) <= 65535:
            raise TargetError(f"{where}: port {rest[1:]!r} is not a number in 1..65535", "e.g. ssh://user@host:2222")
        port = int(rest[1:])
    return user, host, port


def _serial(netloc: str, where: str) -> str:
    if not _SERIAL.match(netloc):
        raise TargetError(f"{where}: serial {netloc!r} is not an adb serial",
                          "letters, digits and ._:- (not starting with -), as `adb devices` lists it")
    return netloc
