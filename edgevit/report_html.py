"""`edgevit report RUN_DIR`: a compress run's report.json as Markdown and as one
self-contained HTML page (plots inlined as SVG, no external files or scripts).

The HTML body is the Markdown report (headings, lists and tables only, converted here
so both pages always say the same thing) followed by the plots.
"""
from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgevit import plots
from edgevit.artifacts import Staging
from edgevit.errors import EdgevitError
from edgevit.outdir import refuse_out_over_inputs, removing_new_parents_on_failure
from edgevit.report import render_markdown
from edgevit.report_schema import ReportFile, bits_problem
from edgevit.schema import first_error
from edgevit.textfile import read_json, write_text

REPORT_HINT = "give the folder `edgevit compress --out` published, with its report.json unedited"

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}"
         "th{background:#f2f2f2}code{background:#f6f6f6;padding:0 3px}figure{margin:1.5em 0}svg{max-width:100%;height:auto}")


def report_plots(report: dict[str, Any], folder: Path) -> dict[str, str]:
    """The run's plots (PNG + SVG under ``folder``); returns title -> SVG text."""
    out: dict[str, str] = {}
    timed = {name: p["p50_ms"] for name, p in report["profile"].items() if p.get("p50_ms") is not None}
    if timed:
        worst = " (cascades: every stage, no exit)" if report.get("cascade") else ""
        out[f"Latency p50 per target (ms){worst}"] = plots.bar_plot(timed, "p50 ms", "latency per target" + worst, folder / "latency")
    sizes = {a["name"]: a["size_bytes"] / 1e6 for a in report["artifacts"]}
    if sizes:
        out["Artifact size (MB)"] = plots.bar_plot(sizes, "MB", "artifact size", folder / "size")
    for i, p in enumerate(report["passes"]):
        bits = p.get("metrics", {}).get("bits_per_layer")
        if bits:
            out[f"Per-layer bit allocation (pass {i + 1})"] = plots.bit_allocation_plot(
                bits, p["metrics"].get("relevance") or {}, f"{p['config'].get('method', '')} bit allocation", folder / f"bits-{i + 1}")
    cascade = report.get("cascade") or {}
    histograms = {name: c["exit_histogram"] for name, c in (cascade.get("artifacts") or {}).items() if c.get("exit_histogram")}
    if histograms:
        out["Exit histogram (measured)"] = plots.exit_histogram_plot(histograms, "where images leave the cascade", folder / "exits")
    return out


def markdown_to_html(markdown: str) -> str:
    """The subset render_markdown emits: #-headings, '- ' lists (two-space nesting), pipe tables."""
    body, in_list, table = [], False, []

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)

    def flush_table():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|(\s*-+\s*\|)+", r.strip())]
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells[0]) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:]) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            table.append(stripped)
            continue
        flush_table()
        if stripped.startswith("- "):
            if not in_list:
                body.append("<ul>")
                in_list = True
            nested = ' style="margin-left:1.5em"' if line.startswith("  ") else ""
            body.append(f"<li{nested}>{inline(stripped[2:])}</li>")
            continue
        if in_list:
            body.append("</ul>")
            in_list = False
        heading = re.match(r"(#+)\s+(.*)", stripped)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif stripped:
            body.append(f"<p>{inline(stripped)}</p>")
    flush_table()
    if in_list:
        body.append("</ul>")
    return "\n".join(body)


def render_html(report: dict[str, Any], svgs: dict[str, str]) -> str:
    title = f"edgevit report: {report['recipe']['name']} on {report['model']['architecture']}"
    figures = "".join(f"<figure><figcaption><strong>{html.escape(t)}</strong></figcaption>{_strip_xml_header(svg)}</figure>"
                      for t, svg in svgs.items())
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{markdown_to_html(render_markdown(report))}\n"
            f"<h2>Plots</h2>\n{figures or '<p>nothing to plot</p>'}\n</body></html>\n")


def _strip_xml_header(svg: str) -> str:
    """Inline form: no XML prolog/doctype, no RDF metadata block."""
    svg = svg[svg.index("<svg"):] if "<svg" in svg else svg
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)


def write_report(run_dir: Path, out: Path | None = None, force: bool = False) -> Path:
    """report.md + report.html + plots/ for a published compress run, written atomically."""
    report, source = read_report(run_dir)
    target = out or run_dir / "rendered"
    refuse_out_over_inputs(target, {"run folder": run_dir})
    if target.is_symlink():  # --force would replace the link and leave the old one behind as .old-*
        raise EdgevitError(f"--out {target}: is a symbolic link", "give the real folder (or a new path) as --out")
    with removing_new_parents_on_failure(target):
        staging = Staging(target, force=force)
        try:
            with _renderer_errors(source):
                svgs = report_plots(report, staging.path / "plots")
                markdown = render_markdown(report)
                page = render_html(report, svgs)
            write_text(staging.path / "report.md", markdown)
            write_text(staging.path / "report.html", page)
            return staging.publish({"source": str(source)})
        except BaseException:
            staging.discard()
            raise


@contextlib.contextmanager
def _renderer_errors(source: Path) -> Iterator[None]:
    """Backstop behind ReportFile: a field the renderer reads that the typed model does not
    cover yet (the report grows by issue) is still one line naming the file, never a traceback."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as exc:
        raise EdgevitError(f"{source}: a field the report needs is missing or malformed ({type(exc).__name__}: {exc})",
                           REPORT_HINT) from None


def read_report(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """report.json checked field by field against what the renderer reads."""
    source = run_dir / "report.json"
    if not source.is_file():
        raise EdgevitError(f"{run_dir}: no report.json here", REPORT_HINT)
    report = read_json(source, EdgevitError, REPORT_HINT)
    if isinstance(report, dict) and report.get("schema_version", 1) != 1:
        raise EdgevitError(f"{source}: report schema_version {report['schema_version']!r}; this edgevit reads 1",
                           "use the edgevit that wrote it")
    try:
        # the renderer reads the validated form: optional keys present (as null), types as declared
        report = ReportFile.model_validate(report).model_dump()
    except ValidationError as exc:
        raise EdgevitError(f"{source}: {first_error(exc, ReportFile)}", REPORT_HINT) from None
    problem = bits_problem(report)
    if problem:
        raise EdgevitError(f"{source}: {problem}", REPORT_HINT)
    return report, source
