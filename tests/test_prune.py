"""kind: prune — structural DIMAP on every supported family, weight-level variants, rebuild."""
import json

import pytest
import torch

from conftest import TINY_SWIN, write_images
from edgevit.errors import EdgevitError, RecipeError
from edgevit.flops import count_flops
from edgevit.models import load_model, load_model_folder, save_model_folder
from edgevit.passes.base import PassContext
from edgevit.passes.prune import PruneConfig, PrunePass
from edgevit.passes.pruning_scores import dimap_importance, structure_dimap
from edgevit.recipe import load_recipe

FAMILY = {
    "vit": ("test_vit", {}),
    "deit3-layerscale-qknorm": ("vit_small_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2,
                                                         "num_heads": 4, "init_values": 1e-5, "qk_norm": True}),
    "swin": TINY_SWIN,
    "swinv2": ("swinv2_tiny_window8_256", {"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": [1, 1],
                                           "num_heads": [2, 4], "window_size": 4}),
}


def _ctx(model_input):
    return PassContext(seed=0, input_size=model_input)


@pytest.mark.parametrize("family", FAMILY)
def test_structural_prune_hits_target_and_rebuilds(family, tmp_path):
    name, args = FAMILY[family]
    loaded = load_model(name, model_args=args)
    size = loaded.input_size
    x = torch.randn(2, *size)
    model, record = PrunePass().apply(loaded.model, PruneConfig(flops_reduction=0.3), _ctx(size))
    assert record.metrics["flops_reduction"] == pytest.approx(0.3, abs=0.03)
    assert record.metrics["flops_after"] == count_flops(model, size)
    assert all(b["heads"] >= 1 and b["mlp_hidden"] >= 1 for b in record.structure["blocks"])
    assert sum(b["heads"] for b in record.structure["blocks"]) + sum(b["mlp_hidden"] for b in record.structure["blocks"]) < \
        sum(b["heads_before"] + b["mlp_hidden_before"] for b in record.metrics["per_block"])
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    save_model_folder(loaded, model, [record.model_dump()], tmp_path / "m")
    rebuilt = load_model_folder(tmp_path / "m").model
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)


def test_removing_nothing_structural_is_identity():
    """A head/channel sliced to all of itself leaves the function unchanged (slicing is exact)."""
    from edgevit.surgery import prune_heads, prune_mlp

    loaded = load_model(*FAMILY["swin"][:1], model_args=FAMILY["swin"][1])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = loaded.model(x)
        for block in loaded.model.layers[1].blocks:
            prune_heads(block.attn, range(block.attn.num_heads))
            prune_mlp(block.mlp, range(block.mlp.fc1.out_features))
        assert torch.equal(loaded.model(x), before)


def test_pruned_head_removes_its_bias_table_column():
    loaded = load_model(TINY_SWIN[0], model_args=TINY_SWIN[1])
    attn = loaded.model.layers[1].blocks[0].attn
    table = attn.relative_position_bias_table.detach().clone()
    from edgevit.surgery import prune_heads

    prune_heads(attn, [1])
    assert attn.num_heads == 1 and torch.equal(attn.relative_position_bias_table[:, 0], table[:, 1])
    assert attn.qkv.out_features == 3 * 24 and attn.proj.in_features == 24


def test_unreachable_target_and_config_errors():
    loaded = load_model("test_vit")
    with pytest.raises(EdgevitError, match="cannot remove"):
        PrunePass().apply(loaded.model, PruneConfig(flops_reduction=0.9, modules=["attention"]), _ctx(loaded.input_size))
    with pytest.raises(ValueError, match="exactly one"):
        PruneConfig(flops_reduction=0.3, param_reduction=0.3)
    with pytest.raises(ValueError, match="no FLOPs at runtime"):
        PruneConfig(flops_reduction=0.3, structure="unstructured")


def test_recipe_error_for_bad_prune_block(write_recipe):
    with pytest.raises(RecipeError, match=r"passes\[0\].*flops_reduction"):
        load_recipe(write_recipe("name: x\npasses:\n  - kind: prune\n    flops_reduction: 1.5\n"))


