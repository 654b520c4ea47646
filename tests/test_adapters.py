import pytest
import torch

from conftest import TINY_SWIN, TINY_VIT
from edgevit.adapters import SwinAdapter, VitAdapter, adapter_for, swap_module
from edgevit.errors import ModelError
from edgevit.models import load_model


def test_vit_adapter():
    model = load_model(TINY_VIT[0]).model
    adapter = adapter_for(model)
    assert isinstance(adapter, VitAdapter)
    blocks = adapter.blocks()
    assert len(blocks) == len(model.blocks) and blocks[0].attention is model.blocks[0].attn
    assert adapter.num_prefix_tokens == 1 and adapter.token_grid() == (10, 10)
    assert adapter.summary()["heads_per_block"] == [b.attn.num_heads for b in model.blocks]


def test_swin_adapter():
    model = load_model(TINY_SWIN[0], model_args=TINY_SWIN[1]).model
    adapter = adapter_for(model)
    assert isinstance(adapter, SwinAdapter)
    assert [b.stage for b in adapter.blocks()] == [0, 1]
    assert adapter.token_grid(0) == (16, 16) and adapter.token_grid(1) == (8, 8)
    assert adapter.summary()["heads_per_block"] == [1, 2]


def test_unsupported_family():
    with pytest.raises(ModelError, match="no edgevit adapter"):
        adapter_for(torch.nn.Linear(2, 2))


def test_swap_module_is_reversible():
    model = load_model(TINY_VIT[0]).model
    original = model.blocks[0].mlp
    with swap_module(model, "blocks.0.mlp", torch.nn.Identity()) as old:
        assert old is original and isinstance(model.blocks[0].mlp, torch.nn.Identity)
    assert model.blocks[0].mlp is original
