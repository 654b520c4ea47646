"""A model with exit heads as one ONNX graph per stage, plus the cascade manifest.

Stage k's graph takes the previous stage's features (stage 0: the image) and returns the
features for stage k+1 and exit k's logits; the last stage returns the final logits. The
manifest in bundle.json names each stage's files, inputs and outputs, the exit rule and
the thresholds, so the device runner can execute the cascade without edgevit.
"""
from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from edgevit.errors import ExportError

from edgevit.cascade import EXIT_OUTPUT, FINAL_OUTPUT, INPUT, cascade_stages, exit_output_name, feature_names, stage_example_inputs
from edgevit.exporters.base import Bundle, ExportContext, LoweringPlan, bundle_data, export_forms_applied, reference_model_entry
from edgevit.exporters.onnx import export_module

STAGE_PREFIX = "model."  # CascadeStage keeps the model as its ``model`` attribute


def cascade_onnx_graphs(model: nn.Module, plan: LoweringPlan, ctx: ExportContext) -> tuple[list[Path], dict[str, Any]]:
    """fp32 stage graphs (exported once per opset and export forms per run) and the
    manifest; ``plan`` is resolved for the target (``LoweringPlan.for_profile``)."""
    key = f"cascade-{plan.graph_key()}"
    if key not in ctx.cache:
        ctx.cache[key] = _export_stages(model, ctx, plan)
    paths, described = ctx.cache[key]
    if plan.quantized:
        paths = _lowered_stages(model, paths, described, plan, ctx)
    # thresholds live in the manifest only (not in the graphs): set per plan
    stages = [{**stage, "threshold": None if stage["exit_output"] is None else plan.cascade["thresholds"][k]}
              for k, stage in enumerate(described)]
    manifest = {"rule": plan.cascade["rule"], "stages": stages,
                "rule_meaning": "confidence: exit if max softmax >= threshold; entropy: exit if softmax entropy <= threshold; "
                                "threshold null: never exit there"}
    return paths, manifest


def _lowered_stages(model: nn.Module, paths: list[Path], described: list[dict], plan: LoweringPlan,
                    ctx: ExportContext) -> list[Path]:
    """Each stage graph with the plan's layers lowered (QDQ int8 / blocked int4); int8
    activations are calibrated on what each stage really receives: the calibration images
    run through the stages before it."""
    key = f"{paths[0]}-lowered-{plan.lowering_key()}"
    if key in ctx.cache:
        return ctx.cache[key]
    import onnx

    from edgevit.exporters.quantize_onnx import linear_nodes, quantize_graph

    feeds: list[dict[str, Any] | None] = [None] * len(paths)
    if any(p == "int8" for p in plan.layer_precision.values()):
        images = ctx.calibration.images(ctx.preprocessing)
        chunks = [stage_example_inputs(cascade_stages(model), c) for c in images.split(16)]
        feeds = [{name: torch.cat([c[k][i] for c in chunks]).numpy() for i, name in enumerate(stage["inputs"])}
                 for k, stage in enumerate(described)]
    lowered, covered = [], set()
    for k, path in enumerate(paths):
        present = linear_nodes(onnx.load(str(path), load_external_data=False), STAGE_PREFIX)
        precision = {m: p for m, p in plan.layer_precision.items() if m in present}
        covered |= set(precision)
        out = path.parent / f"lowered-{len(ctx.cache)}" / path.name
        out.parent.mkdir(exist_ok=True)
        quantize_graph(path, out, precision, {m: b for m, b in plan.int4_block.items() if m in precision}, feeds[k],
                       clip_percentile=plan.activation_clip_percentile, activation_symmetry=plan.activation_symmetry,
                       reduce_weight_range=plan.reduced_weight_range, module_prefix=STAGE_PREFIX)
        lowered.append(out)
    missing = [m for m, p in plan.layer_precision.items() if p in ("int8", "int4") and m not in covered]
    if missing:
        raise ExportError(f"quantized layers found in no cascade stage: {', '.join(missing[:3])}",
                          "a bug in stage splitting: report it with the recipe; meanwhile keep these layers fp32 (keep_fp32)")
    ctx.cache[key] = lowered
    return lowered


