"""Issue 16: exits chosen on the target. The one-graph cascade rebuilt with a subset of its
exits (no If, no head for the others), the greedy choice between candidates timed on the
target, and the pass's after-export step through the real device runner."""
import json
import shutil

import numpy as np
import pytest
import torch

from edgevit.cascade import attach_exits, forward_all_exits
from edgevit.exporters.base import ExportContext, LoweringPlan, load_profile
from edgevit.exporters.cascade_graphs import graph_writer_key
from edgevit.exporters.onnx import OnnxExporter
from edgevit.models import load_model
from edgevit.passes.base import ExportedArtifact
from edgevit.passes.exits import ExitsConfig, ExitsPass, head_specs
from edgevit.passes.exits_on_target import KEEP_MARGIN, select_exits_on_target
from edgevit.profiling import LocalTransport, runner_module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """test_vit with two exits (after blocks 1 and 3), exported for ONNX Runtime with the
    one-graph form; the export context keeps the graph writer."""
    loaded = load_model("test_vit")
    model = loaded.model.eval()
    attach_exits(model, head_specs(model, [0, 2], ExitsConfig(), loaded.input_size))
    plan = LoweringPlan(cascade={"rule": "confidence", "thresholds": [0.5, 0.5]}, pass_records=[{"kind": "exits", "structure": {}}])
    ctx = ExportContext(example_input=torch.randn(2, *loaded.input_size))
    bundle = OnnxExporter().export(model, plan, load_profile("x86-onnxruntime"), ctx, tmp_path_factory.mktemp("b") / "bundle")
    return loaded, model, bundle, ctx


def _if_nodes(path) -> int:
    import onnx

    def count(graph):
        return sum(1 + sum(count(a.g) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
                   if n.op_type == "If" else 0 for n in graph.node)
    return count(onnx.load(str(path)).graph)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_graph_without_an_exit_runs_straight_through_it(exported, runtime, tmp_path, one_graph_run):
    loaded, model, bundle, ctx = exported
    folder = tmp_path / "copy"
    shutil.copytree(bundle.path, folder)
    from edgevit.exporters.cascade_graphs import conditional_cascade_graph

    stages = sorted(p for p in ctx.workdir.rglob("stage*.onnx") if "lowered" not in str(p))[:3]
    graph = conditional_cascade_graph(stages, "confidence", folder / "only_exit1.onnx", exits=[1])
    assert _if_nodes(graph) == 1
    import onnx

    names = {o for n in onnx.load(str(graph)).graph.node for o in n.output}
    assert "exit0_logits" not in names  # exit 0's head is not computed at all
    x = np.random.default_rng(4).standard_normal((1, *loaded.input_size)).astype(np.float32)
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in forward_all_exits(model, torch.from_numpy(x)).items()}
    run = one_graph_run(graph, runtime, x)
    inf = np.inf
    # exit 0 forced open: it is not in the graph, so the sample goes on; exit 1 still leaves
    for thresholds, index, name in [([-inf, inf], 2, "logits"), ([inf, -inf], 1, "exit1_logits"), ([-inf, -inf], 1, "exit1_logits")]:
        logits, taken = run(np.array(thresholds, np.float32))
        assert int(taken) == index
        np.testing.assert_allclose(logits, reference[name], rtol=1e-3, atol=1e-4)


def _fake_target(folder, speedups):
    """Times the bundle as it is now: the speed-up of the exits its graph has."""
    def time_cascade():
        exits = tuple(json.loads((folder / "bundle.json").read_text())["cascade"]["graph"]["exits"])
        return {"speedup_mean": speedups[exits], "exit_rates": []}
    return time_cascade


