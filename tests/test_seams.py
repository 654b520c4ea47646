"""The seams, shown with a toy pass and a toy runtime that exist only in the tests: each plugs
in without touching edgevit's spine, and `edgevit compress` runs them end to end.

- toy pass `test-scale-logits`: its declaration (a PassSpec) and its implementation live in
  this module; it is registered for the test's duration.
- toy runtime `onnx_reference` (tests/plugins/runtimes/): a YAML declaring what it executes
  and `session_onnx_reference.py`, the runner session (ONNX's pure-Python reference
  evaluator), found through $EDGEVIT_RUNTIME_PATH, plus its export profile
  (tests/plugins/exporters/toy-onnx-reference.yaml).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch
from torch import nn

from edgevit.passes.base import PassConfig, PassRecord
from edgevit.passes.specs import PassSpec, register_spec, unregister_spec

PLUGINS = Path(__file__).parent / "plugins"


class ScaleLogitsConfig(PassConfig):
    kind: Literal["test-scale-logits"] = "test-scale-logits"
    factor: float = 2.0


class ScaleLogitsSpec(PassSpec):
    kind = "test-scale-logits"
    config_type = ScaleLogitsConfig
    implementation = f"{__name__}:ScaleLogitsPass"
    followers = frozenset()  # nothing may follow it: an order rule the recipe check enforces


class _Scaled(nn.Module):
    def __init__(self, inner: nn.Module, factor: float):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x):
        return self.inner(x) * self.factor


class ScaleLogitsPass:
    """Multiplies the classifier's output: a real (if useless) structural change, replayed
    from its record when the saved model folder is loaded."""

    kind = "test-scale-logits"
    config_type = ScaleLogitsConfig
    requires: ClassVar[frozenset[str]] = frozenset()

    def apply(self, model, cfg, ctx):
        model = self._wrap(model, cfg.factor)
        return model, PassRecord(kind=self.kind, config=cfg.model_dump(), structure={"factor": cfg.factor})

    def rebuild(self, model, record):
        return self._wrap(model, record.structure["factor"])

    @staticmethod
    def _wrap(model, factor):
        model.head = _Scaled(model.head, factor)
        return model


@pytest.fixture
def toy_pass():
    register_spec(ScaleLogitsSpec)
    yield
    unregister_spec(ScaleLogitsSpec.kind)


@pytest.fixture
def toy_runtime(monkeypatch):
    monkeypatch.setenv("EDGEVIT_RUNTIME_PATH", str(PLUGINS / "runtimes"))
    from edgevit.profiling.runner_module import runner_module

    runner_module.cache_clear()
    yield PLUGINS / "exporters" / "toy-onnx-reference.yaml"
    runner_module.cache_clear()


def test_toy_pass_and_toy_runtime_run_end_to_end(cli, write_recipe, toy_pass, toy_runtime, tmp_path):
    recipe = write_recipe(f"name: toy\nmodel: {{name: test_vit, model_args: {{num_classes: 5}}}}\n"
                          f"passes: [{{kind: test-scale-logits, factor: 3}}]\n"
                          f"exports: [{toy_runtime}, x86-onnxruntime]\n"
                          "evaluation: {check_batch: 2}\nprofile: {runs: 2, warmup: 0, threads: 1}\n")
    assert cli("validate", recipe).exit_code == 0
    result = cli("compress", "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    toy = next(a for a in report["artifacts"] if a["runtime"] == "onnx_reference")
    assert toy["check"]["passed"] and toy["executed_precision"] == "fp32" and toy["checked_in"] == "onnx_reference"
    assert report["profile"]["toy-onnx-reference"]["runtime"] == "onnx_reference"
    assert report["passes"][0]["structure"] == {"factor": 3.0}
    from edgevit.models import load_model_folder

    reloaded = load_model_folder(tmp_path / "run" / "model").model  # the record replays the toy pass
    assert isinstance(reloaded.head, _Scaled) and reloaded.head.factor == 3.0


def test_toy_runtime_refuses_what_it_cannot_execute(cli, write_recipe, toy_runtime):
    recipe = write_recipe(f"name: toy\nmodel: {{name: test_vit}}\n"
                          "passes: [{kind: quantize, method: uniform, weights: int8}]\n"
                          f"exports: [{toy_runtime}]\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2 and "int8 is not executed there" in result.output


def test_toy_pass_order_rule_is_enforced(cli, write_recipe, toy_pass):
    recipe = write_recipe("name: toy\nmodel: {name: test_vit}\n"
                          "passes: [{kind: test-scale-logits}, {kind: prune, flops_reduction: 0.2}]\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2 and "prune after test-scale-logits" in result.output


def test_without_the_plugin_path_the_toy_runtime_is_unknown(cli, write_recipe, monkeypatch):
    monkeypatch.delenv("EDGEVIT_RUNTIME_PATH", raising=False)
    result = cli("validate", write_recipe(f"name: toy\nexports: [{PLUGINS / 'exporters' / 'toy-onnx-reference.yaml'}]\n"))
    assert result.exit_code == 2 and "unknown 'onnx_reference'" in result.output


def test_export_forms_never_leak_into_the_model():
    """An exporter's form is set only while it traces; the model keeps its own."""
    from edgevit.exporters.base import export_forms_applied
    from edgevit.lowering import LoweringPlan
    from edgevit.passes.tokens import TomeConfig, TomePass
    from edgevit.passes.base import PassContext
    import timm

    model = timm.create_model("test_vit").eval()
    model, _ = TomePass().apply(model, TomeConfig(r=2), PassContext(seed=0, input_size=(3, 160, 160)))
    forms = lambda: {m.edgevit_reduction.form for m in model.modules() if hasattr(m, "edgevit_reduction")}  # noqa: E731
    assert forms() == {"scatter"}
    with pytest.raises(RuntimeError):
        with export_forms_applied(model, LoweringPlan(forms={"tome": "onehot"})):
            assert forms() == {"onehot"}
            raise RuntimeError("an exporter failing mid-trace")
    assert forms() == {"scatter"}
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        with export_forms_applied(model, LoweringPlan(forms={"tome": "onehot"})):
            onehot = model(x)
        assert torch.allclose(onehot, model(x), atol=1e-5)  # same function, two export forms


def test_exported_graphs_do_not_depend_on_the_install_folder(tmp_path):
    """The exporter writes each node's stack trace, with the absolute paths of edgevit, timm
    and torch; kept, the same model gives other ONNX bytes from another folder."""
    import onnx
    import timm

    import edgevit
    from edgevit.exporters.onnx import export_module

    model = timm.create_model("test_vit").eval()
    export_module(model, (torch.randn(2, 3, 160, 160),), ["input"], ["logits"], tmp_path / "m.onnx", 18)
    text = (tmp_path / "m.onnx").read_bytes()
    assert str(Path(edgevit.__file__).parent).encode() not in text and str(Path(timm.__file__).parent).encode() not in text
    assert any(p.key == "pkg.torch.onnx.name_scopes" for n in onnx.load(str(tmp_path / "m.onnx")).graph.node
               for p in n.metadata_props)  # module scopes stay: the lowering maps layers by them
