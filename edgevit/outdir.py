"""Rules for an output folder: it never covers an input, and a failed run leaves no
folders it created.

``--force`` replaces ``--out`` wholesale, so ``--out`` equal to an input, or a folder
holding one, would delete the user's model, checkpoint, images or recipe. Both are refused
with or without ``--force`` (without it the message would otherwise be a misleading
"already exists"). ``--out`` inside an image folder is refused too: the published run
would become one more class folder of that data set. ``--out`` inside a model folder is
allowed (nothing there is scanned, nothing is replaced).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from edgevit.errors import EdgevitError


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def refuse_out_over_inputs(out: Path, inputs: dict[str, str | Path | None], scanned: frozenset[str] = frozenset(),
                           flag: str = "--out") -> None:
    """``inputs``: description (e.g. "--data") -> path; ``scanned``: those whose folder
    must not contain ``out`` either (image folders)."""
    target = _resolved(out)
    for what, path in inputs.items():
        if path is None:
            continue
        source = _resolved(path)
        if target == source:
            problem = f"is the {what} itself"
        elif target in source.parents:
            problem = f"contains the {what} {path}"
        elif what in scanned and source in target.parents:
            problem = f"is inside the {what} folder {path} (the run would become one of its classes)"
        else:
            continue
        raise EdgevitError(f"{flag} {out}: {problem}; --force would delete it",
                           f"choose an {flag} outside every input, e.g. out/<name>")


def missing_parents(path: Path) -> list[Path]:
    """Ancestors of ``path`` that do not exist yet, deepest first: what a run creates."""
    created = []
    for parent in Path(path).absolute().parents:
        if parent.exists():
            break
        created.append(parent)
    return created


@contextlib.contextmanager
def removing_new_parents_on_failure(out: Path) -> Iterator[None]:
    """Folders created for ``out`` (``out/`` when --out was out/x/y) are removed again if
    the run fails, when empty: a failed run leaves the tree as it found it."""
    created = missing_parents(out)
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first; stops mattering at the first non-empty one
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
