"""`edgevit eval`: accuracy of one model or artifact outside a compress run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgevit.accuracy import artifact_predictor, measure_top1, torch_predictor
from edgevit.data import scan_image_folder
from edgevit.errors import EdgevitError
from edgevit.models import load_model

ARTIFACT_SUFFIXES = (".onnx", ".xml")


def is_artifact(target: str) -> bool:
    path = Path(target)
    return (path / "bundle.json").is_file() or path.name == "bundle.json" or path.suffix in ARTIFACT_SUFFIXES


def evaluate_target(target: str, data: Path, n: int | None, batch_size: int, threads: int, seed: int,
                    checkpoint: Path | None = None, input_size: str | None = None) -> dict[str, Any]:
    folder = scan_image_folder(data, "--data")
    if is_artifact(target):
        from edgevit.profiling import runner_module

        runner = runner_module()
        try:
            session = runner.open_artifact(target, threads)
            bundle, _ = runner.read_bundle(target)
        except runner.RunnerFailure as exc:
            raise EdgevitError(str(exc), "give an artifact bundle folder from `edgevit compress`, .onnx or .xml") from None
        data_config, labels = _artifact_preprocessing(bundle, session, input_size)
        predictors = {Path(target).name: artifact_predictor(session, "logits")}
    else:
        loaded = load_model(target, checkpoint)
        data_config, labels = loaded.data_config(), loaded.label_names
        predictors = {loaded.source: torch_predictor(loaded.model)}
    return measure_top1(predictors, folder, n, seed, data_config, batch_size, labels)


def _artifact_preprocessing(bundle: dict[str, Any], session: Any, input_size: str | None):
    """A bundle from edgevit carries its preprocessing; a bare file needs --input-size and
    gets timm's ImageNet defaults (said in the result)."""
    if bundle.get("preprocessing"):
        return dict(bundle["preprocessing"]), bundle.get("label_names")
    from timm.data import resolve_data_config

    shape = session.inputs[0][1]
    static = all(isinstance(d, int) and d > 0 for d in shape[1:])
    if input_size:
        try:
            size = tuple(int(v) for v in input_size.split(","))
        except ValueError:
            raise EdgevitError(f"--input-size {input_size}: expected C,H,W like 3,224,224") from None
    elif static:
        size = tuple(shape[1:])
    else:
        raise EdgevitError(f"{json.dumps(shape)}: the artifact's input size is not fixed", "pass --input-size 3,H,W")
    return resolve_data_config({"input_size": size}), None
