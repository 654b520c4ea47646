"""Strict YAML reading for recipes, export profiles and calibration manifests.

Plain ``yaml.safe_load`` keeps the last of two duplicate keys and expands aliases (the
"billion laughs" vector); both hide mistakes in a config, so this loader rejects them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgevit.errors import RecipeError

MAX_YAML_BYTES = 1 << 20  # a recipe is a page of text, never a megabyte
MAX_FLOW_DEPTH = 64  # PyYAML's scanner is superlinear in [ / { nesting: 1200 levels take seconds, 1 MB hours


def flow_depth(text: str) -> int:
    """Deepest [ / { nesting outside quoted strings and comments, without parsing."""
    depth = deepest = 0
    quote = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"" and (i == 0 or text[i - 1] in " \t\n[{,:-"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n"):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
        i += 1
    return deepest


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not allowed; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` or raise a RecipeError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: file not found", "check the path or run `edgevit recipes`")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise RecipeError(f"{path}: larger than {MAX_YAML_BYTES} bytes", "is this really a recipe?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text", "save the file as UTF-8") from None
    if flow_depth(text) > MAX_FLOW_DEPTH:
        raise RecipeError(f"{path}: nested too deeply to be a config (over {MAX_FLOW_DEPTH} levels of [ ] / {{ }})",
                          "flatten the YAML")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: {exc.problem or exc.context}", "fix the YAML syntax") from None
    except yaml.YAMLError as exc:  # e.g. a reader error: its text spans lines, the message is one
        raise RecipeError(f"{path}: {' '.join(str(exc).split())}", "fix the YAML syntax") from None
    except RecursionError:  # the composer recurses per nesting level: [[[[...]]]] exhausts the stack
        raise RecipeError(f"{path}: nested too deeply to be a config", "flatten the YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: top level must be a mapping (key: value), not {type(data).__name__}",
                          "start the file with keys such as `name: ...`")
    return data

