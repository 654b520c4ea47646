"""The validation split: a seeded sample of the images trials are scored on, and the
training images, which fine-tuning and calibration draw from. By default the sample is
taken out of --train-data; with --val-data it is drawn from that folder instead and every
training image stays for training. Both are folders of symlinks in --out (``split/val``,
``split/train``) with every class folder present in both, so `edgevit compress` reads them
as it reads any image folder and labels map the same way. The test set (--data) is never
used by a trial.

Why --val-data: images the model was trained on score compression unfairly. The reference
vit_tiny_c10 has top-1 0.786 on 500 of its own training images and 0.7396 on the test set,
and a compressed model loses much of that memorised margin: shipped tome_deit (with its
short fine-tune) drops 2.0 pt on those training images where it drops 1.04 pt on the test
set (README 'edgevit tune'), so a 1 pt budget judged there refuses stacks that keep it on
new images.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from edgevit.data import ImageFolder, require_same_classes, scan_image_folder
from edgevit.errors import DataError


def make_split(train_data: Path | ImageFolder, out: Path, n_val: int, seed: int,
               val_data: Path | ImageFolder | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """(val folder, train folder, manifest). The folders may be given already scanned (tune
    reads each once at start, to check them)."""
    folder = _scanned(train_data, "--train-data")
    source = _scanned(val_data, "--val-data") if val_data is not None else folder
    if val_data is not None:
        require_same_classes(source, folder)
        n_val = min(n_val, len(source.samples))
    elif n_val >= len(folder.samples):
        raise DataError(f"--train-data {folder.root}: {len(folder.samples)} images, not enough for a validation split "
                        f"of {n_val} plus training images", "lower --val-images or give more training images")
    picked = set(random.Random(seed).sample(range(len(source.samples)), n_val))
    manifest = {"train_data": str(Path(folder.root).resolve()), "seed": seed, "val_images": n_val,
                "train_images": len(folder.samples) - (0 if val_data is not None else n_val),
                "val_sha256": hashlib.sha256("\n".join(str(source.samples[i][0]) for i in sorted(picked)).encode()).hexdigest(),
                **({"val_data": str(Path(source.root).resolve())} if val_data is not None else {})}  # older splits still match
    root = out / "split"
    record = root / "split.json"
    if record.is_file() and json.loads(record.read_text()) == manifest:
        return root / "val", root / "train", manifest  # made earlier for this study (resume, another worker)
    staging = out / f".split-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for part in ("val", "train"):
        for name in folder.classes:
            (staging / part / name).mkdir(parents=True)
    def link(part: str, scanned, i: int) -> None:
        path, label = scanned.samples[i]
        cls = scanned.classes[label]
        (staging / part / cls / "__".join(path.relative_to(scanned.root / cls).parts)).symlink_to(path.resolve())

    for i in range(len(folder.samples)):
        if val_data is not None or i not in picked:
            link("train", folder, i)
    for i in sorted(picked):
        link("val", source, i)
    (staging / "split.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if record.is_file() and json.loads(record.read_text()) == manifest:  # another worker made it meanwhile
        shutil.rmtree(staging)
    else:
        if root.exists():  # a split of other images (the training folder changed): replaced
            shutil.rmtree(root)
        os.replace(staging, root)
    return root / "val", root / "train", manifest


def _scanned(folder: Path | ImageFolder, flag: str) -> ImageFolder:
    return folder if isinstance(folder, ImageFolder) else scan_image_folder(folder, flag)
