"""Image folders (``class/xxx.jpg``), preprocessing with the model's own config, batching."""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from edgevit.errors import DataError
from edgevit.images import decode_rgb8

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]  # (image path, index into classes)

    def subset(self, n: int | None, seed: int) -> tuple[tuple[Path, int], ...]:
        """A seeded random subset; folders are often stored class by class, so never a prefix."""
        if n is None or n >= len(self.samples):
            return self.samples
        picked = sorted(random.Random(seed).sample(range(len(self.samples)), n))
        return tuple(self.samples[i] for i in picked)


def scan_image_folder(root: str | Path, flag: str = "--data") -> ImageFolder:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{flag} {root}: folder not found", "give a folder of class sub-folders with images")
    if not root.is_dir():
        raise DataError(f"{flag} {root}: not a folder", "give a folder of class sub-folders (class/xxx.jpg)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = [
        (p, label)
        for label, name in enumerate(classes)
        for p in sorted((root / name).rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not samples:
        raise DataError(
            f"{flag} {root}: no images found in class sub-folders",
            f"expected {root}/<class>/<image> with one of {', '.join(sorted(IMAGE_SUFFIXES))}",
        )
    return ImageFolder(root, tuple(classes), tuple(samples))


def require_same_classes(val: ImageFolder, train: ImageFolder) -> None:
    """--val-data validates the model trained on --train-data: the same class folders."""
    if val.classes != train.classes:
        raise DataError(f"--val-data {val.root}: classes {val.classes} differ from --train-data's {train.classes}",
                        "give a validation folder with the same class folders as the training images")


def refuse_shared_images(scanned: dict[str, ImageFolder], subject: str, why: dict[str, str], fix: str) -> None:
    """The folder given as ``subject`` (a flag) shares no image with the other flags named in
    ``why`` (flag -> what sharing would spoil). ``scanned``: each given folder as read by
    scan_image_folder, by flag; compared by resolved file, so a folder of links to the same
    images is caught too."""
    def files(flag: str) -> set[Path]:
        return {Path(p).resolve() for p, _ in scanned[flag].samples}

    mine = files(subject)
    for flag in [f for f in why if f in scanned]:
        shared = mine & files(flag)
        if shared:
            raise DataError(f"{subject} {scanned[subject].root}: {len(shared)} of its images are also in {flag} "
                            f"{scanned[flag].root} (e.g. {min(shared)}): {why[flag]}", fix)


def label_map(folder_classes: Sequence[str], model_labels: Sequence[str] | None) -> tuple[list[int], str]:
    """Map folder class indices to model output indices: by name when the model names its
    labels and every folder class is among them, else by sorted folder order. Some but not
    all classes among the model's labels is refused: that is a typo, and scoring it by
    folder order would be silently wrong."""
    if model_labels and set(folder_classes) <= set(model_labels):
        return [list(model_labels).index(c) for c in folder_classes], "by class name"
    if model_labels:
        unknown = [c for c in folder_classes if c not in set(model_labels)]
        if len(unknown) < len(folder_classes):
            raise DataError(f"class folder(s) {', '.join(unknown[:5])} are not among the model's label names "
                            f"while {len(folder_classes) - len(unknown)} other(s) are",
                            "rename the folders to the model's label names (config.json label_names)")
    return list(range(len(folder_classes))), "by sorted folder order"


def check_label_count(folder: ImageFolder, flag: str, num_outputs: int | None, model_labels: Sequence[str] | None) -> None:
    """More class folders than model outputs cannot be scored: the extra classes would count
    as wrong whatever the model does. Refused before any work."""
    mapping, how = label_map(folder.classes, model_labels)
    if num_outputs and mapping and max(mapping) >= num_outputs:
        raise DataError(f"{flag} {folder.root}: {len(folder.classes)} class folders but the model has {num_outputs} outputs "
                        f"(classes mapped {how})",
                        "give a folder with at most that many classes, or a model whose num_classes matches "
                        "(model_args: {num_classes: N} with a fine-tuned checkpoint)")


Channels = Annotated[int, Field(ge=1, le=4)]
Side = Annotated[int, Field(ge=1, le=16384)]
Stat = tuple[Annotated[float, Field(ge=-1e3, le=1e3)], ...]


class Preprocessing(BaseModel):
    """The preprocessing keys of a timm pretrained_cfg (config.json), checked before timm
    builds transforms from them; other keys pass through."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    input_size: tuple[Channels, Side, Side] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"] | None = None
    mean: Stat | None = Field(None, min_length=1, max_length=4)
    std: Annotated[tuple[Annotated[float, Field(gt=0, le=1e3)], ...], Field(min_length=1, max_length=4)] | None = None
    crop_pct: float | None = Field(None, gt=0, le=1)
    crop_mode: Literal["center", "squash", "border"] | None = None


class BundlePreprocessing(Preprocessing):
    """bundle.json's ``preprocessing``: exactly the data config edgevit wrote, all given,
    since it becomes timm's create_transform arguments as it stands."""

    model_config = ConfigDict(extra="forbid")

    input_size: tuple[Channels, Side, Side]
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"]
    mean: Stat = Field(min_length=1, max_length=4)
    std: tuple[Annotated[float, Field(gt=0, le=1e3)], ...] = Field(min_length=1, max_length=4)
    crop_pct: float = Field(gt=0, le=1)
    crop_mode: Literal["center", "squash", "border"] = "center"


def jsonable_config(data_config: dict[str, Any]) -> dict[str, Any]:
    """timm's data config with tuples as lists, for JSON (report, bundle.json)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}


def eval_transform(data_config: dict[str, Any]):
    from timm.data import create_transform

    return create_transform(**data_config, is_training=False)


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, samples: Sequence[tuple[Path, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return self.transform(decode_rgb8(path)), label


def image_batches(
    samples: Sequence[tuple[Path, int]], data_config: dict[str, Any], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(
        _ImageDataset(samples, eval_transform(data_config)), batch_size=batch_size, shuffle=False, num_workers=0
    )
    yield from loader


def load_images(samples: Sequence[tuple[Path, int]], data_config: dict[str, Any]) -> torch.Tensor:
    """All images of a small sample as one preprocessed batch (calibration, checks)."""
    return torch.cat([x for x, _ in image_batches(samples, data_config, batch_size=64)])


def synthetic_images(n: int, input_size: Sequence[int], seed: int) -> torch.Tensor:
    """Seeded standard-normal tensors in the model's normalised input space."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *input_size), generator=gen)
