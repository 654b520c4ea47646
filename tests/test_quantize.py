"""kind: quantize — LRP relevance, allocation, RepQ, and lowering to real int8/int4 kernels."""
import json

import pytest
import torch

from conftest import TINY_SWIN, TINY_VIT, VIT_C10, needs_shared, write_images
from edgevit.models import load_model
from edgevit.passes.lrp import linear_relevance, lrp_rules
from edgevit.passes.quant_alloc import Layer, allocate, int4_block, quant_error
from edgevit.passes.quantize import QuantizeConfig, governed_layers
from edgevit.passes.repq import reparameterize


def test_lrp_rules_keep_the_forward_and_scores_normalise():
    model = load_model(TINY_SWIN[0], model_args=TINY_SWIN[1]).model
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        with lrp_rules(model):
            torch.testing.assert_close(model(x), reference, rtol=1e-4, atol=1e-5)
    layers = governed_layers(model, [])
    assert "head.fc" not in layers and "layers.0.blocks.0.attn.qkv" in layers
    scores = linear_relevance(model, x, layers)
    assert sum(scores.values()) == pytest.approx(1.0) and all(v > 0 for v in scores.values())
    with torch.no_grad():
        model.layers[1].blocks[0].mlp.fc2.weight.zero_()
    assert linear_relevance(model, x, layers)["layers.1.blocks.0.mlp.fc2"] == 0.0


def test_allocation_respects_budget_and_reports_gap():
    layers = [Layer("a", 100, 0.5, {"int4": 0.01, "int8": 1e-4}), Layer("b", 100, 0.1, {"int4": 0.01, "int8": 1e-4}),
              Layer("c", 200, 0.4, {"int4": 0.02, "int8": 2e-4}), Layer("d", 100, 0.2, {"int8": 1e-4})]  # d: no int4 block
    for bits in (5.0, 6.0, 7.0):
        result = allocate(layers, ["int4", "int8"], bits * 500)
        assert result["avg_bits"] <= bits and result["precision"]["d"] == "int8"
        assert result["optimality_gap"] >= 0 and result["lp_lower_bound"] <= result["objective"]
    assert allocate(layers, ["int4", "int8"], 8 * 500)["precision"] == dict.fromkeys("abcd", "int8")
    three = [Layer(l.name, l.numel, l.score, {**l.errors, "int3": 4 * l.errors.get("int4", 0.04)}) for l in layers]
    assert "int3" in allocate(three, ["int3", "int4", "int8"], 4 * 500)["precision"].values()
    with pytest.raises(ValueError, match="below the cheapest"):
        allocate(layers, ["int4", "int8"], 3 * 500)


def test_int4_blocks_and_errors():
    assert int4_block(384, 32) == 32 and int4_block(48, 32) == 16 and int4_block(635, 32) is None
    w = torch.randn(64, 64)
    assert 0 < quant_error(w, "int8", 32) < quant_error(w, "int4", 32) < 0.05 and quant_error(w, "fp32", 32) == 0


