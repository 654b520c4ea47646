"""The adb transport's command sequence, driven against tests/fakes/adb — a FAKE adb that
emulates a device on a local folder (there is no Android device here)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import RunnerError
from edgevit.profiling import transport_for

FAKE_ADB = Path(__file__).parent / "fakes" / "adb"


@pytest.fixture
def device(tmp_path, monkeypatch):
    root = tmp_path / "device"
    (root / "data/local/tmp").mkdir(parents=True)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("EDGEVIT_ADB", str(FAKE_ADB))
    url = f"adb://EMULATOR42?python={sys.executable}&timeout=120"
    return url, root, log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _onnx(tmp_path) -> tuple[Path, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "W"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
                              [numpy_helper.from_array(w, "W")])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path, w


def test_command_sequence_outputs_and_cleanup(device, tmp_path):
    url, root, log = device
    model, w = _onnx(tmp_path)
    x = np.ones((3, 4), dtype=np.float32)
    result = transport_for(url).run(model, runs=4, warmup=1, threads=1, batch=1, inputs=x)
    np.testing.assert_allclose(result.outputs["logits"], x @ w)
    assert result.data["where_run"] == "EMULATOR42 (adb)" and result.data["runs"] == 4
    calls = _calls(log)
    assert [c[2] for c in calls] == ["shell", "push", "shell", "pull", "shell"]
    assert calls[1][3] == "--" and calls[3][3] == "--"  # paths after --: a file named -x is never an adb option
    assert all(c[:2] == ["-s", "EMULATOR42"] for c in calls)
    assert calls[0][3].startswith("mktemp -d /data/local/tmp/edgevit.") and calls[-1][3].startswith("rm -rf /data/local/tmp/edgevit.")
    assert list((root / "data/local/tmp").iterdir()) == []  # nothing left on the device


def test_disconnected_device_and_missing_python(device, tmp_path, monkeypatch):
    url, root, log = device
    model, _ = _onnx(tmp_path)
    with pytest.raises(RunnerError, match="/missing/python3 not found on the device"):
        transport_for(url.replace(f"python={sys.executable}", "python=/missing/python3")).run(
            model, runs=1, warmup=0, threads=1, batch=1)
    assert list((root / "data/local/tmp").iterdir()) == []
    monkeypatch.setenv("FAKE_ADB_OFFLINE", "1")
    with pytest.raises(RunnerError, match="device not connected"):
        transport_for(url).run(model, runs=1, warmup=0, threads=1, batch=1)


def test_fleet_profiles_every_device_side_by_side(cli, device, tmp_path, monkeypatch):
    url, _, _ = device
    monkeypatch.setenv("FAKE_ADB_SERIALS", "EMULATOR42")  # NOPE is not connected
    model, _ = _onnx(tmp_path)
    fleet = tmp_path / "targets.yaml"
    fleet.write_text(f'devices:\n  - {{name: phone, target: "{url}", threads: 1}}\n'
                     "  - {name: here, target: local, threads: 2, batch: 2}\n"
                     '  - {name: gone, target: "adb://NOPE"}\n')
    result = cli("profile", model, "--runs", "3", "--warmup", "0", "--targets", fleet)
    assert result.exit_code == 0, result.output
    table, rest = result.stdout.split("\n[", 1)
    rows = json.loads("[" + rest)
    assert [r["name"] for r in rows] == ["phone", "here", "gone"]
    assert rows[0]["where_run"] == "EMULATOR42 (adb)" and rows[1]["batch"] == 2 and "device not connected" in rows[2]["error"]
    assert "| phone |" in table and "not run" in table
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices:\n  - {name: a, target: local, thread: 2}\n")
    result = cli("profile", model, "--targets", bad)
    assert result.exit_code == 2 and "unknown key 'thread'" in result.output
