"""kind: evit / kind: tome — identity at zero strength, static shapes, export in both forms."""
import json

import numpy as np
import pytest
import torch

from conftest import TINY_SWIN
from edgevit.errors import EdgevitError, ModelError
from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.exporters.onnx import export_onnx_graph
from edgevit.models import load_model, load_model_folder, save_model_folder
from edgevit.passes.base import PassContext
from edgevit.passes.token_patch import _attend, unpatch
from edgevit.passes.tokens import EvitConfig, EvitPass, TomeConfig, TomePass, evit_locations

VITS = {
    "vit": ("test_vit", {}),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {"img_size": 64, "depth": 4}),
    "deit3-layerscale-qknorm": ("vit_small_patch16_224", {"img_size": 64, "depth": 3, "init_values": 1e-5, "qk_norm": True}),
    "registers-no-cls": ("vit_base_patch16_reg4_gap_256", {"img_size": 64, "depth": 2, "embed_dim": 64, "num_heads": 2}),
}


def _apply(loaded, pass_cls, cfg):
    return pass_cls().apply(loaded.model, cfg, PassContext(seed=0, input_size=loaded.input_size))


@pytest.mark.parametrize("arch", VITS)
def test_zero_strength_is_bit_identical_to_timm(arch):
    loaded = load_model(VITS[arch][0], model_args=VITS[arch][1])
    x = torch.randn(2, *loaded.input_size)
    with torch.no_grad():
        reference = loaded.model(x)
    cases = [(TomePass, TomeConfig(r=0)), (TomePass, TomeConfig(r=[0] * len(loaded.model.blocks)))]
    if loaded.model.cls_token is not None:
        cases.append((EvitPass, EvitConfig(keep_rate=1.0)))
    for pass_cls, cfg in cases:
        model, record = _apply(loaded, pass_cls, cfg)
        assert any(hasattr(m, "edgevit_reduction") for m in model.modules()) or cfg.kind == "tome"
        with torch.no_grad():
            assert torch.equal(model(x), reference), (arch, cfg)
        unpatch(model)


def test_patched_wiring_matches_timm_when_every_block_runs_patched():
    """EViT at every block with keep 1.0 runs the re-wired attention in all blocks."""
    loaded = load_model(*VITS["deit3-layerscale-qknorm"][:1], model_args=VITS["deit3-layerscale-qknorm"][1])
    x = torch.randn(2, *loaded.input_size)
    with torch.no_grad():
        reference = loaded.model(x)
    model, _ = _apply(loaded, EvitPass, EvitConfig(keep_rate=1.0, locations=[1, 2, 3]))
    assert sum(hasattr(m, "edgevit_reduction") for m in model.modules()) == 3
    with torch.no_grad():
        assert torch.equal(model(x), reference)


def test_class_attention_matches_full_attention_row():
    attn = load_model("test_vit").model.blocks[0].attn
    x = torch.randn(2, 17, attn.qkv.in_features)
    _, cls_attn, _ = _attend(attn, x, None, want_cls=True)
    b, n, _ = x.shape
    q, k, _ = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    full = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1)
    torch.testing.assert_close(cls_attn, full[:, 0])


@pytest.mark.parametrize("pass_cls, cfg", [(EvitPass, EvitConfig(keep_rate=0.5)), (TomePass, TomeConfig(r=8))], ids=["evit", "tome"])
def test_static_token_counts_and_flops(pass_cls, cfg):
    loaded = load_model("test_vit")
    model, record = _apply(loaded, pass_cls, cfg)
    tokens = record.metrics["tokens_per_block"]
    assert tokens == sorted(tokens, reverse=True) and tokens[-1] < tokens[0]
    assert 0.2 < record.metrics["flops_reduction"] < 0.8
    seen = []
    hooks = [blk.mlp.register_forward_hook(lambda m, i, o: seen.append(o.shape[1])) for blk in model.blocks]
    with torch.no_grad():
        model(torch.randn(3, *loaded.input_size))
    for h in hooks:
        h.remove()
    assert seen == tokens  # the MLP of each block sees exactly the recorded count


def test_tome_flops_target_and_schedules():
    loaded = load_model("test_vit")
    _, record = _apply(loaded, TomePass, TomeConfig(flops_reduction=0.4))
    assert record.metrics["flops_reduction"] >= 0.4
    loaded = load_model("test_vit")
    _, record = _apply(loaded, TomePass, TomeConfig(r={"r": 6, "inflection": 1.0}))
    assert record.structure["r_per_block"][0] == 0 and record.structure["r_per_block"][-1] == 12
    assert evit_locations(12, None) == [4, 7, 10] and evit_locations(6, None) == [2, 4, 5]
    with pytest.raises(EdgevitError, match="outside"):
        evit_locations(6, [7])
    with pytest.raises(ValueError, match="exactly one"):
        TomeConfig()


