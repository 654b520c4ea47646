"""`edgevit tune`: budget grammar, search-space validation, errors before any trial, a real
study on a tiny model (failed trial recorded, resume repeats nothing, the chosen recipe
reruns with `edgevit compress` to the same figures), kill -9 + --resume, two storage
workers on one study, and Ray."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, write_images
from edgevit.errors import EdgevitError
from edgevit.tune.budget import meets, parse_budget

EDGEVIT = str(Path(sys.executable).with_name("edgevit"))

# test_vit (6 blocks, 2 heads) with 2 outputs; pruning attention only can remove at most
# ~24 % of its FLOPs, so flops_reduction 0.9 fails inside the pass: a real failed trial.
TINY = """\
name: tiny_tune
model: {{name: test_vit, model_args: {{num_classes: 2}}}}
passes:
  - {{kind: prune, flops_reduction: 0.2, modules: [attention], channel_multiple: 8}}
exports: [x86-onnxruntime]
evaluation: {{batch_size: 8, check_batch: 2}}
profile: {{runs: 3, warmup: 1, threads: 1}}
search:
  {search}
"""
FAILING_SPACE = "passes[0].flops_reduction: {choices: [0.1, 0.9]}"
RANGE_SPACE = "passes[0].flops_reduction: {low: 0.05, high: 0.2}"


@pytest.fixture
def train(tmp_path) -> Path:
    return write_images(tmp_path / "train", per_class=6, size=24)


def tiny(write_recipe, space=FAILING_SPACE, name="tiny.yaml") -> Path:
    return write_recipe(TINY.format(search=space), name)


def tune_args(recipe, train, out, *extra):
    return ["tune", "--recipe", recipe, "--budget", "latency_ms=10000", "--train-data", train, "--out", out,
            "--val-images", "4", *extra]


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# -- budget, space, errors before any trial ---------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("latency_ms=12.5", {"latency_ms": 12.5}),
    ("size_mb=5", {"size_mb": 5.0}),
    ("latency_ms=0.5x", {"latency_ms": 10.0}),  # relative to the measured fp32 baseline (20 ms here)
    (" latency_ms = 20 , size_mb=1e1 ", {"latency_ms": 20.0, "size_mb": 10.0}),
])
def test_budget_parses(text, expected):
    assert parse_budget(text).resolve({"latency_ms": 20.0, "size_mb": 100.0}) == expected


@pytest.mark.parametrize("text, says", [
    ("", "cannot read"), ("latency=5", "unknown metric 'latency'"), ("latency_ms=-1", "cannot read"),
    ("latency_ms=0", "must be positive"), ("latency_ms=5,latency_ms=6", "given twice"), ("size_mb=5mb", "cannot read"),
    ("latency_ms=nan", "cannot read"),
])
def test_budget_refuses(text, says):
    with pytest.raises(EdgevitError) as err:
        parse_budget(text)
    assert says in err.value.message and "latency_ms" in err.value.hint


@pytest.mark.parametrize("space, says", [
    ("passes[0].flops_reductoin: {low: 0.1, high: 0.3}", "has no parameter 'flops_reductoin' (did you mean 'flops_reduction'?)"),
    ("passes[3].flops_reduction: {low: 0.1, high: 0.3}", "the recipe has 1 pass(es)"),
    ("flops_reduction: {low: 0.1, high: 0.3}", "is not a parameter path"),
    ("passes[0].flops_reduction: {low: 0.1, high: 0.97}", "value 0.97 makes the pass invalid"),
    ("passes[0].flops_reduction.x: {low: 0.1, high: 0.3}", "is a value, not a block"),
    ("passes[0].kind: {choices: [tome]}", "has no parameter 'kind'"),
    ("passes[0].flops_reduction: {low: 0.3, high: 0.1}", "must be below high"),
    ("passes[0].flops_reduction: {choices: [0.1], low: 0.1}", "either choices or low/high"),
])
def test_unknown_or_invalid_search_parameter_is_refused_at_validate(cli, write_recipe, space, says):
    result = cli("validate", tiny(write_recipe, space))
    assert result.exit_code == 2 and says in result.output and "fix:" in result.output, result.output


def test_fuzzed_search_blocks_fail_only_with_a_recipe_error(tmp_path):
    import yaml
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edgevit.errors import RecipeError
    from edgevit.recipe import load_recipe

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=8))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.sampled_from(
                                                               ["low", "high", "step", "log", "choices", "x"]), inner,
                                                               max_size=4)), max_leaves=10)
    keys = st.one_of(st.text(max_size=30), st.sampled_from(
        ["passes[0].flops_reduction", "passes[0].finetune.epochs", "passes[0].per_module.mlp", "passes[0].modules",
         "passes[9].r", "passes[0].min_heads", "passes[0].kind", "passes[0].finetune"]))
    base = yaml.safe_load(TINY.format(search="{}"))

    @settings(max_examples=100, deadline=None)
    @given(st.one_of(st.dictionaries(keys, values, max_size=3), values))
    def check(search):
        path = tmp_path / "fuzz.yaml"
        path.write_text(yaml.safe_dump({**base, "search": search}))
        try:
            load_recipe(path)
        except RecipeError:
            pass

    check()


def test_shipped_stack_recipes_validate_without_torch_or_optuna():
    code = ("import sys; from edgevit.recipe import load_recipe, recipe_targets\n"
            "for n in ('stack_deit', 'stack_swin'):\n"
            "    r = load_recipe(n); recipe_targets(r); assert r.recipe.search, n\n"
            "bad = [m for m in ('torch', 'optuna', 'ray') if m in sys.modules]\nassert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("extra, says", [
    (["--budget", "latency_ms=fast"], "--budget 'latency_ms=fast': cannot read"),
    (["--storage", "postgresql://tuner:s3cret@127.0.0.1:1/edgevit"], "cannot open the study storage"),
    (["--storage", "sqlite:////nonexistent-dir/x/study.db"], "cannot open the study storage"),
    (["--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: unreachable"),
    (["--ray-address", "nonsense"], "expected HOST:PORT"),
    (["--target", "ssh://-oProxyCommand=x@host"], "--target"),
    (["--sampler", "bayes"], "--sampler bayes: unknown"),
    (["--export", "x86-tensorrt"], "is not timed by edgevit"),
])
def test_bad_inputs_fail_before_any_trial(cli, write_recipe, train, tmp_path, extra, says):
    out = tmp_path / "study"
    t0 = time.monotonic()
    result = cli(*tune_args(tiny(write_recipe), train, out), *extra)  # later options win
    assert result.exit_code == 2, result.output
    assert says in result.output and "fix:" in result.output and "s3cret" not in result.output, result.output
    assert not (out / "trials").exists() and not (out / "baseline").exists()
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_unreachable_target_fails_at_the_baseline_before_any_trial(cli, write_recipe, train, tmp_path):
    out = tmp_path / "study"
    result = cli(*tune_args(tiny(write_recipe), train, out, "--target", "ssh://nobody@127.0.0.1:1?timeout=20"))
    assert result.exit_code == 2, result.output
    assert "--target ssh://nobody@127.0.0.1:1?timeout=20: the fp32 baseline could not be run there" in result.output
    assert "fix:" in result.output and not (out / "trials").exists()


def test_recipe_without_search_is_refused(cli, write_recipe, train, tmp_path):
    recipe = write_recipe(TINY.format(search="").replace("search:\n", ""))
    result = cli(*tune_args(recipe, train, tmp_path / "s"))
    assert result.exit_code == 2 and "no search: block" in result.output


# -- a real study ------------------------------------------------------------------------

def test_study_records_failures_resumes_without_repeats_and_chosen_recipe_reruns(cli, write_recipe, train, tmp_path):
    recipe, out = tiny(write_recipe), tmp_path / "study"
    result = cli(*tune_args(recipe, train, out, "--trials", "2", "--sampler", "grid"))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the warning wraps at the console's width
    assert "if the model was trained on them" in said and "--val-data DIR" in said
    data = results(out)
    by_value = {t["values"]["passes[0].flops_reduction"]: t for t in data["trials"]}
    failed, done = by_value[0.9], by_value[0.1]
    assert failed["state"] == "fail" and "prune: cannot remove 90%" in failed["reason"]  # recorded with its reason
    assert done["state"] == "complete" and done["meets_budget"]
    rec = done["record"]
    assert rec["latency_ms"] > 0 and 0 < rec["size_mb"] < data["baseline"]["size_mb"] and 0 <= rec["top1"] <= 1
    assert rec["latency_ms_vs_fp32"] > 0  # timed interleaved with the fp32 export in the trial's own run
    assert rec["val_images"] == 4 and rec["flops"] < data["baseline"]["flops"] and rec["where_run"].startswith("this machine")
    assert data["pareto"] == [done["number"]] and data["chosen"] == {"fastest": done["number"], "most_accurate": done["number"]}
    assert (out / "pareto.png").stat().st_size > 0 and "| complete |" in (out / "trials.md").read_text()
    assert (out / "trials" / f"{done['number']:04d}" / "record.json").is_file()
    # the split: validation images never in the training half, both from --train-data
    val = {p.resolve() for p in (out / "split/val").rglob("*.png")}
    rest = {p.resolve() for p in (out / "split/train").rglob("*.png")}
    assert len(val) == 4 and len(rest) == 8 and not val & rest and all(train in p.parents for p in val | rest)

    # the same study again: refused without --resume; a different one: refused whatever
    again = cli(*tune_args(recipe, train, out, "--trials", "2", "--sampler", "grid"))
    assert again.exit_code == 2 and "already holds this study" in again.output
    other = cli(*tune_args(recipe, train, out, "--trials", "2", "--sampler", "grid", "--budget", "size_mb=3"))
    assert other.exit_code == 2 and "holds study" in other.output and "two studies never share one" in other.output
    # --resume with a larger --trials: the grid (2 points) is measured, nothing runs again
    resumed = cli(*tune_args(recipe, train, out, "--trials", "4", "--sampler", "grid", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert [t["number"] for t in results(out)["trials"]] == [t["number"] for t in data["trials"]]

    # the chosen recipe is a plain recipe: compress runs it as it is, to the same figures
    chosen = out / "chosen" / "fastest.yaml"
    assert "search:" not in chosen.read_text()
    rerun = tmp_path / "rerun"
    result = cli("compress", "--recipe", chosen, "--data", out / "split/val", "--train-data", out / "split/train", "--out", rerun)
    assert result.exit_code == 0, result.output
    report = json.loads((rerun / "report.json").read_text())
    assert report["passes"][0]["config"]["flops_reduction"] == 0.1
    assert report["artifacts"][0]["size_bytes"] / 1e6 == pytest.approx(rec["size_mb"])  # byte-identical export
    assert report["accuracy"]["top1"]["x86-onnxruntime"] == rec["top1"]
    assert report["flops"]["after"] == rec["flops"]


def test_hopeless_trials_are_pruned_before_compress_and_the_study_goes_on(cli, write_recipe, train, tmp_path):
    out = tmp_path / "study"
    # a size no stack of this model can reach: the parameter count x 32 bits is over it, so
    # each trial is pruned after the training-free pre-check, before any export
    result = cli(*tune_args(tiny(write_recipe, RANGE_SPACE), train, out, "--trials", "2", "--sampler", "tpe",
                            "--budget", "size_mb=0.01"))
    assert result.exit_code == 0, result.output
    data = results(out)
    assert [t["state"] for t in data["trials"]] == ["pruned", "pruned"] and data["chosen"] == {}
    for t in data["trials"]:
        assert t["reason"].startswith("size at least") and "> budget 0.01 MB" in t["reason"]
        assert 0 < t["record"]["precheck"]["flops_ratio"] < 1
        assert not (out / "trials" / f"{t['number']:04d}" / "run").exists()
    assert "no trial met the budget" in result.output and "trial 2/2" in result.output


def _study_trials(out: Path) -> list:
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


def _wait_for(predicate, proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tune exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            if predicate():
                return
        except Exception:  # the database may not exist yet, or be mid-write
            pass
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_kill_9_mid_study_then_resume_loses_and_repeats_nothing(write_recipe, train, tmp_path):
    recipe, out = tiny(write_recipe, RANGE_SPACE), tmp_path / "study"
    args = [EDGEVIT, *map(str, tune_args(recipe, train, out, "--trials", "3", "--sampler", "random"))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # kill once one trial is finished and the next one is running
        _wait_for(lambda: [t.state.name for t in _study_trials(out)] == ["COMPLETE", "RUNNING"], proc, 600)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = {t.number: t for t in _study_trials(out)}
    finished = before[0]
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "were interrupted" in resumed.stderr
    rows = {t["number"]: t for t in results(out)["trials"]}
    # the finished trial is kept as it was, not run again
    assert rows[0]["state"] == "complete" and rows[0]["record"] == finished.user_attrs["record"]
    # the killed one is failed with the reason; its values are measured once, by a new trial
    killed = rows[1]
    assert killed["state"] == "fail" and killed["interrupted"] and "interrupted: worker" in killed["reason"]
    requeued = [r for r in rows.values() if r["requeued_from"] == 1]
    assert len(requeued) == 1 and requeued[0]["values"] == killed["values"] and requeued[0]["state"] == "complete"
    counted = [r for r in rows.values() if not r["interrupted"]]
    assert len(counted) == 3 and all(r["same_as"] is None for r in counted)
    values = [json.dumps(r["values"], sort_keys=True) for r in counted]
    assert len(set(values)) == len(values)  # nothing measured twice, nothing re-drawn by a replayed seed


@pytest.mark.slow
def test_two_storage_workers_share_one_study(write_recipe, train, tmp_path):
    recipe = tiny(write_recipe, RANGE_SPACE)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen([EDGEVIT, *map(str, tune_args(recipe, train, tmp_path / f"worker{i}", "--trials", "4",
                                                               "--sampler", "random", "--storage", storage))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=1200)
        assert p.returncode == 0, err[-3000:]
    import optuna

    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and len([t for t in trials if t.state.is_finished()]) >= 4
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert len(owners) == 2  # both workers ran trials of the one study
    # each worker's --out shows every trial of the study, whichever worker ran it
    assert {t["number"] for t in results(tmp_path / "worker0")["trials"]} == set(numbers)


@pytest.mark.slow
def test_ray_workers_run_trials_and_stop_the_local_instance(write_recipe, train, tmp_path):
    from edgevit.tune.run import TuneOptions, tune

    out = tmp_path / "study"
    t0 = time.monotonic()
    summary = tune(TuneOptions(recipe=str(tiny(write_recipe, RANGE_SPACE)), budget="latency_ms=10000", train_data=train,
                               out=out, val_images=4, trials=2, sampler="random", workers=2))
    assert summary["ray"].startswith("127.0.0.1:")  # the local instance listened on the loopback only
    import ray

    assert not ray.is_initialized()  # and was shut down with the study
    assert summary["chosen"]
    data = results(out)
    assert [t["state"] for t in data["trials"]] == ["complete", "complete"]
    # the two trials ran as Ray tasks at the same time, but never timed on the device at once
    holds = sorted(h for t in data["trials"] for h in t["record"]["device_holds"])
    assert len(holds) == 2 and all(a[1] <= b[0] for a, b in zip(holds, holds[1:]))
    assert time.monotonic() - t0 < 600


def test_device_lock_serialises_runs(tmp_path):
    import threading

    from edgevit.tune.locks import LockedTransport, LockSpec

    class Slow:
        name = "fake"

        def run(self, *a, **k):
            time.sleep(0.3)

    spec = LockSpec("file", "ssh://user@board", str(tmp_path / "locks"))
    transports = [LockedTransport(Slow(), spec) for _ in range(3)]
    threads = [threading.Thread(target=t.run) for t in transports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holds = sorted(h for t in transports for h in t.holds)
    assert len(holds) == 3 and all(a[1] <= b[0] for a, b in zip(holds, holds[1:]))
    assert sum(t.waited_s for t in transports) >= 0.5  # two of them queued


def test_a_size_budget_never_publishes_the_float_form():
    from edgevit.tune.run import Device, trial_profile

    profile = {"runs": 50, "threads": 2, "float_form": "publish_faster"}
    device = Device("board", "ssh://board", threads=4)
    assert trial_profile(profile, device, parse_budget("size_mb=10"))["float_form"] == "skip"
    kept = trial_profile(profile, device, parse_budget("latency_ms=0.5x"))
    assert kept["float_form"] == "publish_faster" and kept["target"] == "ssh://board" and kept["threads"] == 4


def test_the_baseline_of_a_stack_with_a_recipe_level_finetune_is_a_valid_recipe(tmp_path):
    from edgevit.recipe import load_recipe
    from edgevit.tune.run import baseline_recipe
    from edgevit.tune.workers import recipe_yaml
    from edgevit.yamlfile import load_yaml

    raw = load_yaml(REPO / "recipes" / "stack_deit.yaml")
    raw.pop("search")
    base = baseline_recipe(raw)
    assert base["passes"] == [] and "finetune" not in base and raw["finetune"]  # the study's own recipe keeps it
    path = tmp_path / "base.yaml"
    path.write_text(recipe_yaml(base, "baseline"))
    assert load_recipe(str(path)).recipe.passes == []  # compress would refuse a finetune block without passes


def test_size_bound_is_taken_on_the_model_whose_size_is_measured():
    from edgevit.tune.trial import SIZE_ESTIMATE_MARGIN, sized_params

    assert sized_params(600, 1000, None) == 600  # the trial's own model
    total = sum(p.numel() for p in __import__("edgevit.models", fromlist=["x"]).load_model("test_vit").model.parameters())
    # a latency model (here the tiny test ViT) sizes the artifact: its parameters at the share the passes kept
    assert sized_params(600, 1000, "test_vit") == int(total * 0.6 * SIZE_ESTIMATE_MARGIN)


@pytest.mark.parametrize("top1, expected", [(0.834, True), (0.832, False)])
def test_a_drop_of_exactly_max_drop_meets_it(top1, expected):
    # 500 images: 0.844 -> 0.834 is 5 images, exactly 1 point (1.0000000000000009 in floating point)
    record = {"top1": top1, "size_mb": 2.83}
    assert meets(record, {"size_mb": 2.839}, 0.844, 1.0) is expected


@pytest.mark.parametrize("record, expected", [
    ({"top1": 0.84, "latency_ms": 47.2, "latency_ms_vs_fp32": 0.49}, True),   # p50 over the drifted limit, ratio within
    ({"top1": 0.84, "latency_ms": 44.0, "latency_ms_vs_fp32": 0.52}, False),  # p50 under it, but slower than 0.5x side by side
    ({"top1": 0.84, "latency_ms": 44.0, "latency_ms_vs_fp32": None}, True),   # no baseline timing: the p50 against the limit
])
def test_a_relative_latency_limit_is_judged_side_by_side(record, expected):
    """latency_ms=0.5x: the trial's ratio to the fp32 export measured interleaved in its own
    run decides, not its p50 against a limit drawn from the study's one fp32 measurement."""
    budget = parse_budget("latency_ms=0.5x")
    limits = budget.resolve({"latency_ms": 93.2})  # 46.6 ms
    assert budget.ratios == {"latency_ms": 0.5} and parse_budget("latency_ms=40").ratios == {}
    assert meets(record, limits, 0.844, 1.0, budget.ratios) is expected
    assert meets(record, limits, 0.844, 1.0) is (record["latency_ms"] <= 46.6)  # without ratios: the p50, as before


