"""Section `quantization-peers`: NNCF's own mixed-precision weight compression (its
sensitivity metric chooses which layers stay int8) at the budgets of the LRP rows of the
`quantization` section, on the same evaluation subset, run in OpenVINO."""
from __future__ import annotations

import json
from typing import Any

import torch

from edgevit.accuracy import artifact_predictor, measure_top1
from edgevit.bench.context import BenchContext, section
from edgevit.bench.peers import data_config, nncf_weight_compression
from edgevit.bench.quantization import EVAL_N, VARIANTS
from edgevit.bench.runs import compress_run
from edgevit.calibration import resolve_calibration
from edgevit.data import scan_image_folder
from edgevit.profiling import runner_module
from edgevit.recipe import CalibrationSpec

# share of weights at int4 (the rest int8) giving the same nominal average bits as the LRP rows
BUDGETS = {4.5: 0.875, 6.0: 0.5}


@section("quantization-peers", "Peer: NNCF mixed int4/int8 weight compression at the LRP budgets",
         f"nncf.compress_weights(INT4_SYM, group 32 with ADJUST fallback to 16, ratio = share of int4 weights, 64 "
         f"calibration images for its data-aware sensitivity metric) on the fp32 OpenVINO IR of the `quantization` "
         f"section; top-1 in OpenVINO on the same seeded {EVAL_N}-image CIFAR-10 test subset. Weight-only: activations "
         "stay fp32 (the LRP rows also quantize activations of int8 layers). NNCF keeps its own choice for the "
         "classifier (edgevit keeps it fp32).",
         cap_s=1200)
def nncf_section(ctx: BenchContext) -> dict[str, Any]:
    ctx.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    test, train = ctx.shared / "data/cifar10/test", ctx.shared / "data/cifar10/train"
    rows, results, notes = [], {}, []
    for name in ("swin_tiny_c10", "vit_tiny_c10"):
        folder = ctx.shared / "models" / name
        if not folder.is_dir() or ctx.over_cap():
            notes.append(f"{name}: skipped")
            continue
        fp32_run, _ = compress_run(ctx, "fp32", str(folder), VARIANTS["fp32"], test, train, EVAL_N)  # reused when present
        report = json.loads((fp32_run / "report.json").read_text())
        cfg = data_config(fp32_run)
        images = resolve_calibration(CalibrationSpec(n=64, seed=0), train, None, None).images(cfg).numpy()
        labels = json.loads((fp32_run / "model/config.json").read_text()).get("label_names")
        for bits, ratio in BUDGETS.items():
            out = ctx.work / f"{name}-nncf-{bits}"
            nncf_weight_compression(fp32_run, out, images, ratio)
            runner = runner_module()
            session = runner.open_artifact(str(out), 2)
            acc = measure_top1({"ov": artifact_predictor(session, "logits")}, scan_image_folder(test), EVAL_N,
                               report["recipe"]["seed"], cfg, 250, labels)
            executed = runner.executed_precision("openvino", session.executed({}).get("compute_ops"))
            size = sum(p.stat().st_size for p in (out / "model.xml", out / "model.bin"))
            rows.append([name, f"NNCF {bits} bits (int4 ratio {ratio})", f"{size / 1e6:.2f}", f"{acc['top1']['ov']:.4f}", executed])
            results[f"{name}-{bits}"] = {"top1": acc["top1"]["ov"], "size_bytes": size, "executed": executed}
    tables = [{"title": f"NNCF weight compression in OpenVINO ({EVAL_N} CIFAR-10 test images)",
               "header": ["model", "variant", "OpenVINO MB", "top-1 OpenVINO", "executed"], "rows": rows}]
    return {"tables": tables, "results": results, "notes": notes}
