"""Every registered adapter, the same properties (timm tests/test_models.py style): the steps
compose to timm's forward, blocks / heads / MLP widths are reported, a declared capability
works and an undeclared one is refused with a ModelError naming it."""
import pytest
import torch

from conftest import TINY_SWIN, TINY_VIT
from edgevit.adapters import (BLOCK_LINEARS, CAPABILITIES, EXIT_TOKENS, GRID_TOKEN_HOOK, HEAD_SURGERY, MLP_SURGERY, REPQ_PAIRS, STAGES,
                              TOKEN_HOOK, GenericTimmAdapter, SwinAdapter, VitAdapter, adapter_for, check_passes_supported,
                              registered_adapters, resolve_class, swap_module)
from edgevit.errors import ModelError
from edgevit.models import load_model
from edgevit.passes.base import PassContext

TINY = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 3, "num_classes": 10}
# Tiny members of every registered adapter (and variants of the same blocks); random weights
MODELS = {
    "vit": TINY_VIT,
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {**TINY, "embed_dim": 48}),
    "vit-reg-gap": ("vit_base_patch16_reg4_gap_256", TINY),
    "deit3-layerscale-qknorm": ("vit_small_patch16_224", {**TINY, "init_values": 1e-5, "qk_norm": True}),
    "swin": TINY_SWIN,
    "swinv2": ("swinv2_tiny_window8_256", {"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": [1, 1],
                                           "num_heads": [2, 4], "window_size": 4, "num_classes": 10}),
    "vit_relpos": ("vit_relpos_small_patch16_224", TINY),
    "vit_srelpos-shared": ("vit_srelpos_small_patch16_224", TINY),
    "eva02-swiglu-rope": ("eva02_tiny_patch14_224", {**TINY, "ref_feat_shape": (8, 8)}),
    "eva-mlp": ("eva02_tiny_patch14_224", {**TINY, "ref_feat_shape": (8, 8), "swiglu_mlp": False, "qkv_fused": False}),
}


def _load(key):
    name, args = MODELS[key]
    loaded = load_model(name, model_args=args)
    return loaded, adapter_for(loaded.model)


def test_every_registered_adapter_has_a_tiny_model_here():
    covered = {type(adapter_for(load_model(n, model_args=a).model)) for n, a in MODELS.values()}
    assert set(registered_adapters().values()) <= covered


def test_registry_resolves_timm_classes_and_the_most_specific_wins():
    for path, adapter in registered_adapters().items():
        assert isinstance(resolve_class(path), type), path
    distilled, _ = _load("deit-distilled")  # VisionTransformerDistilled subclasses VisionTransformer
    assert type(distilled.model).__name__ == "VisionTransformerDistilled" and isinstance(adapter_for(distilled.model), VitAdapter)
    from edgevit.adapters import SwinV2Adapter

    assert type(_load("swinv2")[1]) is SwinV2Adapter and type(_load("swin")[1]) is SwinAdapter


@pytest.mark.parametrize("key", MODELS)
def test_steps_compose_to_the_timm_forward(key):
    loaded, adapter = _load(key)
    x = torch.randn(2, *loaded.input_size)
    if not adapter.has(STAGES):
        with pytest.raises(ModelError, match=f"lacks capability '{STAGES}'"):
            adapter.stem(x)
        return
    with torch.no_grad():
        h = adapter.stem(x)
        for i in range(len(adapter.blocks())):
            h = adapter.run_block(i, h)
        assert torch.allclose(adapter.finish(h), loaded.model(x), atol=1e-5)
        assert adapter.pre_logits(h).shape[-1] == loaded.model.num_features


@pytest.mark.parametrize("key", MODELS)
def test_blocks_heads_and_mlp_widths_are_reported(key):
    loaded, adapter = _load(key)
    summary = adapter.summary()
    blocks = adapter.blocks()
    assert summary["blocks"] == len(blocks) == sum(1 for n, _ in loaded.model.named_modules() if n in {b.name for b in blocks})
    assert summary["heads_per_block"] == [b.module.attn.num_heads for b in blocks]
    assert summary["mlp_hidden_per_block"] == [b.module.mlp.fc2.in_features for b in blocks]
    assert summary["token_grid"] == list(adapter.token_grid(0)) and summary["num_prefix_tokens"] == adapter.num_prefix_tokens


