"""edgevit embed: the C array compiles and gives back the exact bytes; output is deterministic."""
import hashlib
import json
import shutil
import subprocess

import pytest

from edgevit.embed import embed
from edgevit.errors import EdgevitError

MAIN_C = r"""
#include <stdio.h>
#include <stdint.h>
#include "g_model.h"
int main(int argc, char **argv) {
  if ((uintptr_t)g_model % G_MODEL_ALIGNMENT != 0) return 3;
  FILE *f = fopen(argv[1], "wb");
  if (!f) return 2;
  fwrite(g_model, 1, g_model_len, f);
  fclose(f);
  printf("%s\n", G_MODEL_SHA256);
  return 0;
}
"""


@pytest.fixture
def blob(tmp_path):
    data = bytes(range(256)) * 40 + b"\x00\xff tail"  # not a multiple of 12 or 16
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    return path


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
@pytest.mark.parametrize("align", [16, 64])
def test_c_array_compiles_and_round_trips(blob, tmp_path, align):
    out = embed(blob, tmp_path / "fw", symbol="g_model", fmt="c", align=align)
    (out / "main.c").write_text(MAIN_C)
    exe = tmp_path / "roundtrip"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-O1", "-o", str(exe), str(out / "main.c"), str(out / "g_model.c")],
                   check=True, capture_output=True)
    proc = subprocess.run([str(exe), str(tmp_path / "back.bin")], capture_output=True, text=True)
    assert proc.returncode == 0
    assert (tmp_path / "back.bin").read_bytes() == blob.read_bytes()
    assert proc.stdout.strip() == hashlib.sha256(blob.read_bytes()).hexdigest()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_sha256"] == proc.stdout.strip() and manifest["alignment"] == align


def test_deterministic_and_bin_format(blob, tmp_path):
    a, b = embed(blob, tmp_path / "a"), embed(blob, tmp_path / "b")
    for name in ("g_model.c", "g_model.h", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    raw = embed(blob, tmp_path / "raw", symbol="net", fmt="bin")
    assert (raw / "net.bin").read_bytes() == blob.read_bytes()
    header = (raw / "net.h").read_text()
    assert "_binary_net_bin_start" in header and f"NET_LEN {blob.stat().st_size}u" in header


def test_bad_arguments(blob, tmp_path):
    for kwargs, message in [({"symbol": "1bad"}, "not a C identifier"), ({"align": 12}, "power of two"),
                            ({"fmt": "hex"}, "unknown")]:
        with pytest.raises(EdgevitError, match=message):
            embed(blob, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
    with pytest.raises(EdgevitError, match="not found"):
        embed(tmp_path / "missing.onnx", tmp_path / "y")


def test_cli_embeds_a_bundle_file(cli, blob, tmp_path):
    result = cli("embed", blob, "--out", tmp_path / "fw", "--symbol", "g_vit")
    assert result.exit_code == 0 and "g_vit.c" in result.stdout
