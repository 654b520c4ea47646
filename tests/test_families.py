"""timm ViT classes beyond ViT/DeiT and Swin v1, end to end: what needs no family knowledge
(uniform int8 on Linear layers, ONNX export, the numerical check) runs on all of them, and
a pass a family cannot take is refused by name before any pass runs."""
import json

import pytest

TINY = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 48, "num_heads": 3, "num_classes": 10}
FAMILIES = {
    "swinv2": ("swinv2_tiny_window8_256", {"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": [1, 1],
                                           "num_heads": [2, 4], "window_size": 4, "num_classes": 10}),
    "vit_relpos": ("vit_relpos_small_patch16_224", TINY),
    "eva02": ("eva02_tiny_patch14_224", {**TINY, "ref_feat_shape": (8, 8)}),
    "generic-beit": ("beit_base_patch16_224", TINY),  # no adapter for timm's Beit: the generic fallback
}
# Linear layers the lowering cannot address (kept fp32 by the plan, said in the record), and
# layers applied with F.linear by their parent that it does address (quantized)
NOT_LOWERABLE = {
    "swinv2": {"layers.0.blocks.0.attn.cpb_mlp.0": "constants", "layers.1.blocks.0.attn.cpb_mlp.2": "constants"},
    "vit_relpos": {"blocks.0.attn.rel_pos.mlp.fc1": "constants"},
    "eva02": {},
    "generic-beit": {},
}
FUNCTIONAL = {"swinv2": ["layers.0.blocks.0.attn.qkv"], "eva02": ["blocks.1.attn.qkv"]}


def _compress(cli, write_recipe, tmp_path, family, passes):
    name, args = FAMILIES[family]
    recipe = write_recipe(f"name: f\nmodel: {{name: {name}, model_args: {json.dumps(args)}}}\npasses: {passes}\n"
                          "exports: [x86-onnxruntime]\nevaluation: {check_batch: 8}\nprofile: {runs: 2, warmup: 1}\n")
    return cli("compress", "--recipe", recipe, "--out", tmp_path / "run")


# vit_relpos, eva02 and swinv2 also run in `make test-all`: the fast suite keeps the generic
# fallback, and Swin v1 runs in test_cli (CI time)
@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in ("vit_relpos", "eva02", "swinv2") else f
                                    for f in FAMILIES])
def test_uniform_int8_exports_and_checks(cli, write_recipe, tmp_path, family):
    result = _compress(cli, write_recipe, tmp_path, family, "[{kind: quantize, method: uniform, weights: int8}]")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    q = report["passes"][0]
    precision = q["structure"]["layer_precision"]
    skipped = q["metrics"].get("kept_fp32_not_lowerable", {})
    for layer, why in NOT_LOWERABLE[family].items():
        assert layer not in precision and why in skipped[layer], (layer, skipped)
    assert precision and set(precision.values()) == {"int8"}
    assert all(layer in precision for layer in FUNCTIONAL.get(family, []))
    artifact = report["artifacts"][0]
    assert artifact["check"]["passed"] and "int8" in artifact["executed_precision"], artifact
    assert any("RepQ skipped" in n for n in q["notes"]) == family.startswith("generic")  # no norm->Linear pairs known


@pytest.mark.parametrize("family, passes, capability", [
    ("eva02", "[{kind: tome, r: 2}]", "token_hook"),
    ("swinv2", "[{kind: evit}]", "token_hook"),
    ("eva02", "[{kind: prune, flops_reduction: 0.2}]", "mlp_surgery"),
    ("generic-beit", "[{kind: quantize, method: uniform}, {kind: prune, param_reduction: 0.2, structure: unstructured}]",
     "block_linears"),
])
def test_a_pass_the_family_cannot_take_is_refused_before_any_pass(cli, write_recipe, tmp_path, monkeypatch, family, passes,
                                                                  capability):
    from edgevit.passes.specs import pass_impl, pass_specs

    def ran(*_):
        raise AssertionError("a pass ran before the family check")

    for kind in pass_specs():
        monkeypatch.setattr(pass_impl(kind), "apply", ran)
    result = _compress(cli, write_recipe, tmp_path, family, passes)
    assert result.exit_code == 2 and f"lacks capability '{capability}'" in result.output, result.output
    assert not (tmp_path / "run").exists()
