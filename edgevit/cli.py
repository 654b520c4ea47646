"""The `edgevit` command line: parse, call the library, render. Nothing else lives here."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from edgevit.errors import EdgevitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress timm vision transformers, export them for edge runtimes, and measure them.")


def _fail(message: str, hint: str | None, code: int) -> None:
    from edgevit.progress import console, say

    say("error:", "red", message, soft_wrap=True)  # user text: printed as text, never as markup
    if hint:
        console.print(f"  fix: {hint}", soft_wrap=True, markup=False)
    raise typer.Exit(code)


def user_errors(fn):
    """EdgevitError -> one line + fix on stderr and its exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgevitError as exc:
            _fail(exc.message, exc.hint, exc.exit_code)
        except OSError as exc:  # full disk, permissions, a file in the way: the environment, one line
            from edgevit.oserrors import os_error

            err = os_error(exc)
            _fail(err.message, err.hint, err.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", None, 130)

    return wrapper


def _default_out(recipe: str, model: str | None) -> Path:
    stem = Path(recipe).name.removesuffix(".yaml")
    if model:
        stem += "-" + Path(model.rstrip("/")).name
    candidate, i = Path("out") / stem, 2
    while candidate.exists():  # a default never clobbers an earlier run
        candidate, i = Path("out") / f"{stem}-{i}", i + 1
    return candidate


@app.command()
@user_errors
def compress(
    recipe: str = typer.Option(..., "--recipe", "-r", help="recipe file or shipped recipe name (see `edgevit recipes`)"),
    model: Optional[str] = typer.Option(None, help="timm model name or local timm model folder (overrides the recipe)"),
    checkpoint: Optional[Path] = typer.Option(None, help=".safetensors or .pth state dict for a timm model name"),
    data: Optional[Path] = typer.Option(None, help="evaluation image folder (class/xxx.jpg); no accuracy without it"),
    train_data: Optional[Path] = typer.Option(None, help="training image folder for passes that fine-tune"),
    calib_data: Optional[Path] = typer.Option(None, help="calibration image folder"),
    val_data: Optional[Path] = typer.Option(None, help="validation images the model was not trained on: the exits pass "
                                            "calibrates its thresholds and speed gate on them (default: held out of --train-data)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: out/<recipe>-<model>, never overwritten)"),
    force: bool = typer.Option(False, help="replace --out if it exists"),
    keep_failed: bool = typer.Option(False, help="publish a run whose numerical check failed as <out>.failed"),
    allow_synthetic_calibration: bool = typer.Option(False, help="let passes calibrate on noise when no images are given"),
) -> None:
    """Run a recipe: passes -> exports -> checks -> accuracy -> profile -> report."""
    from edgevit.pipeline import CompressOptions
    from edgevit.pipeline import compress as run_compress

    destination = out or _default_out(recipe, model)
    published = run_compress(CompressOptions(
        recipe=recipe, out=destination, model=model, checkpoint=checkpoint, data=data, train_data=train_data,
        calib_data=calib_data, val_data=val_data, force=force, keep_failed=keep_failed,
        allow_synthetic_calibration=allow_synthetic_calibration,
    ))
    print((published / "report.md").read_text())
    print(f"published {published} (report.json, report.md, manifest.json)")


@app.command()
@user_errors
def validate(recipe: str = typer.Argument(..., help="recipe file or shipped recipe name")) -> None:
    """Check a recipe against the schema, and its passes against its export profiles'
    capabilities, without running it (no torch is imported: it answers in well under a second)."""
    from edgevit.recipe import load_recipe, recipe_targets

    loaded = load_recipe(recipe)
    recipe_targets(loaded)
    from edgevit.profiling.target import parse_target

    parse_target(loaded.recipe.profile.target, f"{loaded.path}: profile.target")  # the same parser profiling uses
    r = loaded.recipe
    print(f"{loaded.path}: ok ({r.name}: {len(r.passes)} pass(es): {', '.join(p.kind for p in r.passes) or 'none'}; "
          f"exports: {', '.join(r.exports) or 'none'})")


@app.command()
@user_errors
def recipes() -> None:
    """List the shipped recipes."""
    from edgevit import resources
    from edgevit.recipe import load_recipe

    for path in sorted(resources.shipped("recipes").glob("*.yaml")):
        r = load_recipe(path).recipe
        print(f"{path.stem:24s} {r.model.name or '-':34s} {r.description}")


@app.command("eval")
@user_errors
def evaluate(
    target: str = typer.Argument(..., help="timm name, model folder, artifact bundle folder, .onnx or .xml"),
    data: Path = typer.Option(..., help="image folder (class/xxx.jpg)"),
    n: Optional[int] = typer.Option(None, min=1, help="seeded random subset of the images"),
    batch_size: int = typer.Option(64, min=1),
    threads: int = typer.Option(2, min=1),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="seeds the --n subset (numpy's range)"),
    checkpoint: Optional[Path] = typer.Option(None),
    input_size: Optional[str] = typer.Option(None, help="for artifacts whose model is not known: e.g. 3,224,224"),
) -> None:
    """Top-1 accuracy of a PyTorch model or an exported artifact on an image folder."""
    from edgevit.standalone import evaluate_target

    result = evaluate_target(target, data, n=n, batch_size=batch_size, threads=threads, seed=seed,
                             checkpoint=checkpoint, input_size=input_size)
    print(json.dumps(result, indent=2))