def test_tome_at_evit_locations_with_one_r_per_listed_block():
    """`blocks: evit` merges only at EViT's locations scaled to the depth (fewer, larger
    merges: less glue at batch 1); a list r then gives one r per listed block."""
    loaded = load_model("test_vit")
    _, record = _apply(loaded, TomePass, TomeConfig(r=[6, 4, 2], blocks="evit"))
    used = record.structure["r_per_block"]
    where = evit_locations(len(used), None)
    assert [i + 1 for i, r in enumerate(used) if r] == where and [used[b - 1] for b in where] == [6, 4, 2]
    loaded = load_model("test_vit")
    _, record = _apply(loaded, TomePass, TomeConfig(flops_reduction=0.3, blocks="evit"))
    assert record.metrics["flops_reduction"] >= 0.3 and sum(1 for r in record.structure["r_per_block"] if r) == 3
    with pytest.raises(EdgevitError, match="one per entry of `blocks:`"):
        _apply(load_model("test_vit"), TomePass, TomeConfig(r=[1, 2], blocks=[1, 2, 3]))
    with pytest.raises(EdgevitError, match="outside 1.."):
        _apply(load_model("test_vit"), TomePass, TomeConfig(r=2, blocks=[len(used) + 1]))


def test_unsupported_models_fail_clearly():
    swin = load_model(TINY_SWIN[0], model_args=TINY_SWIN[1])
    with pytest.raises(ModelError, match="plain ViT/DeiT"):
        _apply(swin, TomePass, TomeConfig(r=2))
    gap = load_model(VITS["registers-no-cls"][0], model_args=VITS["registers-no-cls"][1])
    with pytest.raises(ModelError, match="class token"):
        _apply(gap, EvitPass, EvitConfig())


# onehot is also exported in the fast set by tests/test_tensorrt.py (merge form vs lint); slow here for CI time
@pytest.mark.parametrize("form", ["scatter", pytest.param("onehot", marks=pytest.mark.slow)])
def test_tome_exports_in_both_forms_with_dynamic_batch(form):
    import onnx
    import onnxruntime as ort

    loaded = load_model("test_vit")
    model, _ = _apply(loaded, TomePass, TomeConfig(r=8))
    x = torch.randn(3, *loaded.input_size)
    path = export_onnx_graph(model, ExportContext(example_input=x), LoweringPlan(opset=18, forms={"tome": form}))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("ScatterElements" in ops) == (form == "scatter")
    session = ort.InferenceSession(str(path))
    for batch in (1, 5):
        xb = torch.randn(batch, *loaded.input_size)
        with torch.no_grad():
            np.testing.assert_allclose(session.run(None, {"input": xb.numpy()})[0], model(xb).numpy(), rtol=1e-3, atol=1e-4)


def test_rebuild_from_record(tmp_path):
    loaded = load_model("test_vit")
    model, record = _apply(loaded, EvitPass, EvitConfig(keep_rate=0.6))
    save_model_folder(loaded, model, [record.model_dump()], tmp_path / "m")
    again = load_model_folder(tmp_path / "m").model
    x = torch.randn(2, *loaded.input_size)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


@pytest.mark.slow  # CI time: make test-all runs both; ToMe / EViT exports are checked in the fast set
@pytest.mark.parametrize("recipe", ["evit_deit", "tome_deit"])
def test_shipped_token_recipes_end_to_end(cli, tmp_path, images, recipe):
    out = tmp_path / recipe
    result = cli("compress", "--recipe", recipe, "--model", "test_vit", "--data", images, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["passes"][0]["kind"] == recipe.split("_")[0] and report["flops"]["after"] < report["flops"]["before"]
    assert all(a["check"]["passed"] for a in report["artifacts"]) and len(report["artifacts"]) == 2
    assert "training-free" in report["passes"][0]["notes"][0]
    for artifact in report["artifacts"]:  # the runtime's own per-op counters, summed by kind of layer
        kinds = artifact["time_by_kind"]["kinds"]
        assert kinds["linear"]["ms"] > 0 and "token glue" in kinds, kinds
    assert "## Where the time goes" in (out / "report.md").read_text()


@pytest.mark.slow  # ~30 s: the form choice is unit-tested (test_capabilities), the onehot lint in test_tensorrt
def test_tensorrt_profile_selects_onehot_merge_and_is_checked_not_timed(cli, write_recipe, tmp_path):
    import onnx

    recipe = write_recipe("name: t\nmodel: {name: test_vit}\npasses: [{kind: tome, r: 8}]\n"
                          "exports: [jetson-orin-tensorrt, x86-onnxruntime]\nprofile: {runs: 3, warmup: 1}\n")
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    trt, ort_artifact = report["artifacts"]
    assert trt["check"]["passed"] and "stand-in" in trt["where_run"] and trt["executed_precision"] == "not run here"
    assert report["profile"]["jetson-orin-tensorrt"]["where_run"] == "not run"
    assert report["profile"]["x86-onnxruntime"]["p50_ms"] > 0
    trt_ops = {n.op_type for n in onnx.load(str(out / trt["path"] / "model.onnx")).graph.node}
    ort_ops = {n.op_type for n in onnx.load(str(out / ort_artifact["path"] / "model.onnx")).graph.node}
    assert "ScatterElements" not in trt_ops and "ScatterElements" in ort_ops