def _export_stages(model: nn.Module, ctx: ExportContext, plan: LoweringPlan) -> tuple[list[Path], list[dict]]:
    stages = cascade_stages(model)
    # Batch 2 in the example: torch.export specialises a size-1 dimension to a constant.
    example = ctx.example_input[:1].expand(2, *ctx.example_input.shape[1:]).contiguous()
    inputs = stage_example_inputs(stages, example)
    folder = ctx.scratch("cascade")
    paths, described = [], []
    for k, (stage, x) in enumerate(zip(stages, inputs)):
        last = stage.head is None
        in_names = [INPUT] if k == 0 else feature_names(len(x), k)
        out_names = [FINAL_OUTPUT] if last else [*feature_names(len(inputs[k + 1]), k + 1), EXIT_OUTPUT]
        path = folder / f"stage{k}.onnx"
        with export_forms_applied(model, plan):
            export_module(stage, x, in_names, out_names, path, plan.opset, varargs=True)
        paths.append(path)
        described.append({"inputs": in_names, "outputs": out_names, "exit_output": None if last else EXIT_OUTPUT,
                          "blocks": [stage.start + 1, stage.end], "name": FINAL_OUTPUT if last else exit_output_name(k)})
    return paths, described


def write_cascade_bundle(model: nn.Module, plan: LoweringPlan, profile: Any, ctx: ExportContext, out_dir: Path,
                         convert: Callable[[Path, Path, str], list[str]], options: dict[str, Any]) -> Bundle:
    """A cascade bundle for any runtime that loads ONNX-derived graphs: the stage graphs and
    the reference model (the same network without exits, same precision) are produced once
    per run; ``convert(graph, folder, stem)`` writes one into ``folder`` in the runtime's
    format and returns its file names (the model file first)."""
    from edgevit.exporters.cascade_forms import CascadeForms
    from edgevit.exporters.onnx import lowered_onnx_graph, onnx_io

    paths, manifest = cascade_onnx_graphs(model, plan, ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for path, stage in zip(paths, manifest["stages"]):
        written = convert(path, out_dir, path.stem)
        stage["file"] = written[0]
        files += written
    if plan.forms.get("exits") == "if_graph":  # plus the stages: batches run them, and the check reads every exit there
        graph = conditional_cascade_graph(paths, plan.cascade["rule"], ctx.scratch("cascade-graph") / "cascade.onnx")
        written = convert(graph, out_dir, "cascade")
        manifest["graph"] = {"file": written[0], "thresholds_input": THRESHOLDS_INPUT, "index_output": EXIT_INDEX_OUTPUT,
                             "used_for": "batch 1: the whole cascade in one call, later stages skipped through If"}
        files += written
        ctx.cache[cascade_forms_key(out_dir)] = CascadeForms(list(paths), plan.cascade["rule"], convert,
                                                             ctx.scratch("cascade-forms"))
    reference = convert(lowered_onnx_graph(model, plan, ctx), out_dir, "reference")
    inputs, _ = onnx_io(paths[0])
    outputs = [{"name": s["name"]} for s in manifest["stages"]]
    data = bundle_data(profile, ctx, plan.summary_precision, files[0], files + reference, inputs, outputs, options)
    data["cascade"] = manifest
    data["reference_model"] = reference_model_entry(reference)
    return Bundle(out_dir, data).write()


def cascade_forms_key(bundle_dir: Path) -> str:
    """Where an export context keeps a cascade bundle's ``CascadeForms`` (rewrites it with a
    subset of its exits, as one graph or as chained stages) for as long as the run's
    intermediate graphs exist: exits and form are chosen per target after export, by
    timing the candidates there."""
    return f"cascade-forms:{Path(bundle_dir).resolve()}"


def set_cascade_thresholds(bundle_dir: Path, thresholds: Sequence[float | None]) -> list[float | None]:
    """bundle.json's exit thresholds (null: never exit there) set after export; returns the old ones."""
    path = Path(bundle_dir) / "bundle.json"
    data = json.loads(path.read_text())
    stages = data["cascade"]["stages"]
    before = [s["threshold"] for s in stages[:-1]]
    for stage, t in zip(stages, thresholds):
        stage["threshold"] = t
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return before


def publish_reference(bundle_dir: Path) -> Bundle:
    """The cascade bundle in ``bundle_dir`` turned into a plain bundle of its reference
    model (the same network without exits, same precision): the stage files are removed,
    bundle.json names the reference as the model. For a cascade that is slower than the
    network it was made from."""
    data = json.loads((bundle_dir / "bundle.json").read_text())
    reference = data.pop("reference_model", None)
    if not reference or "cascade" not in data:
        raise ExportError(f"{bundle_dir}: not a cascade bundle with a reference model", "re-export the artifact")
    keep = set(reference["files"])
    for name in data["files"]:
        if name not in keep:
            (bundle_dir / name).unlink(missing_ok=True)
    del data["cascade"]
    data.update(model_file=reference["file"], files=reference["files"], outputs=[{"name": FINAL_OUTPUT}])
    return Bundle(bundle_dir, data).write()


# --- export form "if_graph": the whole cascade as one graph, early return through ONNX If ---

THRESHOLDS_INPUT, EXIT_INDEX_OUTPUT = "exit_thresholds", "exit_index"


def conditional_cascade_graph(paths: list[Path], rule: str, out: Path, exits: Sequence[int] | None = None) -> Path:
    """One ONNX graph for the cascade of stage graphs ``paths``: after stage k its exit's
    score (max softmax, or minus the entropy) is compared with ``exit_thresholds[k]`` (a
    graph input in score units, +inf: never exit) and an ``If`` either returns exit k's
    logits or runs the rest. The runtime executes only the branch taken, so a sample that
    leaves early pays no later block and no host round trip per stage. A batch leaves only
    when all its samples do (batches are what per-stage sessions are for). Outputs: the
    logits and the exit taken. Each stage's weights live in the graph that runs it (stage 0
    in the outer graph, stage k in the branch that continues after exit k-1), not in the
    outer graph read through the enclosing scope: ONNX Runtime pre-packs and fuses only
    weights that are initializers of the graph itself (vit_tiny_c10, the path through every
    stage: MatMul 6.1 -> 5.6 ms, Conv 0.57 -> 0.33 ms per image in its profiler).

    ``exits``: the exits that get an If (default: all). Each If is a graph boundary that
    costs a runtime time whether or not anybody leaves there (OpenVINO: ~0.2 ms), so an exit
    that does not pay on a target is left out of its graph: its stage runs straight on into
    the next, its head is not computed, and ``exit_thresholds`` keeps one entry per exit."""
    import onnx
    from onnx import TensorProto, helper

    models, stage_nodes, stage_initializers, opsets = _renamed_stages(paths, final_name="final_logits")
    n_exits = len(models) - 1
    logits_shape = [d.dim_param or d.dim_value for d in models[-1].graph.output[0].type.tensor_type.shape.dim]
    logits_info = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, logits_shape)  # noqa: E731
    index_info = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, [])  # noqa: E731

    with_if = set(range(n_exits) if exits is None else exits)
    if not with_if <= set(range(n_exits)):
        raise ExportError(f"conditional cascade: exits {sorted(with_if)} outside 0..{n_exits - 1}", "a bug: report it")

    def branch(k: int) -> tuple[list, list[str], list]:
        """Nodes that run stage k onwards, the names of their (logits, exit index), and the
        weights of the stages that run in the same graph as stage k."""
        nodes = list(stage_nodes[k])
        if k == n_exits:
            return nodes + [helper.make_node("Constant", [], [f"index{k}"], value=helper.make_tensor(
                f"index{k}_value", TensorProto.INT64, [], [k]))], ["final_logits", f"index{k}"], stage_initializers[k]
        rest_nodes, (rest_logits, rest_index), rest_weights = branch(k + 1)
        if k not in with_if:  # no boundary here: the next stage follows in the same graph
            return nodes + rest_nodes, [rest_logits, rest_index], stage_initializers[k] + rest_weights
        z = exit_output_name(k)
        nodes += _decision_nodes(k, z, rule)
        leave = helper.make_graph([helper.make_node("Identity", [z], [f"leave{k}_logits"]),
                                   helper.make_node("Constant", [], [f"leave{k}_index"], value=helper.make_tensor(
                                       f"leave{k}_index_value", TensorProto.INT64, [], [k]))],
                                  f"leave_at_{k}", [], [logits_info(f"leave{k}_logits"), index_info(f"leave{k}_index")])
        stay = _graph_of_live_nodes(rest_nodes, rest_weights, f"continue_after_{k}", [],
                                    [logits_info(rest_logits), index_info(rest_index)])
        nodes.append(helper.make_node("If", [f"exit{k}_all_leave"], [f"out{k}_logits", f"out{k}_index"],
                                      name=f"early_exit_{k}", then_branch=leave, else_branch=stay))
        return nodes, [f"out{k}_logits", f"out{k}_index"], stage_initializers[k]

    nodes, (final_logits, final_index), weights = branch(0)
    nodes += [helper.make_node("Identity", [final_logits], [FINAL_OUTPUT]),
              helper.make_node("Identity", [final_index], [EXIT_INDEX_OUTPUT])]
    first = models[0].graph
    graph = _graph_of_live_nodes(nodes, weights, "edgevit_conditional_cascade",
                                 [*first.input, helper.make_tensor_value_info(THRESHOLDS_INPUT, TensorProto.FLOAT, [n_exits])],
                                 [logits_info(FINAL_OUTPUT), index_info(EXIT_INDEX_OUTPUT)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="edgevit")
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model, full_check=False)
    onnx.save(model, str(out))
    return out


