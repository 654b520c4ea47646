"""Writing files that carry user text (paths, model and class names) and reading JSON
that came from elsewhere, so that neither can fail with a traceback.

Paths on Linux are bytes: a non-UTF-8 file name reaches Python as lone surrogates, which
strict UTF-8 encoding refuses. Such text is written with backslash escapes instead.
JSON is written strictly (NaN / inf are not JSON) and read strictly (no NaN constants,
no nesting deep enough to exhaust the interpreter's stack).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.schema import non_finite_path


def write_text(path: Path, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8", errors="backslashreplace")


def dumps_finite(value: Any, what: str, hint: str, **kwargs: Any) -> str:
    """JSON text of ``value``; NaN / inf anywhere is an EdgevitError naming where."""
    where = non_finite_path(value)
    if where is not None:
        raise EdgevitError(f"{what}: {where} is NaN or infinite, which JSON cannot hold", hint)
    return json.dumps(value, allow_nan=False, **kwargs)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, error: type[EdgevitError], hint: str) -> Any:
    """Parse a JSON file or raise ``error`` naming the file: bad bytes, bad syntax, NaN
    constants and absurd nesting all become one line."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})", hint) from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text", hint) from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})", hint) from None
    except ValueError as exc:
        raise error(f"{path}: {exc}", hint) from None
    except RecursionError:
        raise error(f"{path}: nested too deeply to be a real file", hint) from None
