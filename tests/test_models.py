import json
import os

import pytest
import torch

from conftest import TINY_SWIN, TINY_VIT, VIT_C10, needs_shared
from edgevit.errors import ModelError
from edgevit.models import load_model, load_model_folder, save_model_folder


def test_timm_name_without_checkpoint_is_random_and_says_so():
    loaded = load_model(*TINY_VIT[:1])
    assert loaded.random_weights and "random" in loaded.weights
    assert loaded.input_size == (3, 160, 160)


def test_unknown_timm_name_suggests():
    with pytest.raises(ModelError, match="not a timm model name.*did you mean 'deit_tiny_patch16_224'"):
        load_model("deit_tiny_patch16_22")


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        load_model(str(tmp_path / "nope") + "/")


def test_folder_roundtrip_gives_identical_outputs(tmp_path):
    loaded = load_model(TINY_SWIN[0], model_args=TINY_SWIN[1])
    save_model_folder(loaded, loaded.model, [], tmp_path / "m")
    again = load_model_folder(tmp_path / "m")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), again.model(x))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == TINY_SWIN[0] and config["edgevit"]["passes"] == []


def test_checkpoint_formats(tmp_path):
    from safetensors.torch import save_file

    ref = load_model(TINY_VIT[0]).model
    state = ref.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "w.pth")
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        expected = ref(x)
        for name in ("w.safetensors", "w.pth"):
            loaded = load_model(TINY_VIT[0], checkpoint=tmp_path / name)
            assert not loaded.random_weights
            assert torch.equal(loaded.model(x), expected)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="weights-only"):
        load_model(TINY_VIT[0], checkpoint=tmp_path / "evil.pth")


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(TINY_VIT[0], checkpoint=tmp_path / "bad.safetensors")
    other = load_model(TINY_VIT[0], model_args={"num_classes": 7}).model
    torch.save(other.state_dict(), tmp_path / "seven.pth")
    with pytest.raises(ModelError, match=r"shape mismatch.*head.*num_classes"):
        load_model(TINY_VIT[0], checkpoint=tmp_path / "seven.pth")
    (tmp_path / "seven.npz").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown checkpoint type"):
        load_model(TINY_VIT[0], checkpoint=tmp_path / "seven.npz")


def test_folder_with_corrupt_weights(tmp_path):
    folder = tmp_path / "m"
    loaded = load_model(TINY_VIT[0])
    save_model_folder(loaded, loaded.model, [], folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="model.safetensors: not a readable safetensors file"):
        load_model(str(folder))
    (folder / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json: missing"):
        load_model(str(folder))


@needs_shared
def test_reference_model_folder_loads_with_its_preprocessing():
    loaded = load_model(str(VIT_C10))
    cfg = loaded.data_config()
    assert cfg["input_size"] == (3, 32, 32) and abs(cfg["mean"][0] - 0.4914) < 1e-4
    assert loaded.label_names[0] == "airplane" and not loaded.random_weights
