"""report.json -> report.md. The JSON is the contract (schema in the README); the
Markdown is for people and is derived from it only."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.layer_kinds import kind_cells
from edgevit.textfile import dumps_finite, write_text

REPORT_SCHEMA_VERSION = 1
NON_FINITE_HINT = ("the model produced NaN/inf: check the checkpoint's weights, or lower finetune.lr if a fine-tune "
                   "diverged (the report's loss figures show it)")


def write_report_files(folder: Path, report: dict[str, Any]) -> None:
    """report.json (strict JSON: a NaN there is an error, not a file other tools choke on)
    and its Markdown rendering, beside each other in ``folder``. The report is checked
    against the typed contract its readers use (``edgevit.report_schema``) first."""
    from pydantic import ValidationError

    from edgevit.errors import EdgevitError
    from edgevit.report_schema import ReportFile
    from edgevit.schema import first_error

    text = dumps_finite(report, "report.json", NON_FINITE_HINT, indent=2, sort_keys=False)  # NaN: the model's fault
    try:
        ReportFile.model_validate(report)
    except ValidationError as exc:  # edgevit wrote something its own readers would refuse: a bug
        raise EdgevitError(f"report.json: {first_error(exc, ReportFile)}",
                           "this is a bug in edgevit: please report it with the recipe") from None
    write_text(folder / "report.json", text + "\n")
    write_text(folder / "report.md", render_markdown(report))


def speedup_text(measured: dict[str, Any]) -> str:
    """"1.23x +- 0.02": a measured speed-up with its standard error where the runner gave one
    (to three decimals below 0.005, where two would print "+- 0.00" and read as no error)."""
    se = measured.get("speedup_se")
    return f"{measured['speedup_mean']:.2f}x" + (f" +- {se:.{3 if se < 0.005 else 2}f}" if se else "")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _sig(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else _fmt(value)


def _mega(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} M"


def _time_by_kind(artifacts: list[dict[str, Any]]) -> list[str]:
    """Where each artifact's time goes, from its runtime's own per-op counters at batch 1."""
    profiled = [a for a in artifacts if a.get("time_by_kind")]
    if not profiled:
        return []
    kinds = list(dict.fromkeys(k for a in profiled for k in a["time_by_kind"]["kinds"]))
    lines = ["", "## Where the time goes", "",
             "Share of each runtime's own per-op counters (ONNX Runtime profiler, OpenVINO PERF_COUNT; batch 1, "
             "mean of a few runs) by kind of layer; `int8` = share of the linear / matmul / attention time that ran in "
             "an integer kernel. Profilers add overhead: these are shares, not latency.", "",
             "| target | profiled ms | " + " | ".join(kinds) + " | compute time in integer |",
             "|---|---|" + "---|" * len(kinds) + "---|"]
    for a in profiled:
        t = a["time_by_kind"]
        lines.append(f"| {a['name']} | {t['total_ms']:.1f} | " + " | ".join(kind_cells(t, tuple(kinds)))
                     + f" | {t['compute_integer_share']:.0%} |")
    return lines


def _bit_chart(bits: dict[str, int], relevance: dict[str, float]) -> list[str]:
    """Per-layer bits with the LRP relevance that chose them, as a text bar chart."""
    top = max(relevance.values(), default=0.0) or 1.0
    lines = ["", "  | layer | bits | LRP relevance |", "  |---|---|---|"]
    for name, b in bits.items():
        r = relevance.get(name)
        bar = "#" * max(1, round(20 * r / top)) if r is not None else ""
        lines.append(f"  | {name} | {b} | {'' if r is None else f'{r:.4f} '}`{bar}` |")
    return lines + [""]


def _cascade_section(cascade: dict[str, Any] | None) -> list[str]:
    """The early-exit cascade as the device runner measured it on the evaluation images."""
    if not cascade:
        return []
    lines = ["", "## Early-exit cascade (measured)", ""]
    if not cascade.get("evaluated"):
        return lines + [f"not run: {cascade.get('reason')}"]
    lines += [f"{cascade['images']} images of `{cascade['data']}`, run by the device runner as a cascade and, interleaved "
              "batch by batch, as the same network without exits (the full model). Latencies are wall time; the speed-up "
              "divides mean process CPU time per batch (the runner's other load on a shared machine falls out).", "",
              "| target | top-1 cascade | top-1 full | exits taken (per exit, last = final classifier) | mean ms | p50 ms | p90 ms "
              "| full mean ms | full p90 ms | speed-up (mean CPU time) | where run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in cascade["artifacts"].items():
        if not c.get("evaluated", True):
            lines.append(f"| {name} | - | - | - | - | - | - | - | - | - | not run: {c['reason']} |")
            continue
        lat, full = c["latency"], c.get("full_model_latency") or {}
        lines.append(f"| {name} | {_fmt(c['accuracy'], 4)} | {_fmt(c.get('full_model_accuracy'), 4)} | {c['exit_histogram']} "
                     f"| {_fmt(lat['mean_ms'])} | {_fmt(lat['p50_ms'])} | {_fmt(lat['p90_ms'])} | {_fmt(full.get('mean_ms'))} "
                     f"| {_fmt(full.get('p90_ms'))} | {speedup_text(c) if c.get('speedup_mean') is not None else '-'} | {c['where_run']} |")
    for name, c in cascade["artifacts"].items():
        chosen = c.get("exits_chosen_on_target")
        if chosen:
            from edgevit.exporters.cascade_forms import FORM_SHORT  # here: the report module stays free of torch

            tried = "; ".join(f"blocks {t['blocks_1based']}: " + (" / ".join(
                f"{FORM_SHORT.get(f, f)} {v:.2f}x" for f, v in t["speedup_by_form"].items())
                if t.get("speedup_by_form") else f"{t['speedup_mean']:.2f}x") for t in chosen["tried"])
            lines += ["", f"- {name}: exits chosen on the target: after blocks {chosen['kept_blocks_1based']}"
                      + (f", left out {chosen['dropped_blocks_1based']}" if chosen["dropped_blocks_1based"] else "")
                      + (f"; single images run as {chosen['form_meaning']}" if chosen.get("form_meaning") else "")
                      + f" (tried, speed-up on {chosen.get('timed_on', 'held-out train images')}: {tried})"]
            check = chosen.get("chain_check")
            if chosen.get("form") == "chain" and check:
                lines.append(f"  - the chained stages checked against the exported stages: max |diff| "
                             f"{_fmt(check.get('max_abs_diff'), 6)} ({check['metric']}, {check['threshold']}), "
                             f"{'passed' if check['passed'] else 'FAILED'}, {check['against']}")
    return lines


def _baseline_latency(report: dict[str, Any]) -> list[str]:
    timed = [(a["name"], a["baseline"]) for a in report["artifacts"] if (a.get("baseline") or {}).get("timed")]
    if not timed:
        return []
    lines = ["", "## Against the uncompressed model (same target, same run, interleaved)", "",
             "| target | uncompressed CPU ms | artifact CPU ms | speed-up (CPU) | speed-up (p50 wall) | uncompressed MB | size ratio | rounds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, b in timed:
        lines.append(f"| {name} | {_fmt(b['cpu_time_ms'])} | {_fmt(b['cpu_time_ms'] / b['speedup_cpu'])} | {_fmt(b['speedup_cpu'])}x "
                     f"| {_fmt(b['speedup_p50'])}x | {b['size_bytes'] / 1e6:.2f} | {_fmt(b['size_ratio'])}x | {b['rounds']} |")
    return lines


def _float_form_lines(artifacts: list[dict[str, Any]]) -> list[str]:
    """profile.float_form: each quantized artifact against the same compressed model in float."""
    rows = [(a["name"], a["float_form"]) for a in artifacts if a.get("float_form")]
    if not rows:
        return []
    lines = ["", "## Quantized vs float form of the compressed model (same target, interleaved)", "",
             "| target | quantized CPU ms | float CPU ms | quantized vs float | float MB | float check | published |",
             "|---|---|---|---|---|---|---|"]
    for name, f in rows:
        if not f.get("timed"):
            lines.append(f"| {name} | - | - | not timed: {f.get('reason')} | {f['float_size_bytes'] / 1e6:.2f} "
                         f"| {'passed' if f['check_passed'] else 'FAILED'} | {f['published']} |")
            continue
        lines.append(f"| {name} | {_fmt(f['quantized_cpu_ms'])} | {_fmt(f['float_cpu_ms'])} | {_fmt(f['quantized_vs_float'])}x "
                     f"| {f['float_size_bytes'] / 1e6:.2f} | {'passed' if f['check_passed'] else 'FAILED'} | {f['published']} |")
    return lines


def _summary_section(report: dict[str, Any]) -> list[str]:
    """The first screen: per target, how much smaller and faster than the model as loaded
    (timed interleaved on the same target in the same run), how much top-1 changed, and what
    really ran. A compressed artifact that is not faster than the float model is flagged."""
    acc = report.get("accuracy") or {}
    top1 = acc.get("top1", {})
    before = top1.get("uncompressed", top1.get("pytorch") if not report["passes"] else None)
    change_se = (acc.get("change_se") or {}) if acc.get("change_se_against") == "uncompressed" else {}  # older reports: none
    lines = ["", "## Summary: what you got, per target", "",
             "| target | runs as | size | speed-up vs uncompressed (CPU time, interleaved) | top-1 (change) | check | where run |",
             "|---|---|---|---|---|---|---|"]
    for a in report["artifacts"]:
        base = a.get("baseline") or {}
        size = f"{a['size_bytes'] / 1e6:.2f} MB"
        if base.get("size_ratio"):
            size += f" ({base['size_ratio']:.2f}x smaller)" if base["size_ratio"] >= 1 else f" ({1 / base['size_ratio']:.2f}x LARGER)"
        if not report["passes"]:
            speed = "- (no pass: this is the uncompressed model)"
        elif base.get("timed"):
            speed = f"{base['speedup_cpu']:.2f}x ({base['cpu_time_ms']:.2f} -> {base['cpu_time_ms'] / base['speedup_cpu']:.2f} ms)"
            if base["faster"] is False:
                speed += " **NOT FASTER than the uncompressed model**"
            elif base["faster"] is None:
                speed += " (cascade through every stage, its worst case: see the cascade section)"
        else:
            speed = "not timed" + (f": {base['reason']}" if base.get("reason") else (": " + a["where_run"] if a["checked_in"] != a["runtime"] else ""))
        t = top1.get(a["name"])
        se = change_se.get(a["name"])
        acc_text = "-" if t is None else f"{t:.4f}" + (f" ({(t - before) * 100:+.2f}{'' if se is None else f' +- {se * 100:.2f}'} pt)"
                                                       if before is not None else "")
        runs_as = f"{a['runtime']} {a['executed_precision']}" + (" (simulated layers)" if a["simulated"] else "")
        if (a.get("float_form") or {}).get("published") == "float":
            runs_as += " (float form: faster here than int8, see below)"
        lines.append(f"| {a['name']} | {runs_as} | {size} | {speed} | {acc_text} | {'passed' if a['check']['passed'] else 'FAILED'} "
                     f"| {a['where_run']} |")
    if before is not None:
        lines.append(f"\ntop-1 change against the model as loaded ({before:.4f} in PyTorch on the same {acc.get('n')} images)"
                     + ("; +- its paired standard error (images where exactly one of the two is right): a change within "
                        "twice that is not told apart from noise." if change_se else "."))
    if report["model"].get("random_weights"):
        lines.append("\nRandom weights: size and latency are real, top-1 is meaningless.")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    m, r = report["model"], report["recipe"]
    lines = [
        f"# edgevit report: {r['name']} on {m['architecture']}",
        "",
        f"- model: `{m['source']}` ({m['weights']}), input {'x'.join(map(str, m['input_size']))}",
        f"- recipe: `{r['path']}` (sha256 {r['sha256'][:12]}, seed {r['seed']})",
        f"- FLOPs: {_mega(report['flops']['before'])} -> {_mega(report['flops']['after'])}; "
        f"params: {_mega(report['params']['before'])} -> {_mega(report['params']['after'])}",
        f"- calibration: {report['calibration']['source']} ({report['calibration']['n']} images, seed {report['calibration']['seed']}"
        + (", OVERLAPS the evaluation set" if report["calibration"]["overlaps_eval"] else "") + ")",
    ]
    lines += _summary_section(report)
    lines.append("")
    for w in report.get("warnings", []):
        lines.append(f"- **warning**: {w}")
    lines += ["", "## Passes", ""]
    if not report["passes"]:
        lines.append("none (the model is exported as loaded)")
    for p in report["passes"]:
        t = p.get("training")
        trained = "training-free" if not t else (
            f"fine-tuned {t['epochs']:.2f} epoch(s) x {t['images_per_epoch']} images, {t['wall_s']:.0f} s, "
            f"{t['loss']} loss {t['loss_first']:.4f} -> {t['loss_last']:.4f}, stopped by {t['stopped_by']}")
        scalars = {k: v for k, v in p.get("metrics", {}).items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        shown = ", ".join(f"{k} {_sig(v) if isinstance(v, float) else v}" for k, v in scalars.items())
        lines.append(f"- `{p['kind']}` ({trained}): {shown}")
        for note in p.get("notes", []):
            lines.append(f"  - {note}")
        bits = p.get("metrics", {}).get("bits_per_layer")
        if bits:
            lines += _bit_chart(bits, p["metrics"].get("relevance") or {})
    lines += ["", "## Artifacts and numerical checks", "",
              "| target | format | precision | executed | size | check | value | threshold | passed | where run |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for a in report["artifacts"]:
        c = a["check"]
        lines.append(
            f"| {a['name']} | {a['format']} | {a['precision']}{' (simulated)' if a['simulated'] else ''} | {a['executed_precision']} "
            f"| {a['size_bytes'] / 1e6:.2f} MB | {c.get('metric', '-')} | {_sig(c.get('value'))} "
            f"| {c.get('threshold')} | {'yes' if c['passed'] else 'NO: ' + c.get('reason', '')} | {a['where_run']} |"
        )
    lines += _time_by_kind(report["artifacts"])
    acc = report.get("accuracy")
    lines += ["", "## Accuracy", ""]
    if not acc:
        lines.append("no evaluation data given (--data)")
    else:
        lines += [f"{acc['n']} images of `{acc['dataset']}` (seed {acc['seed']}, labels {acc['label_mapping']})"
                  + ("; a cascade artifact here runs every stage (no exit): its cascade top-1 is in the next section"
                     if report.get("cascade") else ""), "",
                  "| model | top-1 | agreement with PyTorch |", "|---|---|---|"]
        for name, top1 in acc["top1"].items():
            shown = "uncompressed (as loaded, PyTorch)" if name == "uncompressed" else name
            lines.append(f"| {shown} | {top1:.4f} | {_fmt(acc['agreement_with_pytorch'].get(name), 4)} |")
    lines += _cascade_section(report.get("cascade"))
    lines += _baseline_latency(report)
    lines += _float_form_lines(report["artifacts"])
    lines += ["", "## Latency", "",
              "| target | runtime | threads | batch | runs | p50 ms | p90 ms | p99 ms | mean ms | CPU ms/inference | load avg (before, after) | where run |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in report["profile"].items():
        if p.get("where_run") == "not run":
            lines.append(f"| {name} | {p['runtime']} | - | - | - | - | - | - | - | - | - | not run: {p['reason']} |")
            continue
        load = ", ".join(_fmt(v) for v in (p.get("load_avg") or []))
        where = p["where_run"] + (f"; {p['path']}" if p.get("path") else "")
        lines.append(
            f"| {name} | {p['runtime']} {p['runtime_version']} | {p['threads']} | {p['batch']} | {p['runs']} | {_fmt(p['p50_ms'])} "
            f"| {_fmt(p['p90_ms'])} | {_fmt(p['p99_ms'])} | {_fmt(p['mean_ms'])} | {_fmt(p['cpu_time_ms'])} | {load} | {where} |"
        )
    devices = {p["device"] for p in report["profile"].values() if p.get("device")}
    if devices:
        lines += ["", f"Device: {', '.join(sorted(devices))}"]
    lines += ["", "## Check thresholds (edgevit.evaluation.CHECK_THRESHOLDS)", "", "| precision | thresholds |", "|---|---|"]
    for precision, t in report["thresholds"].items():
        lines.append(f"| {precision} | {t} |")
    return "\n".join(lines) + "\n"