def chained_stage_graphs(paths: list[Path], exits: Sequence[int], folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The cascade of stage graphs ``paths`` as one graph per chosen exit plus the last:
    the stages between two chosen exits merged into one graph, the heads of the exits left
    out pruned away. Each is (path, manifest entry without file and threshold): the same
    stages the runner chains, with fewer host round trips and no head nobody reads. Why a
    second batch-1 form beside the one graph: OpenVINO's CPU plugin does not fuse inside If
    bodies (vit_tiny_c10, path through the else branch: 4.36 ms as one graph, 4.00 ms as
    two chained halves)."""
    from onnx import helper

    import onnx

    models, stage_nodes, stage_initializers, opsets = _renamed_stages(paths, final_name=FINAL_OUTPUT)
    n_exits = len(models) - 1
    if sorted(set(exits)) != list(exits) or not set(exits) <= set(range(n_exits)):
        raise ExportError(f"chained stages: exits {list(exits)} are not ascending indices in 0..{n_exits - 1}", "a bug: report it")
    folder.mkdir(parents=True, exist_ok=True)
    out, start = [], 0
    for j, end in enumerate([*exits, n_exits]):
        last = end == n_exits
        last_graph = models[end].graph
        # stage ``end``'s outputs under their names in the renamed nodes: features kept, the
        # exit's logits as exit{end}_logits, the final logits as "logits"
        outputs = []
        for value in last_graph.output:
            info = onnx.ValueInfoProto()
            info.CopyFrom(value)
            if value.name == EXIT_OUTPUT:
                info.name = exit_output_name(end)
            outputs.append(info)
        nodes = [n for k in range(start, end + 1) for n in stage_nodes[k]]
        weights = [w for k in range(start, end + 1) for w in stage_initializers[k]]
        graph = _graph_of_live_nodes(nodes, weights, f"edgevit_stages_{start}_to_{end}", list(models[start].graph.input), outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                                  producer_name="edgevit")
        model.ir_version = models[0].ir_version
        onnx.checker.check_model(model, full_check=False)
        path = folder / f"chain{j}.onnx"
        onnx.save(model, str(path))
        names = [o.name for o in outputs]
        in_names = [i.name for i in models[start].graph.input]
        out.append((path, {"inputs": in_names, "outputs": names, "exit_output": None if last else exit_output_name(end),
                           "name": FINAL_OUTPUT if last else exit_output_name(end), "merged_stages": [start, end]}))
        start = end + 1
    return out


def _renamed_stages(paths: list[Path], final_name: str) -> tuple[list, list[list], list[list], dict[str, int]]:
    """The stage graphs loaded with every value name made unique per stage, so their nodes
    can share one graph: features keep their names (stage k+1 reads what stage k writes),
    exit k's logits become exit{k}_logits and the final logits ``final_name``. Returns the
    models, each stage's nodes and weights, and the opsets they need."""
    import onnx

    models = [onnx.load(str(p)) for p in paths]
    if any(m.functions for m in models):
        raise ExportError("a stage graph has local functions, which cannot be merged with the next stage",
                          "export the cascade as stages (profile export_forms: {exits: stages})")
    opsets: dict[str, int] = {}
    stage_nodes, stage_initializers = [], []
    for k, m in enumerate(models):
        keep = {i.name for i in m.graph.input} | {o.name for o in m.graph.output} - {EXIT_OUTPUT, FINAL_OUTPUT}
        rename = _prefixer(f"s{k}/", keep, {EXIT_OUTPUT: exit_output_name(k), FINAL_OUTPUT: final_name})
        for init in m.graph.initializer:
            init.name = rename(init.name)
        stage_initializers.append(list(m.graph.initializer))
        nodes = []
        for node in m.graph.node:
            _rename_node(node, rename, f"s{k}/")
            nodes.append(node)
        stage_nodes.append(nodes)
        for o in m.opset_import:
            opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    return models, stage_nodes, stage_initializers, opsets


def _graph_of_live_nodes(nodes: list, weights: list, name: str, inputs: list, outputs: list):
    """A graph of the nodes (and weights) its outputs need: the head of an exit left out of
    the graph would otherwise still be computed, its logits read by nobody."""
    from onnx import helper

    needed = {o.name for o in outputs}
    live = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed |= set(node.input) | _names_read_inside(node)
    live.reverse()
    return helper.make_graph(live, name, inputs, outputs, initializer=[w for w in weights if w.name in needed])


def _names_read_inside(node) -> set[str]:
    """Every value name read by the nodes of ``node``'s subgraphs (If branches read the
    enclosing scope); names the branches define themselves are included, harmlessly."""
    from onnx import AttributeProto

    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs) if attr.type == AttributeProto.GRAPHS else []
        for g in graphs:
            for sub in g.node:
                names |= set(sub.input) | _names_read_inside(sub)
    return names


