"""Pydantic base for every YAML-backed config and a readable rendering of its errors."""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SEED_MAX = 2**32 - 1  # numpy's seed range; torch and random accept it too


def seed_field(default: int = 0, description: str | None = None) -> Any:
    """A seed every RNG edgevit feeds accepts (numpy's is the narrowest)."""
    return Field(default, ge=0, le=SEED_MAX, description=description)


def non_finite_path(value: Any, path: str = "") -> str | None:
    """Where a NaN / inf float hides in nested dicts / lists (None if nowhere)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(value)"
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        found = non_finite_path(item, where)
        if found is not None:
            return found
    return None


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt option must never be silently ignored.

    NaN / inf are refused everywhere: as typed floats (allow_inf_nan) and inside untyped
    blocks (model_args, session_options), since a NaN compares false with every bound and
    so slips through ``gt`` / ``lt`` checks downstream."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _finite_inside(cls, value: Any) -> Any:
        if isinstance(value, (dict, list, tuple)):
            where = non_finite_path(value)
            if where is not None:
                raise ValueError(f"{where} is NaN or infinite; give a finite number")
        return value


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_loc(loc: Iterable[object], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def first_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line for the first problem, with the allowed keys when a key is unknown."""
    errors = exc.errors()
    err = errors[0]
    loc = err["loc"]
    where = format_loc(loc, prefix)
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        msg = f"unknown key '{loc[-1]}'" + did_you_mean(str(loc[-1]), allowed)
        if allowed:
            msg += f"; allowed keys: {', '.join(sorted(allowed))}"
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        value = err.get("input")
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        msg = f"{err['msg']} (got {shown})"
    more = f" [and {len(errors) - 1} more problem(s)]" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk ``loc`` through nested pydantic models to list the keys allowed there."""
    current: object = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
