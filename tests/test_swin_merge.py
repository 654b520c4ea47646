"""kind: swin_merge — identity at zero strength (Swin v1 / v2, shifted and not), static token
counts, exports (ORT, OpenVINO, TensorRT-ready ONNX) matching PyTorch at batch > 1,
rebuild, refusals, and the prune -> swin_merge -> quantize stack."""
import json

import numpy as np
import pytest
import torch

from edgevit.adapters import adapter_for, check_passes_supported
from edgevit.errors import EdgevitError, ModelError
from edgevit.exporters.base import ExportContext, LoweringPlan
from edgevit.exporters.onnx import export_onnx_graph
from edgevit.models import load_model, load_model_folder, save_model_folder
from edgevit.passes.base import PassContext
from edgevit.passes.grid_merge_kernels import cell_join, cell_split, merge_compute_unmerge
from edgevit.passes.swin_merge import GridMerge, SwinMergeConfig, SwinMergePass, uninstall_grid_merge

# two blocks per stage: the second of each is shifted where the grid exceeds the window
SWINS = {
    "v1": ("swin_tiny_patch4_window7_224", {"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": [2, 2, 2],
                                            "num_heads": [1, 2, 2], "window_size": 4, "num_classes": 10}),
    "v2": ("swinv2_tiny_window8_256", {"img_size": 32, "patch_size": 2, "embed_dim": 24, "depths": [2, 2, 2],
                                       "num_heads": [1, 2, 2], "window_size": 4, "num_classes": 10}),
}


def _load(arch):
    loaded = load_model(SWINS[arch][0], model_args=SWINS[arch][1])
    torch.manual_seed(0)
    for name, p in loaded.model.named_parameters():
        if "norm" in name and name.endswith("weight"):  # timm v2 zero-inits norm2 (res-post-norm): the MLP would not count
            p.data.normal_(1.0, 0.2)
    return loaded


def _apply(loaded, **kw):
    return SwinMergePass().apply(loaded.model, SwinMergeConfig(**kw), PassContext(seed=0, input_size=loaded.input_size))


@pytest.mark.parametrize("arch", SWINS)
def test_zero_merge_is_bit_identical_to_timm_in_every_block(arch):
    loaded = _load(arch)
    assert any(any(b.shift_size) for b in loaded.model.layers[0].blocks)  # the shifted path is exercised
    x = torch.randn(2, *loaded.input_size)
    with torch.no_grad():
        reference = loaded.model(x)
    adapter = adapter_for(loaded.model)
    for ref in adapter.blocks():  # the hook installed with r = 0 in every block, shifted and not
        adapter.patch_grid_mlp(ref, GridMerge(*adapter.token_grid(ref.stage), 2, 0))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference)
    uninstall_grid_merge(loaded.model)
    model, record = _apply(loaded, ratio=0.0)
    assert record.structure["blocks"] == []
    with torch.no_grad():
        assert torch.equal(model(x), reference)


@pytest.mark.parametrize("match", ["cell", "grid"])
def test_kernel_merges_only_what_it_says(match):
    x = torch.randn(2, 8 * 6, 5)
    dst, src = cell_split(x, 8, 6, 2)
    assert torch.equal(cell_join(dst, src, 8, 6, 2), x) and dst.shape == (2, 12, 5) and src.shape == (2, 12, 3, 5)
    # cells of identical tokens: merging any of them changes nothing
    flat = cell_join(dst, dst.unsqueeze(2).expand(-1, -1, 3, -1), 8, 6, 2)
    fn = torch.nn.Linear(5, 7)
    with torch.no_grad():
        torch.testing.assert_close(merge_compute_unmerge(flat, fn, 8, 6, 2, 36, match), fn(flat))
        seen = []
        out = merge_compute_unmerge(x, lambda t: seen.append(t.shape[1]) or t, 8, 6, 2, 10, match)
    assert seen == [48 - 10]
    kept = (out == x).all(-1).sum(1)
    assert (kept >= 48 - 10 - 12).all()  # every unmerged source comes back exactly; merged ones take their cell's mean
    with pytest.raises(ValueError, match="do not fit"):
        merge_compute_unmerge(x, fn, 8, 6, 2, 37)


@pytest.mark.parametrize("arch", SWINS)
def test_static_token_counts_flops_and_grid(arch):
    loaded = _load(arch)
    model, record = _apply(loaded, ratio=0.5, stages=[1, 2])
    m = record.metrics
    assert m["mlp_tokens_per_block"] == [128, 128, 32, 32, 16, 16] and m["tokens_per_block"] == [256, 256, 64, 64, 16, 16]
    assert 0.1 < m["flops_reduction"] < 0.5
    seen = []
    hooks = [blk.mlp.fc1.register_forward_hook(lambda mod, i, o: seen.append(i[0].shape[1]))
             for layer in model.layers for blk in layer.blocks]
    with torch.no_grad():
        out = model(torch.randn(3, *loaded.input_size))
    for h in hooks:
        h.remove()
    assert seen == m["mlp_tokens_per_block"] and out.shape == (3, 10)


