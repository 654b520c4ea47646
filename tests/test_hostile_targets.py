"""Issue 18, class 1: a recipe, a fleet file or a --target URL must not choose a program on
this machine or smuggle an option onto the ssh/adb command line. Each test here failed on
the code before the fix (noted per test)."""
import subprocess
import sys
from pathlib import Path

import pytest

from edgevit.errors import EdgevitError
from edgevit.profiling import transport_for
from edgevit.profiling.host_tools import HostTools
from edgevit.profiling.ssh import scp_command, ssh_command
from edgevit.profiling.target import AdbTarget, SshTarget, TargetError, parse_target

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def evil_program(tmp_path):
    """A host program a hostile URL would like edgevit to run; it leaves a marker if run."""
    marker = tmp_path / "PWNED"
    program = tmp_path / "evil"
    program.write_text(f"#!/bin/sh\ntouch {marker}\n")
    program.chmod(0o755)
    return program, marker


@pytest.mark.parametrize("url, message", [
    ("adb://-oProxy", "serial '-oProxy'"),                          # before: became an adb option
    ("ssh://-oProxyCommand=sh@host", "user '-oProxyCommand=sh'"),   # before: became an ssh option
    ("ssh://user@-oProxyCommand=sh", "host '-oProxyCommand=sh'"),
    ("adb://S?adb=/bin/sh", "EDGEVIT_ADB"),                         # before: /bin/sh was run as adb
    ("ssh://h?identity=/etc/shadow", "EDGEVIT_SSH_IDENTITY"),       # before: any host file as the key
    ("ssh://h?known_hosts=/etc/passwd", "EDGEVIT_SSH_KNOWN_HOSTS"),
    ("ssh://h?python=-c", "not an allowed program path"),           # before: python=anything
    ("adb://S?python=/system/bin/sh", "not an allowed program path"),
    ("adb://S?benchmark_model=/../../bin/sh", "not an allowed program path"),
    ("ssh://h:0", "port"), ("ssh://h:65536", "port"), ("ssh://h:22x", "port"),  # before: ValueError traceback
    ("ssh://h?timeout=-5", "timeout"), ("ssh://h?timeout=nan", "timeout"), ("adb://S?timeout=1e9", "timeout"),
    ("ssh://h?timeout=1&timeout=2", "given twice"),
    ("ssh://u:secret@h", "no password"),
    ("ssh://h/home", "no path"),
    ("ssh://h\nProxyCommand=x", "printable"),
    ("ssh://[::1", "not a URL"), ("ssh://[fe80::zz]", "not a URL"),
    ("file:///etc/passwd", "unknown target"),
])
def test_hostile_target_urls_are_refused(url, message):
    with pytest.raises(TargetError, match=message):
        transport_for(url, "recipe.yaml: profile.target")


def test_valid_targets_keep_working():
    assert parse_target("ssh://ubuntu@10.0.0.20:2222?python=/usr/bin/python3.8&timeout=30") == \
        SshTarget("ubuntu", "10.0.0.20", 2222, "/usr/bin/python3.8", 30.0)
    ipv6 = parse_target("ssh://root@[::1]")
    assert ipv6.destination == "root@::1" and ipv6.remote_path("/tmp/x") == "root@[::1]:/tmp/x"  # as ssh / scp take them
    assert parse_target("adb://192.168.1.5:5555?benchmark_model=/data/local/tmp/benchmark_model") == \
        AdbTarget("192.168.1.5:5555", "python3", 600.0, "/data/local/tmp/benchmark_model")
    assert parse_target("adb://emulator-5554?python=/data/data/com.termux/files/usr/bin/python3").serial == "emulator-5554"


def test_destinations_follow_double_dash():
    target, tools = SshTarget("u", "h", 2200), HostTools(ssh_identity=None)
    ssh = ssh_command(target, tools, "true")
    assert ssh[0] == "ssh" and ssh[-3:] == ["--", "u@h", "true"]
    scp = scp_command(target, tools, ["/x/-rf.onnx"], "u@h:/tmp/edgevit.abcdef/")
    assert scp.index("--") < scp.index("/x/-rf.onnx") and scp[-1] == "u@h:/tmp/edgevit.abcdef/"


def test_host_programs_come_from_the_environment(tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    tools = HostTools.from_environment({"EDGEVIT_ADB": "/opt/adb", "EDGEVIT_SSH_IDENTITY": str(key)})
    assert tools.adb == "/opt/adb" and tools.ssh == "ssh" and tools.ssh_identity == str(key)
    cmd = ssh_command(SshTarget(None, "h"), tools, "true")
    assert cmd[cmd.index("-i") + 1] == str(key)
    with pytest.raises(EdgevitError, match="no such key file"):
        HostTools.from_environment({"EDGEVIT_SSH_IDENTITY": str(tmp_path / "missing")})
    with pytest.raises(EdgevitError, match="starts with '-'"):
        HostTools.from_environment({"EDGEVIT_ADB": "-Hevil"})


def test_profile_never_runs_a_program_named_by_the_target(cli, tmp_path, evil_program):
    """Before: `--target adb://S?adb=EVIL` ran EVIL on this machine."""
    program, marker = evil_program
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    result = cli("profile", model, "--target", f"adb://S?adb={program}")
    assert result.exit_code == 2 and "EDGEVIT_ADB" in result.output and "fix:" in result.output
    assert not marker.exists()


def test_validate_refuses_a_hostile_recipe_target(cli, write_recipe, evil_program):
    """Before: `edgevit validate` said ok."""
    program, _ = evil_program
    recipe = write_recipe(f'name: t\nprofile: {{target: "adb://-s?adb={program}"}}\n')
    result = cli("validate", recipe)
    assert result.exit_code == 2, result.output
    assert "profile.target" in result.output and "fix:" in result.output and "ok" not in result.output.split("fix:")[0]
    assert cli("validate", write_recipe('name: t\nprofile: {target: "ssh://u@h:2222?timeout=9"}\n', "ok.yaml")).exit_code == 0


def test_fleet_file_with_a_hostile_target_is_refused_before_any_device(cli, tmp_path, evil_program):
    """Before: the fleet's `adb=` program was run for that device."""
    program, marker = evil_program
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    fleet = tmp_path / "targets.yaml"
    fleet.write_text(f'devices:\n  - {{name: here, target: local}}\n  - {{name: x, target: "adb://S?adb={program}"}}\n')
    result = cli("profile", model, "--targets", fleet)
    assert result.exit_code == 2 and "devices[1].target" in result.output and not marker.exists()


def test_target_parser_imports_without_torch():
    code = "import sys, edgevit.profiling.target; assert 'torch' not in sys.modules and 'timm' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_adb_work_folder_answer_is_checked(tmp_path, monkeypatch):
    """A device answering mktemp with something else than a fresh folder gets no `rm -rf` of it."""
    fake = tmp_path / "adb"
    log = tmp_path / "log"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\necho '/data/local/tmp; rm -rf /'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EDGEVIT_ADB", str(fake))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(EdgevitError, match="unexpected work folder"):
        transport_for("adb://S").run(model, runs=1, warmup=0, threads=1, batch=1)
    assert len(log.read_text().splitlines()) == 1  # only mktemp ran: no push into, no rm -rf of, that answer