def test_the_latency_estimate_of_a_relative_limit_uses_the_side_by_side_ratio():
    """The pre-check's latency-per-FLOP factor follows the judgement: with a relative limit,
    the trial's interleaved ratio to fp32, not its p50 over the study's one fp32 p50."""
    from edgevit.tune.trial import latency_factor

    baseline = {"latency_ms": 100.0, "flops": 10.0}
    record = {"latency_ms": 40.0, "latency_ms_vs_fp32": 0.5, "flops": 5.0}
    assert latency_factor(record, baseline) == pytest.approx(0.8)  # 40 / (100 x 0.5)
    assert latency_factor(record, baseline, side_by_side=True) == pytest.approx(1.0)  # 0.5 / 0.5
    assert latency_factor({**record, "latency_ms_vs_fp32": None}, baseline, side_by_side=True) == pytest.approx(0.8)


def test_a_trial_records_how_much_its_fine_tunes_trained():
    """A wall-capped fine-tune sees fewer images on a loaded machine: the record says how many."""
    from edgevit.tune.output import _fine_tune_cell
    from edgevit.tune.trial import fine_tune_summary

    assert fine_tune_summary(None) is None and _fine_tune_cell(None) == "none"
    summary = fine_tune_summary([{"pass": "prune", "steps": 10, "batch_size": 32, "epochs": 0.5, "stopped_by": "max_minutes",
                                  "wall_s": 60.0},
                                 {"pass": "finetune", "steps": 4, "batch_size": 16, "epochs": 1.0, "stopped_by": "epochs",
                                  "wall_s": 2.5}])
    assert summary == {"images_seen": 384, "epochs": [0.5, 1.0], "stopped_by": ["epochs", "max_minutes"], "wall_s": 62.5}
    assert _fine_tune_cell(summary) == "384 (0.5+1 epochs, stopped by epochs/max_minutes)"