def test_config_and_family_refusals():
    with pytest.raises(ValueError, match="cell keeps one token"):
        SwinMergeConfig(ratio=0.8)
    SwinMergeConfig(ratio=0.85, stride=3)
    loaded = _load("v1")
    with pytest.raises(EdgevitError, match="not divisible by stride 3"):
        _apply(loaded, ratio=0.5, stride=3, stages=[1])
    with pytest.raises(EdgevitError, match="out of range"):
        _apply(loaded, ratio=0.5, stages=[4])
    vit = load_model("test_vit")
    with pytest.raises(ModelError, match="grid_token_hook") as err:
        check_passes_supported(vit.model, [SwinMergeConfig()])
    assert "Swin" in err.value.hint


@pytest.mark.parametrize("arch, match", [("v1", "cell"), pytest.param("v2", "grid", marks=pytest.mark.slow)])
def test_export_matches_pytorch_without_scatter_at_any_batch(arch, match):
    import onnx
    import onnxruntime as ort
    import openvino as ov

    loaded = _load(arch)
    model, _ = _apply(loaded, ratio=0.75, match=match)
    x = torch.randn(3, *loaded.input_size)
    path = export_onnx_graph(model, ExportContext(example_input=x), LoweringPlan(opset=18))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"ScatterElements", "ScatterND"}  # the one form is TensorRT-ready
    assert "GatherElements" not in ops  # whole rows gathered (take_rows), no index broadcast to every channel
    session = ort.InferenceSession(str(path))
    # f32 hint: on a CPU with AVX-512 BF16, OpenVINO runs an "fp32" model in bf16 by default
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for batch in (1, 4):
        xb = torch.randn(batch, *loaded.input_size)
        with torch.no_grad():
            want = model(xb).numpy()
        np.testing.assert_allclose(session.run(None, {"input": xb.numpy()})[0], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(compiled(xb.numpy())[0], want, rtol=1e-4, atol=1e-4)


def test_rebuild_from_record(tmp_path):
    loaded = _load("v1")
    model, record = _apply(loaded, ratio=0.6)
    save_model_folder(loaded, model, [record.model_dump()], tmp_path / "m")
    again = load_model_folder(tmp_path / "m").model
    assert sum(hasattr(m, "edgevit_grid_merge") for m in again.modules()) == 6
    x = torch.randn(2, *loaded.input_size)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


@pytest.mark.slow
def test_prune_then_merge_then_int8_end_to_end(cli, write_recipe, tmp_path, images):
    name, args = SWINS["v1"]
    recipe = write_recipe(f"name: t\nmodel: {{name: {name}, model_args: {json.dumps(args)}}}\n"
                          "passes: [{kind: prune, method: dimap, flops_reduction: 0.2}, {kind: swin_merge, ratio: 0.5},\n"
                          "         {kind: quantize, method: uniform, weights: int8, activations: int8}]\n"
                          "exports: [x86-onnxruntime, x86-openvino]\nevaluation: {check_batch: 4}\n"
                          "calibration: {n: 8}\nprofile: {runs: 3, warmup: 1}\n")
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--data", images, "--out", out, "--allow-synthetic-calibration")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [p["kind"] for p in report["passes"]] == ["prune", "swin_merge", "quantize"]
    assert all(a["check"]["passed"] for a in report["artifacts"]) and len(report["artifacts"]) == 2


@pytest.mark.slow
def test_bench_section_on_a_tiny_setting(tmp_path):
    from edgevit.bench.context import BenchContext
    from edgevit.bench.swin_tokens import latency_rows

    ctx = BenchContext(shared=tmp_path, work=tmp_path / "work", cap_s=600)
    ctx.work.mkdir()
    results, notes = {}, []
    rows = latency_rows(*SWINS["v1"], {"ratio 0.5": {"ratio": 0.5}}, ctx, results, notes, rounds=2, per_round=2)
    assert len(rows) == 4 and not notes  # 2 variants x 2 runtimes
    assert results["latency"]["mlp_tokens_per_block"]["ratio 0.5"] == [128, 128, 32, 32, 8, 8]


def test_bench_accuracy_rows_report_training_free_and_fine_tuned(tmp_path):
    """The swin_tokens section's top-1 table: each strength training-free and after the short
    fine-tune, on the same images, with the fine-tune's epochs and wall time."""
    from conftest import write_images
    from edgevit.bench.swin_tokens import accuracy_rows

    loaded = _load("v1")
    save_model_folder(loaded, loaded.model, [], tmp_path / "swin")
    test = write_images(tmp_path / "test", per_class=3, size=32)
    train = write_images(tmp_path / "train", per_class=4, size=32, seed=1)
    results = {}
    finetune = {"epochs": 1, "lr": 1e-4, "batch_size": 4, "max_images": 8}
    rows = accuracy_rows(tmp_path / "swin", test, {"ratio 0.5": {"ratio": 0.5}}, None, 0, results, train, finetune)
    assert [r[1] for r in rows] == ["unpatched", "ratio 0.5"] and rows[1][5] != "-" and "ep x 8 img" in rows[1][7]
    acc = results["accuracy"]
    assert set(acc["top1"]) == {"unpatched", "ratio 0.5", "ratio 0.5|fine-tuned"} and acc["n"] == 6
    assert acc["training"]["ratio 0.5"]["steps"] == 2 and acc["finetune"] == finetune
    free = accuracy_rows(tmp_path / "swin", test, {"ratio 0.5": {"ratio": 0.5}}, None, 0, {}, None, finetune)
    assert free[1][5] == "-" and free[1][7] == "-"  # no training images: training-free only