def _prefixer(prefix: str, keep: set[str], special: dict[str, str]):
    def rename(name: str) -> str:
        if not name or name in keep:
            return name
        return special.get(name, prefix + name)
    return rename


def _rename_node(node, rename, prefix: str) -> None:
    """Every value name a node reads or writes renamed, its subgraphs' too."""
    from onnx import AttributeProto

    node.name = prefix + node.name
    for i, name in enumerate(node.input):
        node.input[i] = rename(name)
    for i, name in enumerate(node.output):
        node.output[i] = rename(name)
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs) if attr.type == AttributeProto.GRAPHS else []
        for g in graphs:
            for value in [*g.input, *g.output, *g.value_info]:
                value.name = rename(value.name)
            for init in g.initializer:
                init.name = rename(init.name)
            for sub in g.node:
                _rename_node(sub, rename, prefix)


def _decision_nodes(k: int, logits: str, rule: str) -> list:
    """exit{k}_all_leave (bool scalar): every sample's score >= exit_thresholds[k]."""
    from onnx import TensorProto, helper

    p = f"exit{k}/"
    nodes = [
        helper.make_node("Constant", [], [p + "axes"], value=helper.make_tensor(p + "axes_v", TensorProto.INT64, [1], [-1])),
        helper.make_node("Constant", [], [p + "eps"], value=helper.make_tensor(p + "eps_v", TensorProto.FLOAT, [], [1e-12])),
        helper.make_node("Constant", [], [p + "k"], value=helper.make_tensor(p + "k_v", TensorProto.INT64, [1], [k])),
        helper.make_node("Softmax", [logits], [p + "p"], axis=-1)]
    if rule == "confidence":
        nodes.append(helper.make_node("ReduceMax", [p + "p", p + "axes"], [p + "score"], keepdims=0))
    else:  # minus the entropy: sum p log p (p clipped away from 0 as the runner does)
        nodes += [helper.make_node("Clip", [p + "p", p + "eps"], [p + "pc"]),
                  helper.make_node("Log", [p + "pc"], [p + "logp"]),
                  helper.make_node("Mul", [p + "p", p + "logp"], [p + "plogp"]),
                  helper.make_node("ReduceSum", [p + "plogp", p + "axes"], [p + "score"], keepdims=0)]
    nodes += [
        helper.make_node("Gather", [THRESHOLDS_INPUT, p + "k"], [p + "t"], axis=0),
        helper.make_node("GreaterOrEqual", [p + "score", p + "t"], [p + "leaves"]),
        helper.make_node("Cast", [p + "leaves"], [p + "leaves_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", [p + "leaves_f"], [p + "all_f"], keepdims=0),
        helper.make_node("Cast", [p + "all_f"], [f"exit{k}_all_leave"], to=TensorProto.BOOL),
    ]
    return nodes