def test_a_bench_run_of_one_case_keeps_the_other_cases_rows_with_their_date():
    """`EDGEVIT_BENCH_TUNE_CASES="DeiT latency"` must not erase the Swin size rows published
    before; the carried rows say when and how they were measured, and a second carry keeps that."""
    from edgevit.bench.tune import _carry_earlier

    size_row = ["Swin size", "tune (TPE)", 3, 1, "0.8340", "-1.00", "4.34", "2.83", "10.03x", "1294", "8.3"]
    previous = {"finished_utc": "2026-12-01 06:57 UTC",  # as the first runs wrote it: no per-case record
                "tables": [{"title": "Best stack meeting the budget (top-1 within 1 pt of fp32)",
                            "rows": [size_row, ["DeiT latency", "tune (TPE)"] + ["-"] * 9],
                            "note": "3 trials per study, 500 validation images drawn from the training split; latency"}],
                "figures": ["benchmarks/tune-swin-size.png", "benchmarks/tune-deit-latency.png"],
                "results": {"swin-size/tune (TPE)": {"chosen": {}}, "deit-latency/tune (TPE)": {}},
                "notes": ["Swin size tune (TPE): chosen recipe smallest (trial 2) on the rest of the test set ...",
                          "DeiT latency held-out tune (TPE): chosen recipe fastest ..."]}
    rows, workers, figures, results, notes, measured = [], [], [], {}, [], {}
    _carry_earlier(previous, ["Swin size", "Swin latency"], rows, workers, figures, results, notes, measured)
    assert notes[0].startswith("Swin size tune (TPE): chosen recipe smallest")  # its findings travel with its rows
    notes = notes[1:]
    _carry_earlier(previous, ["DeiT latency"], [], [], [], {}, carried_notes := [], {})
    assert not any(n.startswith("DeiT latency held-out") for n in carried_notes)  # another case's notes stay behind
    assert rows == [size_row] and workers == []
    assert figures == ["benchmarks/tune-swin-size.png"] and list(results) == ["swin-size/tune (TPE)"]
    assert measured == {"Swin size": {"utc": "2026-12-01 06:57 UTC",
                                      "settings": "3 trials per study, 500 validation images drawn from the training split"}}
    assert "Swin size (2026-12-01 06:57 UTC)" in notes[0] and "Swin latency" not in notes[0]

    later = {**previous, "finished_utc": "2026-12-02 10:00 UTC", "case_measured": measured,
             "tables": [{**previous["tables"][0], "note": "Swin size: ...; DeiT latency: ..."}]}
    again: dict[str, dict[str, str]] = {}
    _carry_earlier(later, ["Swin size"], [], [], [], {}, [], again)
    assert again == measured


