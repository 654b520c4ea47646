"""The validation split: a seeded sample of the training images that trials are scored on,
and the rest, which fine-tuning and calibration draw from. Both are folders of symlinks in
--out (``split/val``, ``split/train``) with every class folder present in both, so
`edgevit compress` reads them as it reads any image folder and labels map the same way.
The test set (--data) is never used by a trial.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from edgevit.data import scan_image_folder
from edgevit.errors import DataError


def make_split(train_data: Path, out: Path, n_val: int, seed: int) -> tuple[Path, Path, dict[str, Any]]:
    folder = scan_image_folder(train_data, "--train-data")
    if n_val >= len(folder.samples):
        raise DataError(f"--train-data {train_data}: {len(folder.samples)} images, not enough for a validation split "
                        f"of {n_val} plus training images", "lower --val-images or give more training images")
    picked = set(random.Random(seed).sample(range(len(folder.samples)), n_val))
    manifest = {"train_data": str(Path(train_data).resolve()), "seed": seed, "val_images": n_val,
                "train_images": len(folder.samples) - n_val,
                "val_sha256": hashlib.sha256("\n".join(str(folder.samples[i][0]) for i in sorted(picked)).encode()).hexdigest()}
    root = out / "split"
    record = root / "split.json"
    if record.is_file() and json.loads(record.read_text()) == manifest:
        return root / "val", root / "train", manifest  # made earlier for this study (resume, another worker)
    staging = out / f".split-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for part in ("val", "train"):
        for name in folder.classes:
            (staging / part / name).mkdir(parents=True)
    for i, (path, label) in enumerate(folder.samples):
        cls = folder.classes[label]
        rel = path.relative_to(folder.root / cls)
        link = staging / ("val" if i in picked else "train") / cls / "__".join(rel.parts)
        link.symlink_to(path.resolve())
    (staging / "split.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if record.is_file() and json.loads(record.read_text()) == manifest:  # another worker made it meanwhile
        shutil.rmtree(staging)
    else:
        if root.exists():  # a split of other images (the training folder changed): replaced
            shutil.rmtree(root)
        os.replace(staging, root)
    return root / "val", root / "train", manifest