def _held_out(n=2000, seed=0):
    """Exit 0 sure and right on half the samples, exit 1 on most of the rest."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    sure0, sure1 = rng.random(n) < 0.5, rng.random(n) < 0.8

    def logits(sure):
        z = rng.normal(0, 0.1, (n, 10))
        z[np.arange(n), labels] += np.where(sure, 8.0, 0.05)
        return z
    return [logits(sure0), logits(sure1)], logits(np.ones(n, bool)), labels


@pytest.mark.parametrize("speedups,kept", [({(0, 1): 1.30, (0,): 1.40, (1,): 1.10}, [0]),   # exit 1 costs more than it saves
                                           ({(0, 1): 1.50, (0,): 1.40, (1,): 1.20}, [0, 1]),  # both pay
                                           ({(0, 1): 1.40, (0,): 1.395, (1,): 1.10}, [0])])   # within the margin: fewer
def test_an_exit_stays_only_if_the_target_runs_faster_with_it(exported, tmp_path, speedups, kept):
    _, _, bundle, ctx = exported
    folder = tmp_path / "copy"
    shutil.copytree(bundle.path, folder)
    writer = ctx.cache[graph_writer_key(bundle.path)]
    written = []

    def write_graph(exits):  # the real writer, into the copy
        written.append(list(exits))
        names = writer(exits)
        for name in names:
            shutil.copy2(bundle.path / name, folder / name)
        return names

    exit_logits, final, labels = _held_out()
    result = select_exits_on_target(folder, write_graph, _fake_target(folder, speedups), exit_logits, final, labels,
                                    "confidence", 1.0, lambda exits: np.arange(1, len(exits) + 2, dtype=float))
    assert result["chosen"]["exits"] == kept and result["keep_margin"] == KEEP_MARGIN
    assert [t["exits"] for t in result["tried"]] == [[0, 1], [1], [0]]  # all, then each one left out
    data = json.loads((folder / "bundle.json").read_text())
    assert data["cascade"]["graph"]["exits"] == kept and written[-1] == kept  # the bundle holds the choice
    thresholds = [s["threshold"] for s in data["cascade"]["stages"]]
    assert [t is not None for t in thresholds[:2]] == [e in kept for e in (0, 1)] and thresholds[2] is None
    assert _if_nodes(folder / data["cascade"]["graph"]["file"]) == len(kept)
    for t in result["tried"]:  # every candidate keeps the budget on the held-out images
        assert t["holdout_top1"] >= t["holdout_top1_full"] - 0.01 - 1e-9


def test_after_export_chooses_exits_through_the_device_runner(exported, tmp_path):
    """The pass's after-export step with the real runner: candidates timed, bundle.json
    and the graph left consistent, and the runner runs what was chosen."""
    loaded, model, bundle, ctx = exported
    folder = tmp_path / "bundle"
    shutil.copytree(bundle.path, folder)
    writer = ctx.cache[graph_writer_key(bundle.path)]

    def write_graph(exits):
        names = writer(exits)
        for name in names:
            shutil.copy2(bundle.path / name, folder / name)
        return names

    rng = np.random.default_rng(5)
    images = rng.standard_normal((24, *loaded.input_size)).astype(np.float32)
    labels = rng.integers(0, loaded.model.num_classes, 24)
    artifact = ExportedArtifact(folder, False, LocalTransport(), 1, 1, None, {}, None,
                                {"exits_holdout": (images, labels)}, write_graph)
    record = {"structure": {"heads": [{}, {}], "rule": "confidence", "thresholds": [0.5, 0.5]},
              "config": {"max_accuracy_drop": 50.0, "if_slower": "keep"},
              "metrics": {"cost_ms": {"stage_ms": [1.0, 1.0, 1.0], "head_ms": [0.1, 0.1]},
                          "exit_selection": {"kept": [0, 1]}, "exit_blocks_1based": [1, 3]}}
    added = ExitsPass().after_export(record, artifact)
    chosen = added["exit_selection_on_target"]
    assert len(chosen["tried"]) >= 3 and sorted(chosen["kept_blocks_1based"] + chosen["dropped_blocks_1based"]) == [1, 3]
    assert added["cascade_gate"]["speedup_mean"] == next(t["speedup_mean"] for t in chosen["tried"]
                                                         if t["blocks_1based"] == chosen["kept_blocks_1based"])
    data = json.loads((folder / "bundle.json").read_text())
    assert [b for b, e in zip([1, 3], (0, 1)) if e in data["cascade"]["graph"]["exits"]] == chosen["kept_blocks_1based"]
    reference = set(data["reference_model"]["files"])
    assert added["size_bytes"] == sum((folder / f).stat().st_size for f in data["files"] if f not in reference)
    session = runner_module().open_artifact(str(folder), 1)
    for i in range(4):  # one image at a time through the rebuilt graph: only the chosen exits are taken
        _, exited, _ = session.classify({"input": images[i:i + 1]})
        assert int(exited[0]) in [*data["cascade"]["graph"]["exits"], 2]


def test_the_report_lists_the_exits_tried_on_the_target():
    from edgevit.report import _cascade_section

    latency = {"mean_ms": 1.0, "p50_ms": 1.0, "p90_ms": 1.2}
    cascade = {"evaluated": True, "images": 10, "data": "test", "artifacts": {"x86-openvino": {
        "accuracy": 0.7, "full_model_accuracy": 0.71, "exit_histogram": [5, 5], "latency": latency,
        "full_model_latency": latency, "speedup_mean": 1.4, "where_run": "here",
        "exits_chosen_on_target": {"kept_blocks_1based": [1], "dropped_blocks_1based": [5],
                                   "tried": [{"blocks_1based": [1, 5], "speedup_mean": 1.33},
                                             {"blocks_1based": [5], "speedup_mean": 0.97},
                                             {"blocks_1based": [1], "speedup_mean": 1.42}]}}}}
    text = "\n".join(_cascade_section(cascade))
    assert "x86-openvino: exits chosen on the target: after blocks [1], left out [5]" in text
    assert "blocks [1, 5]: 1.33x; blocks [5]: 0.97x; blocks [1]: 1.42x" in text
