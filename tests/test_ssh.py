"""The ssh transport against a real OpenSSH server on 127.0.0.1 (started and stopped here)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.bench.loopback_sshd import available as loopback_sshd_available
from edgevit.bench.loopback_sshd import free_port as _free_port
from edgevit.bench.loopback_sshd import loopback_sshd
from edgevit.errors import EdgevitError, RunnerError
from edgevit.profiling import transport_for

pytestmark = pytest.mark.skipif(not loopback_sshd_available(),
                                reason="needs Debian's openssh-server and root (.ci/run installs it)")


@pytest.fixture(scope="module")
def sshd():
    with loopback_sshd() as url:
        yield url


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    d = tmp_path_factory.mktemp("bundle")
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "W"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), d / "model.onnx")
    (d / "bundle.json").write_text(json.dumps({"schema_version": 1, "format": "onnx", "model_file": "model.onnx", "files": ["model.onnx"],
                                               "session_options": {}}))
    return d, w


def _remote_leftovers() -> set[str]:
    return {p.name for p in Path("/tmp").glob("edgevit.*")}


def test_profiles_and_checks_over_ssh_and_cleans_up(sshd, bundle):
    folder, w = bundle
    before = _remote_leftovers()
    x = np.ones((2, 4), dtype=np.float32)
    result = transport_for(sshd).run(folder, runs=5, warmup=1, threads=1, batch=2, inputs=x)
    np.testing.assert_allclose(result.outputs["logits"], x @ w)
    assert result.data["runs"] == 5 and result.data["p50_ms"] > 0 and result.data["where_run"].endswith("(ssh)")
    assert _remote_leftovers() == before  # the remote work folder is gone


def test_ssh_errors_are_clear(sshd, bundle, tmp_path):
    folder, _ = bundle
    dead = sshd.replace(sshd.split(":")[2].split("?")[0], str(_free_port()))
    with pytest.raises(RunnerError, match="cannot connect"):
        transport_for(dead).run(folder, runs=1, warmup=0, threads=1, batch=1)
    with pytest.raises(RunnerError, match="not found on the device"):
        transport_for(sshd.replace(f"python={sys.executable}", "python=/nonexistent/python3")).run(
            folder, runs=1, warmup=0, threads=1, batch=1)
    with pytest.raises(EdgevitError, match="unknown option"):
        transport_for(sshd + "&colour=blue")
    with pytest.raises(EdgevitError, match="EDGEVIT_SSH_IDENTITY"):  # a key file is never chosen by the URL
        transport_for(sshd + "&identity=/etc/passwd")


def test_cli_profile_over_ssh(cli, sshd, bundle):
    folder, _ = bundle
    result = cli("profile", folder, "--runs", "3", "--warmup", "0", "--threads", "1", "--target", sshd)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["where_run"].endswith("(ssh)")
