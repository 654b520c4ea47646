"""Image folders (``class/xxx.jpg``), preprocessing with the model's own config, batching."""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgevit.errors import DataError

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


def label_map(folder_classes: Sequence[str], model_labels: Sequence[str] | None) -> tuple[list[int], str]:
    """Map folder class indices to model output indices: by name when the model names its
    labels and every folder class is among them, else by sorted folder order."""
    if model_labels and set(folder_classes) <= set(model_labels):
        return [list(model_labels).index(c) for c in folder_classes], "by class name"
    return list(range(len(folder_classes))), "by sorted folder order"


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
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB")), label
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: unreadable image ({exc})", "remove or replace the file") from None


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