@app.command()
@user_errors
def profile(
    artifact: Path = typer.Argument(..., help="artifact bundle folder (with bundle.json), .onnx or .xml"),
    runs: int = typer.Option(100, min=1),
    warmup: int = typer.Option(10, min=0),
    threads: int = typer.Option(2, min=1),
    batch: int = typer.Option(1, min=1),
    target: str = typer.Option("local", help="local, ssh://user@host[:port][?python=&timeout=], adb://SERIAL[?python=&timeout=&benchmark_model=]; "
                               "programs and keys: EDGEVIT_ADB, EDGEVIT_SSH_IDENTITY, EDGEVIT_SSH_KNOWN_HOSTS (see README)"),
    targets: Optional[Path] = typer.Option(None, help="YAML list of devices (name, target, threads, batch): profile them all"),
) -> None:
    """Time an artifact with the device runner and print its JSON (a table too for --targets)."""
    from edgevit.profiling import transport_for

    if not artifact.exists():
        raise EdgevitError(f"{artifact}: not found", "give an artifact bundle folder, .onnx or .xml")
    if targets is not None:
        from edgevit.profiling.fleet import fleet_table, load_fleet, profile_fleet

        results = profile_fleet(artifact, load_fleet(targets), runs, warmup)
        print(fleet_table(results))
        print(json.dumps(results, indent=2))
        if all("error" in r for r in results):
            raise EdgevitError("no device could be profiled", "see the errors in the table")
        return
    result = transport_for(target, "--target").run(artifact, runs=runs, warmup=warmup, threads=threads, batch=batch)
    print(json.dumps(result.data, indent=2))


@app.command()
@user_errors
def embed(
    artifact: Path = typer.Argument(..., help="artifact file (.onnx, .tflite, .bin) or a one-file bundle folder"),
    out: Path = typer.Option(..., help="output folder"),
    format: str = typer.Option("c", "--format", help="c: const array + header; bin: raw blob + linker header"),
    symbol: str = typer.Option("g_model", help="C symbol name"),
    align: int = typer.Option(16, help="alignment of the array in bytes (power of two)"),
    force: bool = typer.Option(False, help="replace --out if it exists"),
) -> None:
    """Write an artifact as C source / a blob for a firmware build."""
    from edgevit.embed import embed as run_embed
    from edgevit.outdir import refuse_out_over_inputs

    refuse_out_over_inputs(out, {"artifact": artifact if artifact.exists() else None})
    published = run_embed(artifact, out, symbol=symbol, fmt=format, align=align, force=force)
    print(f"wrote {published}: " + ", ".join(sorted(p.name for p in published.iterdir())))


@app.command()
@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="a folder published by `edgevit compress`"),
    out: Path = typer.Option(None, help="output folder (default RUN_DIR/rendered)"),
    force: bool = typer.Option(False, help="replace --out if it exists"),
) -> None:
    """Render a run's report.json as Markdown + a self-contained HTML page with plots."""
    from edgevit.report_html import write_report

    published = write_report(run_dir, out, force)
    print(f"wrote {published / 'report.html'}, {published / 'report.md'} and plots in {published / 'plots'}")


