"""Section `targets`: what profiling over ssh costs, against local profiling of the same
artifact (loopback sshd on this machine: the transport's overhead, not a network's)."""
from __future__ import annotations

import time
from typing import Any

from edgevit.bench.context import BenchContext, section
from edgevit.bench.loopback_sshd import available, loopback_sshd
from edgevit.pipeline import CompressOptions, compress
from edgevit.profiling import LocalTransport, transport_for

MODEL = "deit_tiny_patch16_224"
RECIPE = "name: bench_targets\nexports: [x86-onnxruntime]\nprofile: {runs: 3, warmup: 1}\n"
RUNS, WARMUP, REPEATS = 50, 5, 3


@section("targets", "Remote profiling: ssh transport overhead vs local",
         f"{MODEL} (random weights, fp32 ONNX Runtime bundle, 2 threads, batch 1): `edgevit profile` locally and over "
         "ssh to an OpenSSH server on 127.0.0.1, interleaved, 3 repeats each. The runner times on the device in both "
         "cases, so its p50 should agree; the difference in call wall time is the transport's cost (copying runner + "
         "bundle, connecting, fetching outputs, cleaning up).", cap_s=600)
def targets_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    if not available():
        return {"tables": [], "results": {}, "notes": ["sshd or root not available: section skipped"]}
    recipe = ctx.work / "recipe.yaml"
    recipe.write_text(RECIPE)
    run = compress(CompressOptions(recipe=str(recipe), out=ctx.work / MODEL, model=MODEL, force=True))
    bundle = run / "artifacts" / "x86-onnxruntime"
    rows, results = [], {"local": [], "ssh": []}
    with loopback_sshd() as url:
        transports = {"local": LocalTransport(), "ssh": transport_for(url)}
        for _ in range(REPEATS):
            for name, transport in transports.items():
                t0 = time.perf_counter()
                data = transport.run(bundle, runs=RUNS, warmup=WARMUP, threads=2, batch=1).data
                results[name].append({"call_s": time.perf_counter() - t0, "p50_ms": data["p50_ms"], "where_run": data["where_run"]})
    size_mb = sum(p.stat().st_size for p in bundle.iterdir()) / 1e6
    for name, calls in results.items():
        calls_s = sorted(c["call_s"] for c in calls)
        p50s = sorted(c["p50_ms"] for c in calls)
        rows.append([name, calls[0]["where_run"], f"{size_mb:.1f}", calls_s[len(calls_s) // 2], p50s[len(p50s) // 2],
                     f"{min(p50s):.2f} / {max(p50s):.2f}"])
    overhead = rows[1][3] - rows[0][3]
    tables = [{"title": f"Profiling {MODEL} ({RUNS} runs + {WARMUP} warm-up per call), median of {REPEATS} calls",
               "header": ["transport", "where run", "bundle MB", "call wall s", "runner p50 ms", "runner p50 min / max"],
               "rows": rows, "note": f"ssh adds {overhead:.2f} s per profiling call on loopback."}]
    return {"tables": tables, "results": results, "notes": []}
