"""python -m edgevit.bench [--sections a,b] [--shared ../shared]"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

from edgevit.bench import report
from edgevit.bench.sections import SECTIONS, BenchContext
from edgevit.bench.timing import load_average
from edgevit.versions import library_versions

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "benchmarks" / "bench.json"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from: {', '.join(SECTIONS)}")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="folder with data/cifar10 and models/")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work")
    p.add_argument("--recipes", help="pareto section: comma-separated recipe names or files (default: every shipped recipe)")
    p.add_argument("--models", help="pareto section: comma-separated REFERENCE_FOLDER=TIMM_224_NAME pairs "
                                    "(default: vit_tiny_c10=deit_tiny_patch16_224,swin_tiny_c10=swin_tiny_patch4_window7_224)")
    args = p.parse_args(argv)
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    data = report.load(args.json)
    for name in names:
        title, description, cap_s, fn = SECTIONS[name]
        print(f"== bench section {name} (cap {cap_s} s)", file=sys.stderr)
        ctx = BenchContext(shared=args.shared, work=args.work / name, cap_s=cap_s,
                           recipes=args.recipes.split(",") if args.recipes else None,
                           models=args.models.split(",") if args.models else None,
                           previous=data["sections"].get(name))
        load_before, t0 = load_average(), time.monotonic()
        result = fn(ctx)
        data["sections"][name] = {
            "title": title, "description": description, "cap_s": cap_s, "elapsed_s": time.monotonic() - t0,
            "capped": ctx.capped, "load_before": load_before, "load_after": load_average(), "load_max": max(ctx.loads + [load_before]),
            "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"python -m edgevit.bench --sections {name}", "machine": machine(), "versions": library_versions(),
            **result,
        }
        report.save(args.json, data)
        args.markdown.write_text(report.render(data))
        if args.json == DEFAULT_JSON:  # a scratch run (--json elsewhere) never rewrites the README
            report.update_readme_headline(REPO / "README.md", data)
    print(f"wrote {args.json} and {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