def _exercise(capability, loaded, adapter):
    """Use a declared capability the way its pass does; fails if the declaration is false."""
    x = torch.randn(2, *loaded.input_size)
    model = loaded.model
    blocks = adapter.blocks()
    if capability == HEAD_SURGERY:
        ref = next(b for b in blocks if adapter.can_prune_heads(b) and adapter.heads(b) > 1)
        layout = adapter.head_layout(ref)
        assert layout.qkv.out_features == 3 * layout.num_heads * layout.head_dim
        adapter.prune_heads(ref, [0])
        assert adapter.heads(ref) == 1
    elif capability == MLP_SURGERY:
        fc1, fc2 = adapter.mlp_weights(blocks[0])
        assert fc1.shape[0] == fc2.shape[1] == adapter.mlp_hidden(blocks[0])
        adapter.prune_mlp(blocks[0], list(range(8)))
        assert adapter.mlp_hidden(blocks[0]) == 8
    elif capability == BLOCK_LINEARS:
        owned = {id(m) for m in model.modules()}
        linears = adapter.attention_linears(blocks[0]) + adapter.mlp_linears(blocks[0])
        assert all(isinstance(l, torch.nn.Linear) and id(l) in owned for l in linears)
    elif capability == TOKEN_HOOK:
        from edgevit.passes.tokens import TomeConfig, TomePass

        model, record = TomePass().apply(model, TomeConfig(r=2), PassContext(seed=0, input_size=loaded.input_size))
        assert record.metrics["flops_reduction"] > 0
    elif capability == GRID_TOKEN_HOOK:
        from edgevit.passes.swin_merge import SwinMergeConfig, SwinMergePass

        model, record = SwinMergePass().apply(model, SwinMergeConfig(ratio=0.5), PassContext(seed=0, input_size=loaded.input_size))
        assert record.metrics["flops_reduction"] > 0
    elif capability in (STAGES, EXIT_TOKENS):
        from edgevit.passes.exits import ExitsConfig, head_specs

        spec = head_specs(model, [0], ExitsConfig(head="linear"), loaded.input_size)[0]
        h, w = adapter.token_grid(blocks[0].stage)
        assert spec.tokens == adapter.exit_prefix + h * w
    elif capability == REPQ_PAIRS:
        from edgevit.passes.repq import reparameterize

        with torch.no_grad():
            before = model(x)
        assert reparameterize(model, x, strength=1.0)
        with torch.no_grad():
            torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
        return
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()


# the pass config that needs each capability (its spec's adapter_needs)
NEEDS = {
    HEAD_SURGERY: ("prune", {"flops_reduction": 0.2, "modules": ["attention"]}),
    MLP_SURGERY: ("prune", {"flops_reduction": 0.2}),
    BLOCK_LINEARS: ("prune", {"param_reduction": 0.2, "structure": "unstructured"}),
    TOKEN_HOOK: ("tome", {"r": 2}),
    GRID_TOKEN_HOOK: ("swin_merge", {"ratio": 0.5}),
    STAGES: ("exits", {}),
    EXIT_TOKENS: ("exits", {}),
}


@pytest.mark.parametrize("capability", sorted(CAPABILITIES))
@pytest.mark.parametrize("key", MODELS)
def test_capabilities_are_honoured(key, capability):
    loaded, adapter = _load(key)
    if adapter.has(capability):
        _exercise(capability, loaded, adapter)
        return
    if capability in NEEDS:
        from edgevit.passes.specs import pass_spec

        kind, fields = NEEDS[capability]
        cfg = pass_spec(kind).config_type(**fields)
        needs = pass_spec(kind).adapter_needs(cfg)
        assert capability in needs
        first_missing = min(c for c in needs if not adapter.has(c))  # the refusal names the first one missing
        with pytest.raises(ModelError, match=rf"passes\[0\] \({kind}\).*lacks capability '{first_missing}'"):
            check_passes_supported(loaded.model, [cfg])
    else:  # RepQ is optional: quantize skips it with a note
        with pytest.raises(ModelError, match=f"lacks capability '{capability}'"):
            adapter.repq_pairs()


def test_generic_fallback_for_any_timm_model_and_refusal_for_others():
    model = load_model("test_convnext").model
    adapter = adapter_for(model)
    assert isinstance(adapter, GenericTimmAdapter) and not adapter.capabilities
    assert adapter.summary()["family"] == "generic"
    check_passes_supported(model, [("quantize", None)])  # needs no family knowledge
    with pytest.raises(ModelError, match="no edgevit adapter"):
        adapter_for(torch.nn.Linear(2, 2))


def test_unlowerable_linears_are_known_before_export(tmp_path):
    """What the ONNX lowering cannot address (constant-folded Linear layers) is found by
    running the model and agrees with what the exported graph names; a weight applied with
    F.linear by its parent (Swin v2 qkv with its q/v bias) is addressable."""
    import onnx

    from edgevit.adapters.probe import CONSTANT, unlowerable_linears
    from edgevit.exporters.onnx import export_module
    from edgevit.exporters.quantize_onnx import linear_nodes
    from edgevit.passes.quantize import governed_layers

    loaded, _ = _load("swinv2")
    layers = governed_layers(loaded.model, [])
    reasons = unlowerable_linears(loaded.model, layers, loaded.input_size)
    assert reasons == {n: CONSTANT for n in layers if ".cpb_mlp." in n}
    export_module(loaded.model, (torch.randn(2, *loaded.input_size),), ["input"], ["logits"], tmp_path / "m.onnx", 18)
    found = linear_nodes(onnx.load(str(tmp_path / "m.onnx")))
    assert {n for n in layers if n not in reasons} <= set(found) and "layers.1.blocks.0.attn.qkv" in found
    assert "layers.0.blocks.0.attn.cpb_mlp.0" not in found  # folded away: the plan was right to keep it out


def test_swap_module_is_reversible():
    model = load_model(TINY_VIT[0]).model
    original = model.blocks[0].mlp
    with swap_module(model, "blocks.0.mlp", torch.nn.Identity()) as old:
        assert old is original and isinstance(model.blocks[0].mlp, torch.nn.Identity)
    assert model.blocks[0].mlp is original