def test_val_data_scores_trials_and_leaves_every_training_image_for_training(tmp_path):
    """--val-data: the validation images come from that folder (seeded, capped by its size)
    and the whole --train-data stays for fine-tuning; class folders must match."""
    from edgevit.errors import DataError
    from edgevit.tune.split import make_split

    train = write_images(tmp_path / "train", per_class=6, size=8)
    held_out = write_images(tmp_path / "held_out", per_class=3, size=8)
    count = lambda d: sum(1 for p in d.rglob("*") if p.is_symlink())  # noqa: E731
    val, rest, manifest = make_split(train, tmp_path / "a", 4, seed=0, val_data=held_out)
    assert count(val) == 4 and count(rest) == 12
    assert all(str(p.resolve()).startswith(str(held_out.resolve())) for p in val.rglob("*") if p.is_symlink())
    assert manifest["val_data"] == str(held_out.resolve()) and manifest["train_images"] == 12
    val, _, manifest = make_split(train, tmp_path / "b", 100, seed=0, val_data=held_out)
    assert count(val) == 6 and manifest["val_images"] == 6
    val, rest, _ = make_split(train, tmp_path / "c", 4, seed=0)  # default: held out of the training images
    assert count(val) == 4 and count(rest) == 8
    other = write_images(tmp_path / "other", per_class=2, size=8, classes=["x", "y", "z"])
    with pytest.raises(DataError, match="--val-data .* differ from --train-data"):
        make_split(train, tmp_path / "d", 4, seed=0, val_data=other)


@pytest.mark.parametrize("same_as", ["--data", "--train-data"])
def test_val_data_that_is_the_test_or_training_set_is_refused_before_any_trial(cli, write_recipe, train, tmp_path,
                                                                               same_as):
    out = tmp_path / "study"
    """Also when --val-data is another folder of links to some of the same images."""
    other = train if same_as == "--train-data" else write_images(tmp_path / "test", per_class=3, size=24, seed=1)
    links = tmp_path / "links"
    for cls in ("cat", "dog"):
        (links / cls).mkdir(parents=True)
        (links / cls / "a.png").symlink_to(next((other / cls).iterdir()))
    extra = ["--val-data", str(links)] + (["--data", str(other)] if same_as == "--data" else [])
    result = cli(*tune_args(tiny(write_recipe), train, out), *extra)
    assert result.exit_code == 2 and f"are also in {same_as}" in result.output and "fix:" in result.output, result.output
    assert not (out / "trials").exists() and not (out / "baseline").exists()
