"""A cascade bundle rewritten after export, on the target: which exits it keeps, and how a
single image runs through it.

Two forms run a single image (batch 1) through a cascade, and which is faster depends on
the runtime and the model, so both are timed where the bundle will run:

- ``graph``: the whole cascade as one graph that returns early through ONNX If; no host
  round trip per stage. Each If is a graph boundary, and OpenVINO's CPU plugin does not
  fuse ops into Snippets kernels inside If bodies (snippets_mark_skipped.cpp), so in
  OpenVINO the path through the else branch costs more than the same blocks outside one.
- ``chain``: one graph per kept exit (plus the last), the stages between two kept exits
  merged, the other heads pruned; the runner chains them and decides between them.
  vit_tiny_c10, OpenVINO, the path through every stage: 4.36 ms as one graph, 4.00 ms as
  two chained halves, 3.69 ms without exits.

The stage graphs of the export (lowered where quantized, already checked against PyTorch)
are the material of both forms; bundle.json is rewritten through the typed contract each
time, and ``finish`` removes the files the chosen form does not use.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.errors import ExportError
from edgevit.exporters.base import Bundle
from edgevit.exporters.cascade_graphs import chained_stage_graphs, conditional_cascade_graph

FORMS = {"graph": "one graph, early return through If",
         "chain": "chained stages (merged between the kept exits, one runtime call each)"}
FORM_SHORT = {"graph": "one graph", "chain": "chained"}  # in tables


@dataclass
class CascadeForms:
    """Rewrites a cascade bundle exported with the one-graph form (``if_graph``); one per
    exported bundle, kept by the export context for as long as the run's stage graphs exist.
    ``convert(graph, folder, stem)`` writes an ONNX graph into ``folder`` in the runtime's
    format and returns the file names (the model file first)."""

    stage_paths: list[Path]
    rule: str
    convert: Callable[[Path, Path, str], list[str]]
    scratch: Path
    _exported: dict[Path, dict[str, Any]] = field(default_factory=dict)  # bundle.json as exported, per bundle folder
    _written: dict[Path, set[str]] = field(default_factory=dict)  # files this object wrote, per bundle folder

    @property
    def n_exits(self) -> int:
        return len(self.stage_paths) - 1

    def write(self, bundle_dir: Path, form: str, exits: Sequence[int], thresholds: Sequence[float | None]) -> Bundle:
        """The bundle in ``bundle_dir`` as ``form`` with only ``exits`` (indices of the
        exported stages' exits), ``thresholds`` one per exported exit (null: never)."""
        bundle_dir = Path(bundle_dir).resolve()
        data = copy.deepcopy(self._exported_data(bundle_dir))
        cascade = data["cascade"]
        exits = sorted(exits)
        if form == "graph":
            graph = conditional_cascade_graph(self.stage_paths, self.rule, self.scratch / "cascade.onnx", exits)
            self._convert(graph, bundle_dir, "cascade")
            for stage, t in zip(cascade["stages"], thresholds):
                stage["threshold"] = t
            cascade["graph"]["exits"] = list(exits)
        elif form == "chain":
            exported_stages = cascade["stages"]
            stages, files = [], []
            for path, entry in chained_stage_graphs(self.stage_paths, exits, self.scratch / "chain"):
                start, end = entry.pop("merged_stages")
                names = self._convert(path, bundle_dir, path.stem)
                files += names
                stages.append({**entry, "file": names[0], "threshold": None if end == self.n_exits else thresholds[end],
                               "blocks": [exported_stages[start]["blocks"][0], exported_stages[end]["blocks"][1]]})
            cascade["stages"] = stages
            del cascade["graph"]
            reference = data["reference_model"]["files"]
            data.update(model_file=files[0], files=files + reference, outputs=[{"name": s["name"]} for s in stages])
        else:
            raise ExportError(f"unknown cascade form {form!r}", f"one of: {', '.join(FORMS)}")
        return Bundle(bundle_dir, data).write()

    def finish(self, bundle_dir: Path) -> None:
        """Removes the files of the bundle's exported form and of other candidates that
        bundle.json no longer names."""
        bundle_dir = Path(bundle_dir).resolve()
        listed = set(json.loads((bundle_dir / "bundle.json").read_text())["files"])
        exported = set(self._exported_data(bundle_dir)["files"])
        for name in (exported | self._written.get(bundle_dir, set())) - listed:
            (bundle_dir / name).unlink(missing_ok=True)

    def _exported_data(self, bundle_dir: Path) -> dict[str, Any]:
        if bundle_dir not in self._exported:
            data = json.loads((bundle_dir / "bundle.json").read_text())
            if "graph" not in data.get("cascade", {}):
                raise ExportError(f"{bundle_dir}: not a cascade bundle with the one-graph form", "re-export the artifact")
            self._exported[bundle_dir] = data
        return self._exported[bundle_dir]

    def _convert(self, graph: Path, bundle_dir: Path, stem: str) -> list[str]:
        names = self.convert(graph, bundle_dir, stem)
        self._written.setdefault(bundle_dir, set()).update(names)
        return names