def test_weight_level_variants():
    loaded = load_model("test_vit")
    model, record = PrunePass().apply(loaded.model, PruneConfig(param_reduction=0.5, structure="unstructured"), _ctx(loaded.input_size))
    assert record.metrics["sparsity"] == pytest.approx(0.5, abs=0.01) and record.structure == {}
    assert record.metrics["prunable_bytes_zlib"] < record.metrics["prunable_bytes"]
    assert "no runtime here runs it faster" in " ".join(record.notes)
    loaded = load_model("test_vit")
    model, record = PrunePass().apply(loaded.model, PruneConfig(param_reduction=0.5, structure="2:4"), _ctx(loaded.input_size))
    groups = model.blocks[0].mlp.fc1.weight.reshape(-1, 4)
    assert int((groups != 0).sum(1).max()) <= 2 and "TensorRT" in " ".join(record.notes)


def test_dimap_scores():
    w = torch.tensor([[3.0, -4.0], [0.0, 1.0]])
    imp = dimap_importance(w)
    assert imp[0, 1] == 1.0 and imp[0, 0] == pytest.approx(9 / 25) and imp[1, 1] == pytest.approx(1 / 26) and imp[1, 0] == 0
    assert structure_dimap(torch.tensor([1.0, 3.0])).tolist() == pytest.approx([0.25, 1.0])


def test_finetune_recovers_and_keeps_masks(tmp_path):
    train = write_images(tmp_path / "train", classes=("a", "b"), per_class=8, size=32)
    loaded = load_model("test_vit", model_args={"img_size": 32, "patch_size": 8})
    teacher = load_model("test_vit", model_args={"img_size": 32, "patch_size": 8}).model
    teacher.load_state_dict(loaded.model.state_dict())
    ctx = PassContext(seed=0, input_size=loaded.input_size, data_config=loaded.data_config(), teacher=teacher, train_data=train)
    cfg = PruneConfig(param_reduction=0.5, structure="unstructured",
                      finetune={"epochs": 6, "lr": 1e-3, "batch_size": 4, "weight_decay": 0.0})
    model, record = PrunePass().apply(loaded.model, cfg, ctx)
    t = record.training
    assert t["steps"] == 24 and t["stopped_by"] == "epochs" and t["wall_s"] > 0 and t["loss"] == "distill"
    assert t["loss_last"] < t["loss_first"]
    sparsity = float((model.blocks[0].mlp.fc1.weight == 0).float().mean())
    assert sparsity > 0.3  # pruned weights stayed zero through training


@pytest.mark.slow  # CI time: make test-all runs it; test_baseline compresses with prune and checks the smaller file
def test_compress_with_prune_recipe_exports_a_smaller_graph(cli, write_recipe, tmp_path):
    train = write_images(tmp_path / "train", per_class=4, size=32)
    recipe = write_recipe(
        "name: p\nmodel: {name: %s, model_args: %s}\n" % (TINY_SWIN[0], json.dumps(TINY_SWIN[1]))
        + "passes:\n  - kind: prune\n    flops_reduction: 0.3\n    finetune: {epochs: 1, batch_size: 4}\n"
        + "exports: [x86-onnxruntime]\nprofile: {runs: 3, warmup: 1}\n")
    base = write_recipe(recipe.read_text().split("passes:")[0] + "exports: [x86-onnxruntime]\nprofile: {runs: 3, warmup: 1}\n", "base.yaml")
    for r, out in ((recipe, "pruned"), (base, "base")):
        result = cli("compress", "--recipe", r, "--out", tmp_path / out, "--train-data", train)
        assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert report["passes"][0]["kind"] == "prune" and report["artifacts"][0]["check"]["passed"]
    assert report["flops"]["after"] < 0.75 * report["flops"]["before"] and report["training"][0]["steps"] > 0
    size = lambda d: (tmp_path / d / "artifacts/x86-onnxruntime/model.onnx").stat().st_size
    assert size("pruned") < size("base")
