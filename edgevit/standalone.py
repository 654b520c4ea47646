"""`edgevit eval`: accuracy of one model or artifact outside a compress run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgevit.accuracy import artifact_predictor, measure_top1, torch_predictor
from edgevit.bundle import validated_bundle
from edgevit.bundle_files import BUNDLE_JSON, read_bundle_json
from edgevit.data import BundlePreprocessing, check_label_count, scan_image_folder
from edgevit.errors import EdgevitError
from edgevit.models import load_model
from edgevit.schema import first_error

BUNDLE_HINT = "give an artifact bundle folder from `edgevit compress` (its bundle.json unedited), .onnx or .xml"

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
        bundle = read_host_bundle(target)
        try:
            session = runner.open_artifact(target, threads)
            if bundle is None:
                bundle = runner.read_bundle(target)[0]
        except runner.RunnerFailure as exc:
            raise EdgevitError(str(exc), BUNDLE_HINT) from None
        except Exception as exc:  # noqa: BLE001 - runtimes raise their own types for a corrupt graph
            raise EdgevitError(f"{target}: the runtime cannot load this artifact ({type(exc).__name__}: {str(exc)[:200]})",
                               "the file is corrupt, truncated or for another runtime version: re-export it") from None
        data_config, labels = _artifact_preprocessing(bundle, session, input_size)
        predictors = {Path(target).name: artifact_predictor(session, "logits")}
        try:
            return measure_top1(predictors, folder, n, seed, data_config, batch_size, labels)
        except EdgevitError:
            raise
        except Exception as exc:  # noqa: BLE001 - a graph that loads can still fail on real inputs
            raise EdgevitError(f"{target}: the artifact failed on the images of {data} ({type(exc).__name__}: {str(exc)[:200]})",
                               "check --input-size matches the artifact, or re-export it") from None
    loaded = load_model(target, checkpoint)
    data_config, labels = loaded.data_config(), loaded.label_names
    check_label_count(folder, "--data", getattr(loaded.model, "num_classes", None), labels)
    predictors = {loaded.source: torch_predictor(loaded.model)}
    return measure_top1(predictors, folder, n, seed, data_config, batch_size, labels)


def read_host_bundle(target: str) -> dict[str, Any] | None:
    """bundle.json checked field by field (None for a bare .onnx / .xml): the bundle
    contract, plus the preprocessing that becomes timm's transform arguments here."""
    path = Path(target)
    if not path.is_dir() and path.name != BUNDLE_JSON:
        return None
    folder = path if path.is_dir() else path.parent
    raw = read_bundle_json(folder)
    spec = validated_bundle(raw, str(folder / BUNDLE_JSON))
    if spec.preprocessing:
        try:
            BundlePreprocessing.model_validate(spec.preprocessing)
        except ValidationError as exc:
            raise EdgevitError(f"{folder / BUNDLE_JSON}: {first_error(exc, BundlePreprocessing, 'preprocessing')}",
                               BUNDLE_HINT) from None
    return raw


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
            size = ()
        if len(size) != 3 or not all(0 < v <= 16384 for v in size):
            raise EdgevitError(f"--input-size {input_size}: expected three positive sizes C,H,W",
                               "e.g. --input-size 3,224,224") from None
    elif static:
        size = tuple(shape[1:])
    else:
        raise EdgevitError(f"{json.dumps(shape)}: the artifact's input size is not fixed", "pass --input-size 3,H,W")
    return resolve_data_config({"input_size": size}), None
