import pytest

from edgevit.errors import RecipeError
from edgevit.yamlfile import load_yaml


def test_reads_a_mapping(write_recipe):
    assert load_yaml(write_recipe("a: 1\nb: [x, y]\n")) == {"a": 1, "b": ["x", "y"]}


@pytest.mark.parametrize("text, expected", [
    ("a: 1\na: 2\n", "duplicate key 'a'"),
    ("m:\n  k: 1\n  k: 2\n", "duplicate key 'k'"),
    ("a: &x [1]\nb: *x\n", "aliases"),
    ("- 1\n- 2\n", "top level must be a mapping"),
    ("a: [1, 2\n", "fix the YAML syntax"),
    ("a: !!python/object:os.system 1\n", "could not determine a constructor"),
])
def test_rejects(write_recipe, text, expected):
    with pytest.raises(RecipeError) as err:
        load_yaml(write_recipe(text))
    assert expected in str(err.value)
    assert "recipe.yaml" in str(err.value)


def test_duplicate_key_names_the_line(write_recipe):
    with pytest.raises(RecipeError, match=r"recipe.yaml:3: duplicate key 'a'"):
        load_yaml(write_recipe("b: 1\na: 1\na: 2\n"))


def test_not_utf8_and_missing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_yaml(bad)
    with pytest.raises(RecipeError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml")
