"""The capability model: runtimes declared as data, passes declaring their needs, and the
cross-check that refuses an impossible recipe x target before any model is loaded."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgevit import capabilities, resources
from edgevit.capabilities import check_recipe_targets, runtimes
from edgevit.errors import RecipeError
from edgevit.lowering import LoweringPlan
from edgevit.passes.specs import pass_impl, pass_specs
from edgevit.profiles import load_profile
from edgevit.recipe import load_recipe, recipe_targets


def test_every_shipped_runtime_and_profile_is_declared_consistently():
    declared = runtimes()
    assert {"onnxruntime", "openvino", "litert", "tensorrt"} <= set(declared)
    for name in resources.names("exporters"):
        profile = load_profile(name)
        caps = declared[profile.runtime]
        assert profile.format in caps.formats and set(profile.precisions) <= set(caps.precisions)
    assert not declared["tensorrt"].runs_here and not declared["tensorrt"].available()
    assert declared["onnxruntime"].available()  # a core dependency: the probe finds it


def test_every_pass_kind_declares_an_importable_implementation():
    for kind, spec in pass_specs().items():
        impl = pass_impl(kind)
        assert impl.kind == kind and impl.config_type is spec.config_type


def _recipe(tmp_path: Path, passes: str, exports: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\npasses:\n{textwrap.indent(passes, '  ')}\nexports: [{exports}]\n")
    return path


EXITS = "- kind: exits\n  count: 2\n"
INT4 = "- kind: quantize\n  method: lrp\n  budget: {avg_weight_bits: 4.5}\n"


@pytest.mark.parametrize("passes, exports, expected", [
    (EXITS, "x86-onnxruntime, android-litert", r"passes\[0\] \(exits\) x export profile 'android-litert': needs cascade"),
    (EXITS, "jetson-orin-tensorrt", r"passes\[0\] \(exits\) x export profile 'jetson-orin-tensorrt': needs cascade"),
    (INT4, "android-litert", r"passes\[0\] \(quantize\) x export profile 'android-litert': int4 is not executed there"),
    ("- kind: quantize\n  method: uniform\n  weights: int4\n", "jetson-orin-tensorrt", "int4 is not executed there"),
    ("- kind: quantize\n  method: uniform\n  weights: int4\n  int4_block: 8\n", "x86-onnxruntime", "int4 block 8"),
])
def test_impossible_combinations_are_refused_before_any_model_loads(tmp_path, passes, exports, expected):
    loaded = load_recipe(_recipe(tmp_path, passes, exports))
    with pytest.raises(RecipeError, match=expected) as err:
        recipe_targets(loaded)
    assert err.value.hint  # every refusal carries the fix


def test_possible_combinations_pass(tmp_path):
    recipe_targets(load_recipe(_recipe(tmp_path, EXITS + INT4, "x86-onnxruntime, x86-openvino")))
    recipe_targets(load_recipe(_recipe(tmp_path, "- kind: tome\n  r: 2\n", "jetson-orin-tensorrt, android-litert")))
    for name in resources.names("recipes"):
        recipe_targets(load_recipe(name))


def test_validate_refuses_in_one_line_without_importing_torch(tmp_path):
    recipe = _recipe(tmp_path, EXITS, "android-litert")
    code = ("import sys\nfrom edgevit.cli import app\n"
            f"try:\n    app(['validate', {str(recipe)!r}])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('torch' in sys.modules, 'timm' in sys.modules, code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False False 2", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "needs cascade" in error_lines[0] and "fix:" in proc.stderr, proc.stderr


def test_tome_export_form_follows_the_runtime(tmp_path):
    """No form in the profile: the first form the runtime executes (scatter); TensorRT 8.5
    has no scatter with reduction, so a profile pinning it gets onehot or is refused."""
    record = {"kind": "tome", "config": {}, "structure": {}}
    plan = LoweringPlan.from_records([record])
    assert plan.for_profile(load_profile("x86-onnxruntime")).forms == {"tome": "scatter"}
    assert plan.for_profile(load_profile("jetson-orin-tensorrt")).forms == {"tome": "onehot"}
    old = tmp_path / "trt85.yaml"
    old.write_text(load_profile("x86-tensorrt").model_dump_json().replace('"10.3"', '"8.5"')
                   .replace('"tome":"onehot"', '"tome":"scatter"'))
    with pytest.raises(RecipeError, match="export form 'scatter' needs scatter_reduce"):
        plan.for_profile(load_profile(str(old)))


def test_plan_resolution_is_pure_and_frozen():
    records = [{"kind": "quantize", "config": {}, "structure": {
        "layer_precision": {"blocks.0.mlp.fc1": "int4", "blocks.0.mlp.fc2": "int8"}, "int4_block": {"blocks.0.mlp.fc1": 32},
        "activations": "int8", "simulated_layers": []}}]
    profile = load_profile("jetson-orin-tensorrt")
    a = LoweringPlan.from_records(records).for_profile(profile)
    assert a == LoweringPlan.from_records(records).for_profile(profile)
    assert a.opset == 21 and a.symmetric_activations and a.summary_precision == "mixed"
    assert LoweringPlan.from_records(records).for_profile(load_profile("x86-onnxruntime")).symmetric_activations is False
    with pytest.raises(AttributeError):
        a.opset = 18  # type: ignore[misc]


def test_a_runtime_declaration_is_checked(tmp_path):
    bad = tmp_path / "toyrt.yaml"
    bad.write_text("name: toyrt\nexporter: edgevit.exporters.onnx:OnnxExporter\nformats: [onnx]\nprecisions: [fp32, int3]\nruns_here: true\n")
    with pytest.raises(RecipeError, match="toyrt.yaml: precisions"):
        capabilities.load_runtime(bad)


def test_a_profile_naming_an_undeclared_runtime_is_refused(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\nformat: onnx\nruntime: onnxruntim\nprecisions: [fp32]\n")
    with pytest.raises(RecipeError, match="unknown 'onnxruntim'.*did you mean 'onnxruntime'"):
        load_profile(str(profile))


def test_shipped_bundle_schema_is_the_typed_model():
    """runtimes/bundle.schema.json is what devices and other tools read: it must be the
    schema of the model every exporter writes through (regenerate it if this fails)."""
    import json

    from edgevit.bundle import bundle_json_schema

    shipped = json.loads((resources.shipped("runtimes") / "bundle.schema.json").read_text())
    assert shipped == json.loads(json.dumps(bundle_json_schema()))


def test_runner_refuses_an_unknown_bundle_schema_version(tmp_path):
    import json

    from edgevit.profiling import runner_module

    (tmp_path / "bundle.json").write_text(json.dumps({"schema_version": 2, "format": "onnx", "model_file": "m.onnx"}))
    runner = runner_module()
    with pytest.raises(runner.RunnerFailure, match="schema_version 2 is not one this runner knows"):
        runner.read_bundle(str(tmp_path))
