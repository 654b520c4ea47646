"""A recipe's search space (``search:``) as validated data, and a trial's values applied
to the recipe. No torch and no optuna at import: `edgevit validate` checks the space.

    search:
      passes[0].flops_reduction: {low: 0.1, high: 0.5}          # float range (step, log optional)
      passes[1].r: {choices: [0, 4, 8, 12]}                     # categorical
      passes[2].budget.avg_weight_bits: {low: 4, high: 8, step: 1}   # int range (both bounds ints)

A key is a path into one pass block. It is checked against the pass's config type (an
unknown field is refused with the allowed ones), and every bound / choice is substituted
into the block and validated, so a space that can only produce broken recipes is refused
before any trial runs (e.g. searching ``r`` on a tome block that sets ``flops_reduction``).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from pydantic import Field, model_validator

from edgevit.errors import RecipeError
from edgevit.schema import StrictModel, _fields_at, did_you_mean

PATH = re.compile(r"^passes\[(\d+)\]((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")
PATH_FIX = "write passes[INDEX].FIELD (e.g. passes[0].flops_reduction: {low: 0.1, high: 0.5}); see README 'edgevit tune'"
Scalar = str | bool | int | float


class SearchRange(StrictModel):
    low: int | float | None = Field(None, description="lower bound (ints for an integer parameter)")
    high: int | float | None = Field(None, description="upper bound, inclusive")
    step: int | float | None = Field(None, gt=0, description="grid step of the range (a grid sampler needs it on floats)")
    log: bool = Field(False, description="sample the range on a log scale")
    choices: list[Scalar] | None = Field(None, min_length=1, max_length=1000, description="categorical values")

    @model_validator(mode="after")
    def _shape(self) -> "SearchRange":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices or low/high (with optional step, log), not both")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError("choices must be distinct")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log needs low > 0 and no step")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def candidates(self) -> list[Any]:
        """Values checked against the pass schema: the bounds, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def grid(self, where: str) -> list[Any]:
        if self.choices is not None:
            return list(self.choices)
        step = self.step or (1 if self.is_int else None)
        if step is None:
            raise RecipeError(f"{where}: a grid needs choices or a step on a float range", "add step: to the range, or use --sampler tpe")
        n = int((self.high - self.low) / step + 1e-9)
        values = [self.low + i * step for i in range(n + 1)]
        return values if self.is_int else [round(v, 12) for v in values]

    def distribution(self) -> Any:
        import optuna.distributions as d

        if self.choices is not None:
            return d.CategoricalDistribution(self.choices)
        if self.is_int:
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)


def parse_path(key: str) -> tuple[int, list[str]]:
    m = PATH.match(key)
    if not m:
        raise ValueError(key)
    return int(m.group(1)), m.group(2)[1:].split(".")


def set_path(block: dict[str, Any], fields: list[str], value: Any) -> None:
    """Set ``fields`` (a path of keys) in a raw pass block, creating absent sub-blocks."""
    for name in fields[:-1]:
        if not isinstance(block.get(name), dict):
            block[name] = {}
        block = block[name]
    block[fields[-1]] = value


def check_space(where: str, search: dict[str, SearchRange], raw_passes: list[Any],
                config_type_of: Callable[[str], Any], validate_block: Callable[[int, dict], Any]) -> None:
    """Refuse a path that names no parameter of its pass, and any bound / choice that makes
    the pass block invalid. ``where`` prefixes messages (the recipe file)."""
    for key, rng in search.items():
        try:
            index, fields = parse_path(key)
        except ValueError:
            raise RecipeError(f"{where}: search: '{key}' is not a parameter path", PATH_FIX) from None
        if index >= len(raw_passes):
            raise RecipeError(f"{where}: search.{key}: the recipe has {len(raw_passes)} pass(es) (indices from 0)",
                              "fix the pass index")
        kind = raw_passes[index]["kind"]
        config_type = config_type_of(kind)
        for depth, name in enumerate(fields):
            allowed = [f for f in _fields_at(config_type, tuple(fields[:depth])) if f != "kind"]
            if not allowed:
                raise RecipeError(f"{where}: search.{key}: '{fields[depth - 1]}' of the {kind} pass is a value, not a block",
                                  f"search '{'.'.join(fields[:depth])}' itself")
            if name not in allowed:
                raise RecipeError(f"{where}: search.{key}: the {kind} pass has no parameter '{name}'"
                                  + did_you_mean(name, allowed), f"{kind} parameters here: {', '.join(sorted(allowed))}")
        for value in rng.candidates():
            block = copy.deepcopy(raw_passes[index])
            set_path(block, fields, value)
            try:
                validate_block(index, block)
            except RecipeError as exc:
                raise RecipeError(f"{where}: search.{key}: value {value!r} makes the pass invalid: {exc.message.removeprefix(where + ': ')}",
                                  "narrow the range, or change the pass block so every value is valid "
                                  "(e.g. drop the alternative key the searched one excludes)") from None


def apply_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The raw recipe mapping with a trial's values set (``search`` removed: a trial's
    recipe is a plain recipe that `edgevit compress` runs as it is)."""
    out = copy.deepcopy(raw)
    out.pop("search", None)
    for key, value in values.items():
        index, fields = parse_path(key)
        set_path(out["passes"][index], fields, value)
    return out


def short_name(key: str, raw_passes: list[dict[str, Any]]) -> str:
    """``passes[0].flops_reduction`` -> ``prune.flops_reduction`` for tables and progress."""
    index, fields = parse_path(key)
    return ".".join([raw_passes[index]["kind"], *fields])
