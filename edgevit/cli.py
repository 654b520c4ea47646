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
    from edgevit.progress import console

    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    if hint:
        console.print(f"  fix: {hint}", soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn):
    """EdgevitError -> one line + fix on stderr and its exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgevitError as exc:
            _fail(exc.message, exc.hint, exc.exit_code)
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
        calib_data=calib_data, force=force, keep_failed=keep_failed, allow_synthetic_calibration=allow_synthetic_calibration,
    ))
    print((published / "report.md").read_text())
    print(f"published {published} (report.json, report.md, manifest.json)")


@app.command()
@user_errors
def validate(recipe: str = typer.Argument(..., help="recipe file or shipped recipe name")) -> None:
    """Check a recipe against the schema without running it."""
    from edgevit.exporters import load_profile
    from edgevit.recipe import load_recipe

    loaded = load_recipe(recipe)
    for name in loaded.recipe.exports:
        load_profile(name)
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
    seed: int = typer.Option(0),
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
    target: str = typer.Option("local", help="local, ssh://user@host[:port][?identity=&python=], adb://SERIAL[?python=]"),
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
    result = transport_for(target).run(artifact, runs=runs, warmup=warmup, threads=threads, batch=batch)
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
