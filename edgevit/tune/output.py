"""What a study leaves in --out, rebuilt from the storage after every run (so a resumed or
multi-worker study shows every worker's trials):

    results.json        every trial: values, state, reason, measured record, recipe; baseline, budget
    trials.md           the same as a table
    pareto.md           the Pareto front (top-1 up, budget metrics down) as a table
    pareto.png / .svg   top-1 vs the first budget metric, trials + fp32, front drawn
    chosen/             fastest.yaml (or smallest.yaml): the lowest first budget metric that meets
                        the budget; most_accurate.yaml: the highest top-1 that does; pareto/trial-N.yaml:
                        every front member. Plain recipes: `edgevit compress --recipe` runs them as they are.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgevit.tune.budget import drop_points

BEST_NAME = {"latency_ms": "fastest", "size_mb": "smallest"}


def front(rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Completed trials no other completed trial beats on every objective (top-1 higher,
    each metric lower), sorted by the first metric."""
    done = [r for r in rows if r["state"] == "complete"]

    def key(r: dict[str, Any]) -> list[float]:
        return [-r["record"]["top1"], *(r["record"][m] for m in metrics)]

    def dominated(a: list[float], b: list[float]) -> bool:  # b dominates a
        return all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b))

    keys = {r["number"]: key(r) for r in done}
    out = [r for r in done if not any(dominated(keys[r["number"]], keys[o["number"]]) for o in done if o is not r)]
    return sorted(out, key=lambda r: (r["record"][metrics[0]], -r["record"]["top1"]))


def chosen(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, dict[str, Any]]:
    ok = [r for r in rows if r["state"] == "complete" and r["meets_budget"]]
    if not ok:
        return {}
    first = metrics[0]
    return {BEST_NAME.get(first, f"lowest_{first}"): min(ok, key=lambda r: (r["record"][first], -r["record"]["top1"])),
            "most_accurate": max(ok, key=lambda r: (r["record"]["top1"], -r["record"][first]))}


def write_outputs(out: Path, name: str, rows: list[dict[str, Any]], baseline: dict[str, Any], budget: str,
                  limits: dict[str, float], max_drop: float, short: Any) -> dict[str, Any]:
    metrics = list(limits)
    pareto = front(rows, metrics)
    best = chosen(rows, metrics)
    summary = {"study": name, "budget": budget, "limits": limits, "max_drop": max_drop, "baseline": baseline,
               "trials": rows, "pareto": [r["number"] for r in pareto],
               "chosen": {k: r["number"] for k, r in best.items()}, "versions": _versions()}
    _write(out / "results.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    _write(out / "trials.md", _table(rows, baseline, metrics, short, f"All trials of {name}"))
    _write(out / "pareto.md", _table(pareto, baseline, metrics, short, f"Pareto front of {name} (budget {budget}, "
                                     f"max drop {max_drop:g} pt)"))
    _plot(out, pareto, rows, baseline, metrics, limits, name)
    chosen_dir = out / "chosen"
    (chosen_dir / "pareto").mkdir(parents=True, exist_ok=True)
    for old in list(chosen_dir.glob("*.yaml")) + list((chosen_dir / "pareto").glob("*.yaml")):
        old.unlink()  # rewritten from the storage each time: a resumed study may choose differently
    for label, r in best.items():
        _write(chosen_dir / f"{label}.yaml", _chosen_text(r, f"chosen by edgevit tune ({label}) from study {name}"))
    for r in pareto:
        _write(chosen_dir / "pareto" / f"trial-{r['number']:04d}.yaml", _chosen_text(r, f"Pareto front of study {name}"))
    return summary


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    from edgevit.versions import library_versions

    out = library_versions()
    for name in ("optuna", "ray"):  # the study's own machinery
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _chosen_text(row: dict[str, Any], why: str) -> str:
    r = row["record"]
    return (f"# {why}: trial {row['number']}, measured top-1 {r['top1']:.4f} on the validation split, "
            f"p50 {r['latency_ms']:.3f} ms, {r['size_mb']:.3f} MB\n" + row["recipe"])


def _table(rows: list[dict[str, Any]], baseline: dict[str, Any], metrics: list[str], short: Any, title: str) -> str:
    lines = [f"## {title}", "",
             f"fp32 baseline: top-1 {baseline['top1']:.4f}, {baseline['latency_ms']:.3f} ms, {baseline['size_mb']:.3f} MB", "",
             "| trial | state | values | top-1 | vs fp32 (pt) | p50 ms | size MB | meets budget | fine-tune (images seen) | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["record"]
        values = ", ".join(f"{short(k)}={v}" for k, v in (row["values"] or {}).items())
        note = row["reason"] or (f"same values as #{row['same_as']}" if row.get("same_as") is not None else "")
        if row["state"] == "complete":
            cells = [f"{r['top1']:.4f}", f"{0.0 - drop_points(r['top1'], baseline['top1']):+.2f}", f"{r['latency_ms']:.3f}",
                     f"{r['size_mb']:.3f}", "yes" if row["meets_budget"] else "no", _fine_tune_cell(r.get("fine_tune"))]
        else:
            cells = ["-"] * 6
        lines.append(f"| {row['number']} | {row['state']} | {values} | " + " | ".join(cells) + f" | {_cell(note)} |")
    return "\n".join(lines) + "\n"


def _fine_tune_cell(fine_tune: dict[str, Any] | None) -> str:
    if not fine_tune:
        return "none"
    return (f"{fine_tune['images_seen']} ({'+'.join(f'{e:g}' for e in fine_tune['epochs'])} epochs, "
            f"stopped by {'/'.join(fine_tune['stopped_by'])})")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def _plot(out: Path, pareto: list[dict[str, Any]], rows: list[dict[str, Any]], baseline: dict[str, Any], metrics: list[str],
          limits: dict[str, float], name: str) -> None:
    from edgevit import plots

    metric = metrics[0]
    on_front = {r["number"] for r in pareto}
    points = [{"kind": "edgevit", "label": f"#{r['number']}" + ("*" if r["number"] in on_front else ""),
               metric: r["record"][metric], "top1": r["record"]["top1"]} for r in rows if r["state"] == "complete"]
    points.append({"kind": "baseline", "label": "fp32", metric: baseline[metric], "top1": baseline["top1"]})
    unit = "p50 latency on the target (ms)" if metric == "latency_ms" else "artifact size (MB)"
    plots.tradeoff_plot(points, metric, "top1", unit, "top-1 on the validation split",
                        f"{name}: budget {metric} <= {limits[metric]:.3g} (* = Pareto front)", out / "pareto")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # workers may rewrite at once: each its own temp file
    tmp.write_text(text)
    os.replace(tmp, path)