def test_repq_preserves_the_function():
    model = load_model("test_vit").model
    x = torch.randn(6, 3, 160, 160)
    with torch.no_grad():
        before = model(x)
    summary = reparameterize(model, x, strength=1.0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    assert all(v["range_spread_after"] <= v["range_spread_before"] + 1e-6 for v in summary.values())


def test_config_validation():
    with pytest.raises(ValueError, match="needs a budget"):
        QuantizeConfig(method="lrp")
    with pytest.raises(ValueError, match="exactly one"):
        QuantizeConfig(budget={"avg_weight_bits": 4.5, "size_mb": 2})


def _compress(cli, write_recipe, tmp_path, passes: str, model: str = "test_vit", args=None, extra=()):
    recipe = write_recipe(f"name: q\nmodel: {{name: {model}, model_args: {json.dumps(args or {})}}}\npasses: {passes}\n"
                          "exports: [x86-onnxruntime, x86-openvino]\nevaluation: {check_batch: 8}\nprofile: {runs: 3, warmup: 1}\n")
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_uniform_int8_runs_integer_kernels_in_both_runtimes(cli, write_recipe, tmp_path):
    report = _compress(cli, write_recipe, tmp_path, "[{kind: quantize, method: uniform, weights: int8}]")
    for artifact in report["artifacts"]:
        assert artifact["precision"] == "int8" and "int8" in artifact["executed_precision"], artifact
        assert artifact["check"]["passed"] and artifact["check"]["metric"] == "sqnr+agreement"
    assert "synthetic" in " ".join(report["passes"][0]["notes"])  # random weights: noise calibration, said so


@pytest.mark.slow  # CI time: make test-all runs it; make demo runs int4_swin
def test_lrp_mixed_int4_int8_on_swin(cli, write_recipe, tmp_path):
    calib = write_images(tmp_path / "calib", per_class=8, size=32)
    report = _compress(cli, write_recipe, tmp_path, "[{kind: quantize, method: lrp, budget: {avg_weight_bits: 6}}]",
                       model=TINY_SWIN[0], args=TINY_SWIN[1], extra=("--calib-data", calib))
    q = report["passes"][0]
    assert q["metrics"]["avg_weight_bits"] <= 6 and set(q["metrics"]["bits_per_layer"].values()) == {4, 8}
    assert report["calibration"]["source"] == "calib-data"
    for artifact in report["artifacts"]:
        assert artifact["executed_precision"] == "mixed(fp32,int4,int8)", artifact["executed"]
        assert artifact["check"]["passed"]


@needs_shared
def test_real_weights_refuse_synthetic_calibration(cli, write_recipe, tmp_path):
    recipe = write_recipe("name: q\npasses: [{kind: quantize, method: uniform, weights: int8}]\nexports: [x86-onnxruntime]\n")
    out = tmp_path / "run"
    result = cli("compress", "--recipe", recipe, "--model", VIT_C10, "--out", out)
    assert result.exit_code == 2 and "needs real calibration images" in result.output and not out.exists()


def test_precisions_without_kernels_are_simulated_and_reported(cli, write_recipe, tmp_path):
    report = _compress(cli, write_recipe, tmp_path, "[{kind: quantize, method: uniform, weights: int3}]")
    q = report["passes"][0]
    simulated = q["structure"]["simulated_layers"]
    assert simulated and all(q["structure"]["layer_precision"][n] == "int3" for n in simulated)
    # fake-quant weights really sit on a 3-bit grid (7 levels + sign per output channel)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")[simulated[0] + ".weight"]
    assert max(len(torch.unique(row)) for row in weights) <= 8
    assert any(n.startswith("SIMULATED") for n in q["notes"])
    for artifact in report["artifacts"]:
        assert artifact["simulated"] and artifact["simulated_layers"] == simulated and artifact["check"]["passed"]
    assert "(simulated)" in (tmp_path / "run" / "report.md").read_text()


def test_activation_outlier_clipping_changes_the_calibrated_ranges(tmp_path):
    """Percentile calibration really clips: the activation scales it writes are smaller."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgevit.exporters.base import ExportContext, LoweringPlan
    from edgevit.exporters.onnx import export_onnx_graph
    from edgevit.exporters.quantize_onnx import linear_nodes, quantize_graph

    loaded = load_model("test_vit")
    x = torch.randn(16, *loaded.input_size)
    x[0, :, :8, :8] *= 50  # a few outlier pixels
    graph = export_onnx_graph(loaded.model, ExportContext(example_input=x[:2]), LoweringPlan(opset=18))
    plan = dict.fromkeys(linear_nodes(onnx.load(str(graph))), "int8")
    scales = {}
    for label, pct in (("minmax", None), ("clipped", 99.0)):
        out = tmp_path / f"{label}.onnx"
        quantize_graph(graph, out, plan, {}, x.numpy(), clip_percentile=pct)
        m = onnx.load(str(out))
        q_inputs = {n.input[1] for n in m.graph.node if n.op_type == "QuantizeLinear"}
        scales[label] = np.array([float(numpy_helper.to_array(i)) for i in m.graph.initializer if i.name in q_inputs])
    assert scales["clipped"].mean() < scales["minmax"].mean()


def test_lowering_touches_only_the_planned_layers(tmp_path):
    """A layer planned fp32 stays a float MatMul; int4 layers get their own block size."""
    import onnx
    from onnx import helper

    from edgevit.exporters.base import ExportContext, LoweringPlan
    from edgevit.exporters.onnx import export_onnx_graph
    from edgevit.exporters.quantize_onnx import linear_nodes, quantize_graph

    loaded = load_model("test_vit")
    graph = export_onnx_graph(loaded.model, ExportContext(example_input=torch.randn(2, *loaded.input_size)), LoweringPlan(opset=21))
    nodes = linear_nodes(onnx.load(str(graph)))
    names = sorted(nodes)
    plan = {names[0]: "fp32", names[1]: "int4", names[2]: "int4", **{n: "int8" for n in names[3:]}}
    quantize_graph(graph, tmp_path / "q.onnx", plan, {names[1]: 16, names[2]: 32}, torch.randn(8, *loaded.input_size).numpy())
    model = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    assert by_name[nodes[names[0]]].input[1] in inits  # still a float weight initializer
    blocks = {}
    for module in names[1:3]:
        dq = producers[by_name[nodes[module] + "_matmul_Q4"].input[1]]  # the quantizer renames what it converts
        blocks[module] = next(a.i for a in dq.attribute if a.name == "block_size")
        assert helper.tensor_dtype_to_np_dtype(inits[dq.input[0]].data_type).name == "int4"
    assert blocks == {names[1]: 16, names[2]: 32}
    assert not any(n.metadata_props for n in model.graph.node)


def _lowered_tiny(tmp_path, model_name=TINY_VIT[0], model_args=None, **options):
    """A tiny model's fp32 graph lowered with every governed Linear at int8 (the classifier
    excluded, as the quantize pass plans it); returns (onnx model, plan, fp32 graph path)."""
    import onnx

    from edgevit.exporters.base import ExportContext, LoweringPlan
    from edgevit.exporters.onnx import export_onnx_graph
    from edgevit.exporters.quantize_onnx import quantize_graph

    loaded = load_model(model_name, model_args=model_args or {})
    graph = export_onnx_graph(loaded.model, ExportContext(example_input=torch.randn(2, *loaded.input_size)), LoweringPlan(opset=18))
    plan = dict.fromkeys(governed_layers(loaded.model, []), "int8")
    out = tmp_path / "int8.onnx"
    quantize_graph(graph, out, plan, {}, torch.randn(8, *loaded.input_size).numpy(), **options)
    return onnx.load(str(out)), plan, graph


def _graph_maps(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producers, consumers, {i.name: i for i in model.graph.initializer}


def _int8_weight(dq, inits, axis):
    """A weight DequantizeLinear: int8 initializer, zero points all 0, one scale per output channel."""
    from onnx import helper, numpy_helper

    weight, scale, zero = (inits[name] for name in dq.input[:3])
    assert helper.tensor_dtype_to_np_dtype(weight.data_type).name == "int8"
    assert not numpy_helper.to_array(zero).any()  # symmetric
    assert list(numpy_helper.to_array(scale).shape) == [weight.dims[axis]]
    assert next(a.i for a in dq.attribute if a.name == "axis") == axis


def test_int8_lowering_places_qdq_where_the_runtimes_fuse(tmp_path):
    """Q/DQ on the inputs of every planned Linear and of the patch embedding, per-channel
    symmetric int8 weights, no re-quantized layer outputs, the classifier and LayerNorm float."""
    model, plan, _ = _lowered_tiny(tmp_path)
    producers, consumers, inits = _graph_maps(model)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in producers
               and producers[n.input[1]].op_type == "DequantizeLinear" and producers[n.input[1]].input[0] in inits]
    assert len(matmuls) == len(plan)
    for node in matmuls:
        act = producers[node.input[0]]
        assert act.op_type == "DequantizeLinear" and producers[act.input[0]].op_type == "QuantizeLinear"
        _int8_weight(producers[node.input[1]], inits, axis=1)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert producers[conv.input[0]].op_type == "DequantizeLinear"
    _int8_weight(producers[conv.input[1]], inits, axis=0)
    for node in model.graph.node:  # nothing re-quantizes what a quantized layer computes
        if node.op_type in ("MatMul", "Conv", "Gemm"):
            assert not any(c.op_type == "QuantizeLinear" for c in consumers.get(node.output[0], []))
    head = next(n for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and n.input[1] in inits)
    assert inits[head.input[1]].data_type == 1  # the classifier keeps float weights
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert producers[node.input[0]].op_type != "DequantizeLinear"


def test_symmetric_activation_form_has_zero_points_of_zero(tmp_path):
    from onnx import helper, numpy_helper

    model, _, _ = _lowered_tiny(tmp_path, activation_symmetry="symmetric")
    _, _, inits = _graph_maps(model)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers
    for q in quantizers:
        zero = inits[q.input[2]]
        assert helper.tensor_dtype_to_np_dtype(zero.data_type).name == "int8" and not numpy_helper.to_array(zero).any()


@pytest.mark.parametrize("family", [TINY_VIT, pytest.param(TINY_SWIN, marks=pytest.mark.slow)])  # Swin too: make test-all
def test_attention_scores_form_quantizes_both_inputs_of_qk_only(tmp_path, family):
    import onnx

    from edgevit.exporters.quantize_onnx import attention_score_nodes

    model, _, graph = _lowered_tiny(tmp_path, family[0], family[1], attention_scores=True)
    depth = sum(1 for name, _ in load_model(family[0], model_args=family[1]).model.named_modules() if name.endswith(".attn"))
    scores = attention_score_nodes(onnx.load(str(graph), load_external_data=False))
    assert len(scores) == depth
    producers, _, _ = _graph_maps(model)
    by_name = {n.name: n for n in model.graph.node}
    for name in scores:
        assert all(producers[i].op_type == "DequantizeLinear" for i in by_name[name].input)
    for node in model.graph.node:  # A·V: its softmax input stays float
        if node.op_type == "MatMul" and producers.get(node.input[0]) is not None and producers[node.input[0]].op_type == "Softmax":
            assert node.name not in scores


def test_openvino_runs_the_lowered_layers_in_int8(tmp_path):
    """What OpenVINO's CPU plugin makes of the graph: every governed Linear and the patch
    embedding execute as integer kernels, the classifier in float."""
    import openvino as ov

    from edgevit.exporters.quantize_onnx import strip_metadata

    model, plan, _ = _lowered_tiny(tmp_path)
    strip_metadata(model)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
    kinds = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer, precision = info["layerType"].astype(str), info["runtimePrecision"].astype(str)
        if layer in ("FullyConnected", "Convolution"):
            kinds.setdefault(layer, []).append(precision)
    assert kinds["Convolution"] == ["u8"]
    assert sorted(kinds["FullyConnected"]).count("f32") == 1  # the classifier
    assert sum(p in ("u8", "i8") for p in kinds["FullyConnected"]) == len(plan)


def test_mixed_activation_form_centres_only_ranges_around_zero(tmp_path):
    """``int8_activations: mixed``: quantizers whose calibrated range is nearly centred on zero
    get the symmetric uint8 form (zero point 128, step widened by at most the allowed factor,
    both ends still covered); skewed ranges (GELU outputs) keep their asymmetric zero point."""
    from onnx import numpy_helper

    from edgevit.exporters.quantize_onnx import CENTRED_MAX_STEP_GROWTH

    lowered = {}
    for symmetry in ("asymmetric", "mixed"):
        torch.manual_seed(0)  # the same model and calibration images for both forms
        (tmp_path / symmetry).mkdir()
        lowered[symmetry], _, _ = _lowered_tiny(tmp_path / symmetry, activation_symmetry=symmetry)
    asym, mixed = lowered["asymmetric"], lowered["mixed"]

    def quantizers(model):
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.input[0]: (float(inits[n.input[1]]), int(inits[n.input[2]]))
                for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}

    before, after = quantizers(asym), quantizers(mixed)
    assert before.keys() == after.keys()
    centred = [t for t in after if after[t][1] == 128 and before[t][1] != 128]
    kept = [t for t in after if after[t] == before[t]]
    assert centred and kept and len(centred) + len(kept) + sum(before[t][1] == 128 for t in before if t not in kept) == len(after)
    for t in centred:
        (s0, z0), (s1, _) = before[t], after[t]
        low, high = -z0 * s0, (255 - z0) * s0
        assert s0 <= s1 <= CENTRED_MAX_STEP_GROWTH * s0 and -128 * s1 <= low * (1 - 1e-6) and 127 * s1 >= high * (1 - 1e-6)  # float32 scales
    for t in kept:  # what stays asymmetric is skewed: centring would widen its step too much
        s0, z0 = before[t]
        low, high = -z0 * s0, (255 - z0) * s0
        assert max(-low / 128, high / 127) > CENTRED_MAX_STEP_GROWTH * s0 or low >= 0
