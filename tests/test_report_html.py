"""`edgevit report`: Markdown + self-contained HTML with plots; bench plots and README headline."""
import json
import re

import pytest

from edgevit.bench import report as bench_report
from edgevit.plots import pareto_front
from edgevit.report_html import markdown_to_html


def test_pareto_front_keeps_only_undominated_points():
    points = [{"x": 1, "y": 0.5}, {"x": 2, "y": 0.7}, {"x": 3, "y": 0.6}, {"x": 4, "y": 0.8}, {"x": 2, "y": 0.4}]
    assert [(p["x"], p["y"]) for p in pareto_front(points, "x", "y")] == [(1, 0.5), (2, 0.7), (4, 0.8)]


def test_markdown_subset_converts_and_escapes():
    page = markdown_to_html("# t\n\n- a `b` <x>\n  - nested\n\n| h1 | h2 |\n|---|---|\n| 1 | **2** |\n")
    assert "<h1>t</h1>" in page and "<code>b</code> &lt;x&gt;" in page and "<th>h1</th>" in page
    assert "<td><strong>2</strong></td>" in page and "---" not in page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from typer.testing import CliRunner

    from conftest import write_images
    from edgevit.cli import app

    root = tmp_path_factory.mktemp("report")
    images = write_images(root / "images")
    recipe = root / "r.yaml"
    recipe.write_text("name: t\nmodel: {name: test_vit}\npasses: [{kind: quantize, method: lrp, budget: {avg_weight_bits: 6}}]\n"
                      "exports: [x86-onnxruntime]\nevaluation: {check_batch: 2}\nprofile: {runs: 3, warmup: 1}\n")
    result = CliRunner().invoke(app, ["compress", "--recipe", str(recipe), "--data", str(images), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_report_command_writes_a_self_contained_page_with_plots(cli, run_dir, tmp_path):
    out = tmp_path / "rendered"
    result = cli("report", run_dir, "--out", out)
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 3  # latency, size, bit allocation
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched
    assert "Per-layer bit allocation" in page and "Check thresholds" in page
    assert {p.name for p in (out / "plots").iterdir()} >= {"latency.png", "latency.svg", "bits-1.png", "bits-1.svg"}
    again = tmp_path / "again"
    assert cli("report", run_dir, "--out", again).exit_code == 0
    assert (again / "report.html").read_text() == page  # same report -> same bytes
    assert cli("report", run_dir, "--out", out).exit_code == 2  # exists, no --force


def test_report_command_rejects_a_folder_without_a_report(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.exit_code == 2 and "no report.json" in result.output and "Traceback" not in result.output


def test_readme_headline_is_regenerated_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench_report.HEADLINE_START}\nold\n{bench_report.HEADLINE_END}\nrest\n")
    header = ["reference", "variant", "kind", "runtime", "top-1", "vs fp32 (pt)", "MB (224)", "smaller than fp32",
              "p50 ms (2 thr)", "p90 ms (2 thr)", "CPU ms (1 thr) [round min-max]", "speed-up vs fp32", "vs best peer", "executed"]
    row = ["vit", "int8_deit", "edgevit", "onnxruntime", "0.7300", "-0.10", "6.1", "3.9x", "5", "6", "4 [3-5]", "2.10x", "1.05x", "int8"]
    data = {"sections": {"pareto": {"command": "python -m edgevit.bench --sections pareto", "finished_utc": "now",
                                    "machine": {"cpu": "cpu", "cores": 2},
                                    "tables": [{"header": header, "rows": [row], "headline": True}]}}}
    bench_report.update_readme_headline(readme, data)
    text = readme.read_text()
    assert "old" not in text and "| vit | int8_deit | onnxruntime | 0.7300 | -0.10 | 6.1 | 2.10x | 1.05x |" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")
    assert json.dumps(data)  # bench.json stays the only source


def test_readme_headline_prefers_the_stacks_against_the_peers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{bench_report.HEADLINE_START}\n{bench_report.HEADLINE_END}\n")
    pareto = {"command": "pareto", "finished_utc": "then", "machine": {"cpu": "cpu", "cores": 2},
              "tables": [{"header": ["reference", "variant", "runtime", "top-1", "vs fp32 (pt)", "MB (224)", "speed-up vs fp32",
                                     "vs best peer"], "rows": [["vit", "int8_deit", "ort", "0.7", "-0.1", "6", "2x", "1x"]],
                          "headline": True}]}
    header = ["latency model", "variant", "runtime", "top-1", "vs fp32 (pt)", "MB", "CPU ms [round min-max]", "benchmark_app ms",
              "speed vs NNCF int8", "speed vs fastest peer", "GMACs kept", "int8 roofline share", "executed"]
    row = ["deit_small", "stack_deit", "openvino", "0.7280", "-0.68", "44.0", "60.1 [58-62]", "55", "2.10x", "1.50x", "2.2", "30%",
           "fp32"]
    stacks = {"command": "python -m edgevit.bench --sections stacks", "finished_utc": "now", "machine": {"cpu": "cpu", "cores": 2},
              "tables": [{"header": header, "rows": [row], "headline": True}]}
    bench_report.update_readme_headline(readme, {"sections": {"pareto": pareto, "stacks": stacks}})
    text = readme.read_text()
    assert "| deit_small | stack_deit | openvino | 0.7280 | -0.68 | 44.0 | 60.1 [58-62] | 2.10x | 1.50x | fp32 |" in text
    assert "--sections stacks" in text and "int8_deit" not in text


def test_time_variants_reports_the_spread_of_round_medians():
    from edgevit.bench.timing import interleaved, summary
    from edgevit.bench.variants import time_variants

    calls = []
    timing = time_variants(lambda threads: {"a": lambda: calls.append(threads), "b": lambda: None}, rounds=3, per_round=2,
                           cpu_per_round=1)
    assert calls.count(2) == 3 + 3 * 2 and calls.count(1) == 3 + 3 * 1  # warm-up + rounds x per_round, per phase
    spread = timing["a"]["wall_2t"]["round_medians"]
    assert spread["min"] <= spread["median"] <= spread["max"] and timing["a"]["cpu_1t"]["n"] == 3
    assert summary([1.0, 3.0, 10.0, 20.0], per_round=2)["round_medians"] == {"min": 2.0, "median": 8.5, "max": 15.0}
    assert set(interleaved({"x": lambda: None}, 1, 1)) == {"x"}
