"""Calibration sets: which images later passes calibrate on, sampled with a seed.

Sources, in order of preference: ``--calib-data DIR``, the recipe's manifest (a YAML in
calibration/ or a path), a sample of ``--train-data``, a sample of ``--data`` (with a
warning: it overlaps the evaluation set), else seeded synthetic images. The realised set
is written into the run as ``calibration.yaml`` with every file's sha256, so a run can be
reproduced and audited.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import Field, ValidationError

from edgevit import resources
from edgevit.data import load_images, scan_image_folder, synthetic_images
from edgevit.errors import DataError, RecipeError
from edgevit.recipe import CalibrationSpec
from edgevit.schema import StrictModel, did_you_mean, first_error, seed_field
from edgevit.yamlfile import load_yaml


class CalibrationManifest(StrictModel):
    """calibration/*.yaml: where the images are and how many to draw."""

    name: str
    description: str = ""
    root: str = Field(description="image folder (class/xxx.jpg); relative paths are relative to the working directory")
    n: int = Field(64, ge=1, le=100_000)
    seed: int = seed_field()


@dataclass
class CalibrationSet:
    source: str  # calib-data | manifest | train-data | data | synthetic
    root: str | None
    samples: tuple[tuple[Path, int], ...]
    n: int
    seed: int
    overlaps_eval: bool
    manifest: str | None = None

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def images(self, data_config: dict[str, Any]) -> torch.Tensor:
        if self.synthetic:
            return synthetic_images(self.n, data_config["input_size"], self.seed)
        return load_images(self.samples, data_config)

    def require_real(self, allow_synthetic: bool, who: str) -> None:
        """Data rule: static quantization and LRP never calibrate on noise silently."""
        if self.synthetic and not allow_synthetic:
            raise DataError(
                f"{who} needs real calibration images and none were given",
                "pass --calib-data DIR (or --train-data DIR), or --allow-synthetic-calibration to accept noise",
            )

    def manifest_text(self) -> str:
        files = [{"path": str(p), "label": label, "sha256": _sha256(p)} for p, label in self.samples]
        doc = {"source": self.source, "root": self.root, "n": self.n, "seed": self.seed, "manifest": self.manifest, "files": files}
        return yaml.safe_dump(doc, sort_keys=False)

    def report(self, manifest_sha256: str | None) -> dict[str, Any]:
        return {
            "source": self.source, "root": self.root, "n": self.n, "seed": self.seed,
            "manifest": self.manifest, "manifest_sha256": manifest_sha256, "overlaps_eval": self.overlaps_eval,
        }


def load_manifest(name_or_path: str) -> tuple[CalibrationManifest, Path]:
    path = Path(name_or_path)
    if not path.is_file():
        shipped = resources.shipped("calibration") / f"{path.stem}.yaml"
        if not shipped.is_file():
            raise RecipeError(
                f"calibration.manifest: '{name_or_path}' is neither a file nor a shipped manifest"
                + did_you_mean(path.stem, resources.names("calibration")),
                f"shipped: {', '.join(resources.names('calibration')) or 'none'}",
            )
        path = shipped
    try:
        return CalibrationManifest.model_validate(load_yaml(path)), path
    except ValidationError as exc:
        raise RecipeError(f"{path}: {first_error(exc, CalibrationManifest)}",
                          "a calibration manifest has name, root (an image folder), n, seed; see calibration/*.yaml") from None


def resolve_calibration(
    spec: CalibrationSpec,
    calib_data: Path | None,
    train_data: Path | None,
    eval_data: Path | None,
    seed_offset: int = 0,
) -> CalibrationSet:
    n, seed = spec.n, spec.seed + seed_offset
    manifest_name = None
    if calib_data is not None:
        source, root, flag = "calib-data", calib_data, "--calib-data"
    elif spec.manifest is not None:
        manifest, path = load_manifest(spec.manifest)
        source, root, flag, n, seed = "manifest", Path(manifest.root), f"{path}: root", manifest.n, manifest.seed
        manifest_name = str(path)
    elif train_data is not None:
        source, root, flag = "train-data", train_data, "--train-data"
    elif eval_data is not None:
        source, root, flag = "data", eval_data, "--data"
    else:
        return CalibrationSet("synthetic", None, (), n, seed, overlaps_eval=False)
    folder = scan_image_folder(root, flag)
    samples = folder.subset(n, seed)
    overlaps = _overlaps(samples, eval_data)
    return CalibrationSet(source, str(root), samples, len(samples), seed, overlaps, manifest_name)


def _overlaps(samples: tuple[tuple[Path, int], ...], eval_data: Path | None) -> bool:
    if eval_data is None:
        return False
    eval_root = Path(eval_data).resolve()
    return any(eval_root in p.resolve().parents for p, _ in samples)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