@app.command()
@user_errors
def tune(
    recipe: str = typer.Option(..., "--recipe", "-r", help="recipe with a search: block (e.g. stack_deit)"),
    budget: str = typer.Option(..., help="latency_ms=X | size_mb=Y | latency_ms=0.5x (of fp32), comma-separated for both"),
    train_data: Path = typer.Option(..., help="training images: the validation split is drawn from them (seeded)"),
    out: Path = typer.Option(..., help="study folder: SQLite storage, trials, Pareto plot/table, chosen recipes"),
    model: Optional[str] = typer.Option(None, help="timm name or model folder (overrides the recipe)"),
    checkpoint: Optional[Path] = typer.Option(None),
    target: str = typer.Option("local", help="local, ssh://..., adb://..., or FLEET.yaml[:DEVICE]"),
    max_drop: float = typer.Option(1.0, help="top-1 points a trial may lose against fp32"),
    trials: int = typer.Option(20, help="finished trials in the study (all workers together)"),
    data: Optional[Path] = typer.Option(None, help="test images: only for the final report of the chosen recipes"),
    val_data: Optional[Path] = typer.Option(None, help="validation images the model was not trained on, to score trials "
                                            "(default: --val-images held out of --train-data)"),
    calib_data: Optional[Path] = typer.Option(None),
    resume: bool = typer.Option(False, help="continue the study in --out"),
    storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL shared by workers (default: sqlite in --out)"),
    workers: int = typer.Option(1, help="K > 1: trials on a local Ray instance, K at a time"),
    ray_address: Optional[str] = typer.Option(None, help="join a Ray cluster (HOST:PORT)"),
    sampler: str = typer.Option("tpe", help="tpe | nsga2 | random | grid"),
    export: Optional[str] = typer.Option(None, help="export profile measured (default: the recipe's first)"),
    val_images: int = typer.Option(500, help="images that score trials (held out of --train-data, or drawn from --val-data)"),
    recovery_pt: float = typer.Option(5.0, help="points fine-tuning may recover: prunes trials whose training-free drop exceeds max-drop + this"),
    stop_on_budget: bool = typer.Option(False, help="stop once a trial meets the budget"),
    keep_artifacts: bool = typer.Option(False, help="keep every trial's model and artifacts (large)"),
    verbose: bool = typer.Option(False, help="show each trial's compress steps"),
    latency_model: Optional[str] = typer.Option(None, help="time and size the stacks on this model instead (same family, "
                                                "e.g. the 224 timm model of a model trained at 32); accuracy stays on --model"),
    max_minutes: Optional[float] = typer.Option(None, help="start no trial after this many minutes (a running trial finishes; the final reports on --data still run)"),
) -> None:
    """Search the recipe's space for the fastest / smallest stack within the budget, measured on the target."""
    from edgevit.tune.run import TuneOptions
    from edgevit.tune.run import tune as run_tune

    summary = run_tune(TuneOptions(
        recipe=recipe, budget=budget, train_data=train_data, out=out, model=model, checkpoint=checkpoint, target=target,
        max_drop=max_drop, trials=trials, data=data, val_data=val_data, calib_data=calib_data, resume=resume, storage=storage, workers=workers,
        ray_address=ray_address, sampler=sampler, export=export, val_images=val_images, recovery_pt=recovery_pt,
        stop_on_budget=stop_on_budget, keep_artifacts=keep_artifacts, verbose=verbose, latency_model=latency_model,
        max_minutes=max_minutes))
    print((out / "pareto.md").read_text())
    chosen = ", ".join(f"{k}: trial {v} ({out / 'chosen' / (k + '.yaml')})" for k, v in summary["chosen"].items())
    print(f"chosen: {chosen or 'no trial met the budget'}; all trials in {out / 'trials.md'}, plot {out / 'pareto.png'}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """The benchmark (same as `make bench`): --sections a,b --recipes r1,r2 --models m1,m2 (see --help of
    `python -m edgevit.bench`)."""
    from edgevit.bench.__main__ import main as bench_main

    raise typer.Exit(bench_main(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
