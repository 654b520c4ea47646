from pathlib import Path
from typing import ClassVar, Literal

import pytest

from edgevit import resources
from edgevit.errors import RecipeError
from edgevit.passes.base import PassConfig, PassRecord
from edgevit.passes.specs import PassSpec, register_spec, unregister_spec
from edgevit.recipe import load_recipe


@pytest.mark.parametrize("name", resources.names("recipes"))
def test_every_shipped_recipe_validates(name):
    loaded = load_recipe(name)
    assert loaded.recipe.name == name
    assert len(loaded.sha256) == 64


def test_shipped_recipe_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spelling in ("fp32_baseline", "fp32_baseline.yaml"):
        assert load_recipe(spelling).recipe.name == "fp32_baseline"


def test_unknown_recipe_name_suggests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="did you mean 'fp32_baseline'"):
        load_recipe("fp32_baselin")


def test_unknown_key_lists_allowed_keys(write_recipe):
    path = write_recipe("name: x\nexports: [x86-onnxruntime]\nprofile:\n  runz: 5\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "profile.runz: unknown key 'runz'" in msg and "did you mean 'runs'" in msg and "warmup" in msg


def test_wrong_type_names_field(write_recipe):
    with pytest.raises(RecipeError, match=r"profile.threads: .*got 'two'"):
        load_recipe(write_recipe("name: x\nprofile: {threads: two}\n"))


def test_missing_name(write_recipe):
    with pytest.raises(RecipeError, match="name: required key is missing"):
        load_recipe(write_recipe("exports: []\n"))


def test_unknown_export_profile(write_recipe):
    with pytest.raises(RecipeError, match=r"exports\[1\]: unknown export profile 'x86-openvin'.*did you mean 'x86-openvino'"):
        load_recipe(write_recipe("name: x\nexports: [x86-onnxruntime, x86-openvin]\n"))


class _ScaleConfig(PassConfig):
    kind: Literal["test-scale"] = "test-scale"
    factor: float = 1.0


class _ScalePass:
    """A test double registered only inside these tests (says so in its kind)."""

    kind = "test-scale"
    config_type = _ScaleConfig
    requires: ClassVar[frozenset[str]] = frozenset()

    def apply(self, model, cfg, ctx):
        return model, PassRecord(kind=self.kind, config=cfg.model_dump())

    def rebuild(self, model, record):
        return model


class _ScaleSpec(PassSpec):
    kind = "test-scale"
    config_type = _ScaleConfig
    implementation = f"{__name__}:_ScalePass"


@pytest.fixture
def scale_pass():
    register_spec(_ScaleSpec)
    yield _ScalePass
    unregister_spec(_ScaleSpec.kind)


def test_pass_blocks_are_validated_by_their_registered_config(write_recipe, scale_pass):
    loaded = load_recipe(write_recipe("name: x\npasses:\n  - kind: test-scale\n    factor: 2\n"))
    assert isinstance(loaded.recipe.passes[0], _ScaleConfig) and loaded.recipe.passes[0].factor == 2.0
    with pytest.raises(RecipeError, match=r"passes\[0\].factr: unknown key 'factr'.*did you mean 'factor'"):
        load_recipe(write_recipe("name: x\npasses:\n  - kind: test-scale\n    factr: 2\n"))


def test_unknown_pass_kind(write_recipe, scale_pass):
    with pytest.raises(RecipeError, match=r"passes\[0\].kind: unknown 'test-scal'; expected one of .*test-scale.*did you mean 'test-scale'"):
        load_recipe(write_recipe("name: x\npasses:\n  - kind: test-scal\n"))
    with pytest.raises(RecipeError, match="a mapping with a 'kind' key"):
        load_recipe(write_recipe("name: x\npasses:\n  - just a string\n"))


def test_recipe_file_path_is_in_every_message(write_recipe):
    path = write_recipe("name: x\nseed: [1]\n", name="my_recipe.yaml")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(Path(path)) in str(err.value)


@pytest.mark.parametrize("name", resources.names("exporters"))
def test_every_shipped_export_profile_loads(name):
    from edgevit.exporters import load_profile

    profile = load_profile(name)
    assert profile.name == name and profile.precisions
